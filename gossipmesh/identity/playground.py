"""The playground PKI: a root and an operator that anyone can derive from the cluster name.

INSECURE BY DESIGN. Everything here is computed from public information (the cluster name), so
anyone who knows the name holds these private keys. It exists so that a loopback playground (an
agent with no gossip key and no certificates, DESIGN-11 D6) runs the very same signed and
verified code paths as production, with no files to share between processes. The agent must
refuse to use it on any non-loopback address, and says loudly that it is doing so.

Theory of operation
-------------------
- Keys: ``ec.derive_private_key(int(SHA-256(label + cluster)) mod n)`` for the labels
  ``b"gossipmesh playground root/"`` and ``b"gossipmesh playground operator/"`` (n the P-256
  group order; the one-in-2^224 zero case maps to 1).
- Certificates: the same builder as production (``certs.build_certificate``) with a serial
  derived from the cluster name and a fixed validity (``PLAYGROUND_NOT_BEFORE_MS`` to
  ``PLAYGROUND_NOT_AFTER_MS``), so the to-be-signed bytes, and therefore the fingerprint, are the
  same in every process. The signature is made deterministic (RFC 6979) too, so the DER is
  normally identical; trust does not depend on that: stores identify a root by fingerprint, and
  the chain verifier finds an issuer by subject and checks the signature with its key, so a node
  certificate signed in one process verifies against the root built in another.
- Node certificates are not derived: each playground agent makes its own key and issues itself a
  certificate from ``playground_root(cluster)`` at start (``NodeCredentials.issue``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

from cryptography.hazmat.primitives.asymmetric import ec

from gossipmesh.identity.certs import build_certificate
from gossipmesh.identity.credentials import CaCredentials, OperatorCredentials
from gossipmesh.identity.profile import parse_certificate
from gossipmesh.identity.signing import CURVE, ORDER, Signer
from gossipmesh.identity.spiffe import SpiffeId, validate_trust_domain

ROOT_LABEL = b"gossipmesh playground root/"
OPERATOR_LABEL = b"gossipmesh playground operator/"
SERIAL_LABEL = b"gossipmesh playground serial/"
PLAYGROUND_OPERATOR_NAME = "playground"
PLAYGROUND_NOT_BEFORE_MS = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
PLAYGROUND_NOT_AFTER_MS = int(dt.datetime(2120, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def derive_signer(label: bytes, cluster: str) -> Signer:
    """An INSECURE key derived from public inputs (the playground's only key source)."""
    digest = hashlib.sha256(label + cluster.encode("utf-8")).digest()
    scalar = int.from_bytes(digest, "big") % ORDER or 1
    return Signer(ec.derive_private_key(scalar, CURVE))


def _serial(kind: bytes, cluster: str) -> int:
    digest = hashlib.sha256(SERIAL_LABEL + kind + b"/" + cluster.encode("utf-8")).digest()
    return (int.from_bytes(digest[:19], "big") >> 1) + 1  # positive, at most 19 bytes


@functools.lru_cache(maxsize=8)
def playground_root(cluster: str) -> CaCredentials:
    """The INSECURE playground root of ``cluster``: the same in every process."""
    validate_trust_domain(cluster)
    signer = derive_signer(ROOT_LABEL, cluster)
    der = build_certificate(
        spiffe_id=SpiffeId.root(cluster),
        public_key=signer.public_key,
        issuer_signer=signer,
        issuer=None,
        not_before_ms=PLAYGROUND_NOT_BEFORE_MS,
        not_after_ms=PLAYGROUND_NOT_AFTER_MS,
        serial=_serial(b"root", cluster),
        deterministic=True,
    )
    return CaCredentials(cluster, signer, der)


@functools.lru_cache(maxsize=8)
def playground_operator(cluster: str) -> OperatorCredentials:
    """The INSECURE playground operator ``playground`` of ``cluster``, signed by its root."""
    root = playground_root(cluster)
    signer = derive_signer(OPERATOR_LABEL, cluster)
    der = build_certificate(
        spiffe_id=SpiffeId.operator(cluster, PLAYGROUND_OPERATOR_NAME),
        public_key=signer.public_key,
        issuer_signer=root.signer,
        issuer=parse_certificate(root.cert_der),
        not_before_ms=PLAYGROUND_NOT_BEFORE_MS,
        not_after_ms=PLAYGROUND_NOT_AFTER_MS,
        serial=_serial(b"operator", cluster),
        deterministic=True,
    )
    return OperatorCredentials(PLAYGROUND_OPERATOR_NAME, cluster, signer, der, (root.cert_der,))
