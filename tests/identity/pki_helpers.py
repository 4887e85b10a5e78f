"""Shared builders for the identity tests: a fixed clock, a CA, and hand-made bad certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gossipmesh.identity import CaCredentials, NodeCredentials, OperatorCredentials
from gossipmesh.identity.certs import subject_name
from gossipmesh.identity.spiffe import SpiffeId

# A fixed wall clock (2026-01-01T00:00:00Z): every test issues and verifies against it.
NOW_MS = 1_767_225_600_000
DAY_MS = 86_400_000
CLUSTER = "test"


def make_ca(cluster: str = CLUSTER, now_ms: int = NOW_MS, days: int = 3650) -> CaCredentials:
    return CaCredentials.generate(cluster, now_ms=now_ms, days=days)


def make_node(ca: CaCredentials, name: str = "n1", now_ms: int = NOW_MS) -> NodeCredentials:
    return NodeCredentials.issue(ca, name, now_ms=now_ms)


def make_operator(
    ca: CaCredentials, name: str = "alice", now_ms: int = NOW_MS
) -> OperatorCredentials:
    return OperatorCredentials.issue(ca, name, now_ms=now_ms)


def key_usage(*, ds: bool = False, kcs: bool = False, crl: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=ds,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=kcs,
        crl_sign=crl,
        encipher_only=False,
        decipher_only=False,
    )


def raw_certificate(
    *,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_subject: x509.Name,
    subject_key: ec.EllipticCurvePublicKey | None = None,
    sans: Sequence[x509.GeneralName] | None = None,
    ca: bool = True,
    path_length: int | None = 0,
    usage: x509.KeyUsage | None = None,
    subject: x509.Name | None = None,
    now_ms: int = NOW_MS,
    days: int = 30,
) -> bytes:
    """A certificate built by hand, to break one rule of the profile at a time.

    Defaults give a well-formed node certificate ``spiffe://test/node/forged``.
    """
    if subject_key is None:
        subject_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    if sans is None:
        sans = [x509.UniformResourceIdentifier(f"spiffe://{CLUSTER}/node/forged")]
    start = dt.datetime.fromtimestamp(now_ms // 1000 - 300, tz=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or subject_name(SpiffeId.node(CLUSTER, "forged")))
        .issuer_name(issuer_subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(usage or key_usage(ds=True, kcs=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def signed_by(ca: CaCredentials | NodeCredentials | OperatorCredentials) -> dict[str, Any]:
    """The issuer arguments of ``raw_certificate`` for credentials (their key and subject)."""
    cert = x509.load_der_x509_certificate(ca.cert_der)
    return {"issuer_key": ca.signer.private_key, "issuer_subject": cert.subject}
