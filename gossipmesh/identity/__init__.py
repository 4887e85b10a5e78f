"""The mesh's identities: SPIFFE ids, P-256 signatures, X.509 certificates and their verification.

A library with no agent code in it (DESIGN-11 D1, D2, D5, D6). The agent, the SWIM ``Authority``,
signed configuration and issue 12's mTLS build on this public API; everything else in the package
is detail.

Identities (``spiffe.py``)
    ``IdKind`` (ROOT, NODE, OPERATOR, WORKLOAD), ``SpiffeId(kind, trust_domain, name)`` with
    ``.uri``, ``SpiffeId.parse(uri)``, ``SpiffeId.root/node/operator/workload(td[, name])``;
    ``validate_trust_domain(td)``, ``validate_name(name)`` raise ``UsageError``.

Signatures (``signing.py``)
    ``canonical(domain: bytes, cluster: str, *fields) -> bytes``: the bytes to sign (msgpack list;
    ints, str, bytes, bools, None, lists/tuples only). ``Signer`` (``.generate()``,
    ``.sign(data) -> 64 bytes r||s``, ``.public_key``, ``.public_key_bytes`` (65-byte SEC1)).
    ``verify_signature(public_key | sec1_bytes, data, sig) -> bool`` never raises on hostile input.
    ``load_public_key(sec1) -> PublicKey | None``. ``SIGNATURE_BYTES = 64``.

Certificates (``certs.py``, ``profile.py``)
    ``issue_root(signer, trust_domain, *, now_ms, days=3650)``, ``issue_node(ca, name,
    public_key, *, now_ms, days=365)``, ``issue_operator(...)`` (same), ``issue_workload(node,
    service, public_key, *, now_ms, lifetime_ms=24 h, carry_issuer=False)``: each returns DER
    (``carry_issuer``: the workload embeds its node certificate, ``carried_issuer(cert)``). ``parse_certificate(der)
    -> CertInfo`` (spiffe_id, fingerprint, validity in ms, issuer, ...), ``fingerprint(der) -> 32
    bytes``: SHA-256 of the to-be-signed part (not of the whole DER, see profile.py).
    ``Reason``: the rejection slugs. ``MAX_CERT_BYTES = 16 KiB``.

Credentials (``credentials.py``, ``files.py``)
    Frozen ``CaCredentials(trust_domain, signer, cert_der)`` (``.generate(td, *, now_ms,
    days=3650)``, ``.from_parts(signer, cert_der)``) and ``NodeCredentials`` /
    ``OperatorCredentials(name, cluster, signer, cert_der, roots)``, both ``IssuedCredentials``
    with ``.from_parts(signer, cert_der, roots)`` (consistency checked), ``.issue(ca, name, *,
    now_ms, days=None, extra_roots=())`` and ``.spiffe_id``. Files: ``load_ca(dir)``,
    ``load_node(dir)``, ``load_operator(path)``, ``save_ca/save_node/save_operator(..., *,
    force=False)``, ``load_certificates(path)``, ``write_atomic(path, data, mode)``. Every refusal
    is a ``CredentialError`` (a ``UsageError``) whose message is one line to print.

Verification (``truststore.py``)
    ``TrustStore(trust_domain, roots=(), revoked=(), *, memo_entries=10_000)`` with
    ``add_root(der) -> bool``, ``remove_root(fp) -> bool``, ``revoke(fp)``, ``unrevoke(fp)``,
    ``set_revoked(fps)`` (bool: changed), ``is_revoked(fp)``, ``roots``, ``root_fingerprints``,
    ``version`` (bumped on every change); ``verify_node(der, now_ms, *, name=None)``,
    ``verify_operator(der, now_ms, *, name=None)``, ``verify_workload(der, node_der, now_ms, *,
    service=None)``, ``verify_carried_workload(der, now_ms, *, service=None)`` (a workload that
    carries its node certificate: what a TLS peer presents), and ``verify_chain(der, kind, *, name=None)`` (no clock: the window is
    returned, not checked) return a ``VerifiedIdentity`` (spiffe_id, fingerprint, not_before_ms,
    not_after_ms, public_key, node; ``.name``, ``.kind``) or a ``Rejected(reason, detail)``;
    they never raise on hostile input. Memoised per store version (successes and failures); the
    validity window is checked against ``now_ms`` on every call. Counters: ``memo_hits``,
    ``memo_misses``, ``chain_verifications``.

Playground (``playground.py``, INSECURE: anyone can derive these keys)
    ``playground_root(cluster) -> CaCredentials``, ``playground_operator(cluster) ->
    OperatorCredentials``: the same in every process, for loopback playgrounds only.
"""

from __future__ import annotations

from gossipmesh.identity.certs import (
    CARRIED_ISSUER_OID,
    CLOCK_SKEW_MS,
    MIN_WORKLOAD_LIFETIME_MS,
    NODE_DAYS,
    OPERATOR_DAYS,
    ROOT_DAYS,
    WORKLOAD_LIFETIME_MS,
    carried_issuer,
    issue_node,
    issue_operator,
    issue_root,
    issue_workload,
)
from gossipmesh.identity.credentials import (
    CaCredentials,
    CredentialError,
    IssuedCredentials,
    NodeCredentials,
    OperatorCredentials,
)
from gossipmesh.identity.files import (
    load_ca,
    load_certificates,
    load_node,
    load_operator,
    save_ca,
    save_node,
    save_operator,
    write_atomic,
)
from gossipmesh.identity.playground import playground_operator, playground_root
from gossipmesh.identity.profile import (
    MAX_CERT_BYTES,
    CertificateRejected,
    CertInfo,
    Reason,
    fingerprint,
    parse_certificate,
)
from gossipmesh.identity.signing import (
    SIGNATURE_BYTES,
    PublicKey,
    Signer,
    canonical,
    load_public_key,
    verify_signature,
)
from gossipmesh.identity.spiffe import IdKind, SpiffeId, validate_name, validate_trust_domain
from gossipmesh.identity.truststore import Rejected, TrustStore, Verdict, VerifiedIdentity

__all__ = [
    "CARRIED_ISSUER_OID",
    "CLOCK_SKEW_MS",
    "MIN_WORKLOAD_LIFETIME_MS",
    "MAX_CERT_BYTES",
    "NODE_DAYS",
    "OPERATOR_DAYS",
    "ROOT_DAYS",
    "SIGNATURE_BYTES",
    "WORKLOAD_LIFETIME_MS",
    "CaCredentials",
    "CertInfo",
    "CertificateRejected",
    "CredentialError",
    "IdKind",
    "IssuedCredentials",
    "NodeCredentials",
    "OperatorCredentials",
    "PublicKey",
    "Reason",
    "Rejected",
    "Signer",
    "SpiffeId",
    "TrustStore",
    "Verdict",
    "VerifiedIdentity",
    "canonical",
    "carried_issuer",
    "fingerprint",
    "issue_node",
    "issue_operator",
    "issue_root",
    "issue_workload",
    "load_ca",
    "load_certificates",
    "load_node",
    "load_operator",
    "load_public_key",
    "parse_certificate",
    "playground_operator",
    "playground_root",
    "save_ca",
    "save_node",
    "save_operator",
    "validate_name",
    "validate_trust_domain",
    "verify_signature",
    "write_atomic",
]
