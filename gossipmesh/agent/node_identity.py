"""Who this agent is, and whom it trusts: node credentials and the trust store, or a playground.

Theory of operation
-------------------
Every agent has a node certificate (``spiffe://CLUSTER/node/NAME``, chained to an operator-held
root; see docs/SECURITY.md) and a ``TrustStore`` holding the roots it accepts. Every claim the
agent makes (membership, node records, config entries) is signed with the certificate's key, and
every claim it receives is checked against the sender's certificate. There is one code path, so
what the tests exercise is what production runs.

Two ways to get the credentials:

- **Production**: ``--tls-dir NODE_DIR`` (``node.key``, ``node.crt``, ``roots.pem``, written by
  ``gossipmesh ca issue-node``). The certificate must name this agent and this cluster.
- **Playground**: with no gossip key and no certificate, an agent whose every address is on
  loopback derives the cluster's *playground* root from the cluster name and issues itself a node
  certificate at start. Anyone can derive that root, so a playground has no security at all; it
  exists so that a mesh on one machine (tests, trying it out) needs no set-up, and it says so.

Anything else (a non-loopback address without both a gossip key and a certificate) is refused with
one line that says how to make what is missing: a mesh that anyone on the network could join and
rewrite is not a default we ship.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gossipmesh.agent.settings import AgentSettings
from gossipmesh.errors import UsageError
from gossipmesh.identity import (
    NodeCredentials,
    Rejected,
    TrustStore,
    load_node,
    playground_root,
    validate_trust_domain,
)
from gossipmesh.ids import Address

HOW_TO_SECURE = (
    "give the cluster a gossip key (gossipmesh keygen > KEYFILE; --encrypt-file KEYFILE) and this "
    "node a certificate (gossipmesh ca init --dir CA; gossipmesh ca issue-node NAME --dir CA "
    "--out NODE_DIR; --tls-dir NODE_DIR), or bind every address to loopback for a local playground"
)


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """This agent's node credentials and the trust store its checks use."""

    credentials: NodeCredentials
    trust: TrustStore
    playground: bool

    @property
    def name(self) -> str:
        return self.credentials.name

    @property
    def cluster(self) -> str:
        return self.credentials.cluster


def is_loopback(address: Address) -> bool:
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return False  # a host name: it could resolve anywhere


def exposed_addresses(settings: AgentSettings) -> list[Address]:
    """Every address this agent would listen on or advertise that is not loopback."""
    addresses = [settings.bind, settings.admin]
    if settings.advertise is not None:
        addresses.append(settings.advertise)
    sidecar = settings.sidecar
    if sidecar.enabled:
        addresses += [sidecar.outbound, sidecar.inbound_for(settings.bind.host)]
        addresses += [Address(t.address, t.port) for t in sidecar.listeners]
    return [a for a in addresses if not is_loopback(a)]


def build_identity(settings: AgentSettings, *, has_key: bool, now_ms: int) -> AgentIdentity:
    """The agent's identity, or a ``UsageError`` whose message is the one line to print.

    ``has_key``: a gossip key was given (flag, file, environment or keyring). ``now_ms`` is the
    wall clock (certificate validity is wall-clock time).
    """
    try:
        validate_trust_domain(settings.cluster)
    except UsageError as exc:
        raise UsageError(f"--cluster {settings.cluster!r}: {exc}") from exc
    exposed = exposed_addresses(settings)
    if (settings.tls_dir is None or not has_key) and exposed:
        missing = [what for what, absent in (("gossip key", not has_key),
                                             ("node certificate", settings.tls_dir is None))
                   if absent]  # fmt: skip
        raise UsageError(
            f"{exposed[0]} is not a loopback address and there is no {' and no '.join(missing)}: "
            + HOW_TO_SECURE
        )
    if settings.tls_dir is None:
        root = playground_root(settings.cluster)
        credentials = NodeCredentials.issue(root, settings.name, now_ms=now_ms)
        trust = TrustStore(settings.cluster, roots=[root.cert_der])
        return AgentIdentity(credentials, trust, playground=True)
    credentials = load_node(settings.tls_dir)
    if credentials.name != settings.name:
        raise UsageError(
            f"the node certificate in {settings.tls_dir} is for node {credentials.name!r}, "
            f"but this agent is named {settings.name!r} (--name)"
        )
    if credentials.cluster != settings.cluster:
        raise UsageError(
            f"the node certificate in {settings.tls_dir} is for cluster {credentials.cluster!r}, "
            f"but this agent is in cluster {settings.cluster!r} (--cluster)"
        )
    trust = TrustStore(settings.cluster, roots=credentials.roots)
    verdict = trust.verify_node(credentials.cert_der, now_ms, name=settings.name)
    if isinstance(verdict, Rejected):
        raise UsageError(f"the node certificate in {settings.tls_dir} is not valid: {verdict}")
    return AgentIdentity(credentials, trust, playground=False)


__all__ = ["AgentIdentity", "HOW_TO_SECURE", "build_identity", "exposed_addresses", "is_loopback"]
