"""The demo's own certificate authority: a root, one node certificate per node, an operator key.

Theory of operation
-------------------
The demo runs its agents the way a real cluster runs, not as a loopback playground: before any
process starts it does what an operator does with ``gossipmesh ca init``, ``ca issue-node`` (once
per node) and ``ca issue-operator``, through the same library calls those commands make
(``CaCredentials.generate``, ``NodeCredentials.issue``, ``OperatorCredentials.issue`` and the
``save_*`` writers of ``gossipmesh.identity``), into the demo's temp dir::

    ROOT/ca/root.key, root.crt          the root (a real operator keeps this directory offline)
    ROOT/nodes/nK/node.key, node.crt, roots.pem   given to agent nK as --tls-dir
    ROOT/operator.pem                   the operator key that signs every config write of the demo

The files go away with the temp dir. Generating them is a few P-256 keys and signatures
(milliseconds), so the demo stays one command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.client import ConfigSigner
from gossipmesh.demo.plan import CLUSTER, Plan

OPERATOR_NAME = "demo-operator"


@dataclass(frozen=True, slots=True)
class DemoPki:
    ca_dir: Path
    node_dirs: dict[str, Path]  # node name -> its --tls-dir
    operator_file: Path
    root_fingerprint: str  # hex SHA-256 (gossipmesh.identity.fingerprint)
    operator_fingerprint: str

    def signer(self) -> ConfigSigner:
        """The operator signer for the demo's config writes (as ``--operator-key FILE`` makes)."""
        from gossipmesh.config.signing import ProposalSigner
        from gossipmesh.identity import load_operator

        return ProposalSigner.for_operator(load_operator(self.operator_file))

    def describe(self) -> dict[str, object]:
        """What the summary says about it."""
        return {
            "cluster": CLUSTER,
            "root_fingerprint": self.root_fingerprint,
            "node_certificates": len(self.node_dirs),
            "operator": OPERATOR_NAME,
            "operator_fingerprint": self.operator_fingerprint,
        }


def make_pki(root: Path, plan: Plan, now_ms: int | None = None) -> DemoPki:
    """Create the CA, the node certificates and the operator key under ``root``."""
    from gossipmesh.identity import (
        CaCredentials,
        NodeCredentials,
        OperatorCredentials,
        fingerprint,
        save_ca,
        save_node,
        save_operator,
    )

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    ca_dir = root / "ca"
    ca = CaCredentials.generate(CLUSTER, now_ms=now_ms)
    save_ca(ca_dir, ca)
    node_dirs = {}
    for node in plan.nodes:
        node_dirs[node.name] = root / "nodes" / node.name
        save_node(node_dirs[node.name], NodeCredentials.issue(ca, node.name, now_ms=now_ms))
    operator_file = root / "operator.pem"
    operator = OperatorCredentials.issue(ca, OPERATOR_NAME, now_ms=now_ms)
    save_operator(operator_file, operator)
    return DemoPki(
        ca_dir,
        node_dirs,
        operator_file,
        fingerprint(ca.cert_der).hex(),
        fingerprint(operator.cert_der).hex(),
    )
