"""The playground PKI: derived from the cluster name, the same in every process (and insecure)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from pki_helpers import NOW_MS

from gossipmesh.identity import (
    NodeCredentials,
    TrustStore,
    VerifiedIdentity,
    fingerprint,
    playground_operator,
    playground_root,
)
from gossipmesh.identity.playground import (
    PLAYGROUND_NOT_AFTER_MS,
    PLAYGROUND_NOT_BEFORE_MS,
    derive_signer,
)
from gossipmesh.identity.profile import parse_certificate


def test_keys_are_derived_from_the_cluster_name() -> None:
    a = derive_signer(b"gossipmesh playground root/", "alpha")
    assert (
        a.public_key_bytes
        == derive_signer(b"gossipmesh playground root/", "alpha").public_key_bytes
    )
    assert (
        a.public_key_bytes != derive_signer(b"gossipmesh playground root/", "beta").public_key_bytes
    )
    assert playground_root("alpha").signer.public_key_bytes == a.public_key_bytes
    assert (
        playground_operator("alpha").signer.public_key_bytes
        != playground_root("alpha").signer.public_key_bytes
    )


def test_playground_root_is_a_fixed_certificate() -> None:
    root = parse_certificate(playground_root("alpha").cert_der)
    assert str(root.spiffe_id) == "spiffe://alpha"
    assert (root.not_before_ms, root.not_after_ms) == (
        PLAYGROUND_NOT_BEFORE_MS,
        PLAYGROUND_NOT_AFTER_MS,
    )
    assert parse_certificate(playground_root("beta").cert_der).serial != root.serial


def test_playground_operator_and_nodes_verify() -> None:
    root = playground_root("alpha")
    store = TrustStore("alpha", [root.cert_der])
    op = playground_operator("alpha")
    assert (op.name, op.cluster, op.roots) == ("playground", "alpha", (root.cert_der,))
    assert isinstance(store.verify_operator(op.cert_der, NOW_MS), VerifiedIdentity)
    node = NodeCredentials.issue(root, "n1", now_ms=NOW_MS)
    assert isinstance(store.verify_node(node.cert_der, NOW_MS), VerifiedIdentity)
    # Another cluster's playground is another trust domain.
    other = NodeCredentials.issue(playground_root("beta"), "n1", now_ms=NOW_MS)
    assert not isinstance(store.verify_node(other.cert_der, NOW_MS), VerifiedIdentity)


_ISSUER = textwrap.dedent(
    """
    import sys
    from gossipmesh.identity import NodeCredentials, fingerprint, playground_operator, playground_root
    root = playground_root("loop")
    node = NodeCredentials.issue(root, "from-a", now_ms=int(sys.argv[1]))
    print(node.cert_der.hex(), fingerprint(root.cert_der).hex(), playground_operator("loop").cert_der.hex())
    """
)
_VERIFIER = textwrap.dedent(
    """
    import sys
    from gossipmesh.identity import TrustStore, VerifiedIdentity, fingerprint, playground_root
    node_der, root_fp, op_der = (bytes.fromhex(x) for x in sys.stdin.read().split())
    root = playground_root("loop")
    store = TrustStore("loop", [root.cert_der])
    now = int(sys.argv[1])
    node = store.verify_node(node_der, now, name="from-a")
    op = store.verify_operator(op_der, now, name="playground")
    same_root = fingerprint(root.cert_der) == root_fp
    print(isinstance(node, VerifiedIdentity), isinstance(op, VerifiedIdentity), same_root)
    """
)


def test_two_processes_derive_roots_that_trust_each_other() -> None:
    issued = subprocess.run(
        [sys.executable, "-c", _ISSUER, str(NOW_MS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    checked = subprocess.run(
        [sys.executable, "-c", _VERIFIER, str(NOW_MS)],
        input=issued.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert checked.stdout.split() == ["True", "True", "True"]
    # ... and this process agrees with both on the root's identity.
    assert issued.stdout.split()[1] == fingerprint(playground_root("loop").cert_der).hex()
