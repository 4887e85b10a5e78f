"""Certificate builders: root, node, operator and workload certificates of one mesh.

Theory of operation
-------------------
The shapes are DESIGN-11 D2, built with cryptography's ``CertificateBuilder``:

| kind     | issuer   | basicConstraints          | keyUsage                         | default life |
|----------|----------|---------------------------|----------------------------------|--------------|
| root     | itself   | CA, path_length=1         | keyCertSign, cRLSign             | 10 years     |
| node     | a root   | CA, path_length=0         | digitalSignature, keyCertSign    | 365 days     |
| operator | a root   | not a CA                  | digitalSignature                 | 365 days     |
| workload | a node   | not a CA                  | digitalSignature                 | 24 hours     |

Each carries exactly one URI SAN, its SPIFFE id; a subject key identifier, and (below the root)
an authority key identifier, so chain building picks the right issuer quickly even when two roots
share a subject during a rotation. Serials are random (159 bits). ``not_valid_before`` is
backdated by ``CLOCK_SKEW_MS`` so a peer whose clock is a little behind accepts a fresh
certificate; a certificate never outlives its issuer (its end is clamped to the issuer's).

The subject is one CN, ``<trust domain>`` for a root and ``<kind>/<name>`` (``node/web-1``)
below it, for people reading ``openssl x509``; nothing trusts it (identity is the SAN), and one
attribute keeps a node certificate, which travels in membership messages, about 55 bytes smaller
than an O/OU/CN subject. Names cannot contain ``/`` and trust domains cannot either, so subjects
stay distinct within a domain. X.509 caps a CN at 64 characters: a longer one is cut and
suffixed with a hash of the whole, which keeps it distinct.

Times come in as the caller's wall clock in milliseconds; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gossipmesh.errors import UsageError
from gossipmesh.identity.profile import (
    CertificateRejected,
    CertInfo,
    check_profile,
    parse_certificate,
)
from gossipmesh.identity.signing import PublicKey, Signer, public_key_bytes
from gossipmesh.identity.spiffe import IdKind, SpiffeId, validate_trust_domain

DAY_MS = 24 * 3600 * 1000
ROOT_DAYS = 3650
NODE_DAYS = 365
OPERATOR_DAYS = 365
WORKLOAD_LIFETIME_MS = DAY_MS
MAX_DAYS = 100 * 366
CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_CN_CHARS = 64
MIN_WORKLOAD_LIFETIME_MS = 10_000  # short lives are for tests of renewal; 24 h is the default
# A private extension (an OID under 2.25, the UUID arc, needs no registration) in which a
# workload certificate carries the DER of the node certificate that issued it. A TLS peer sends
# its chain, but Python before 3.13 shows only the leaf of it; the carried issuer lets the
# verifier check root -> node -> workload with the library (TrustStore.verify_workload) and know
# which node vouches for the service. It is not trusted by itself: the chain check proves that
# this very node certificate signed the leaf. Non-critical, so other TLS stacks ignore it.
CARRIED_ISSUER_OID = x509.ObjectIdentifier("2.25.151925340811457452622540431735290917183")


class Issuer(Protocol):
    """Anything that can sign certificates: a key and its own certificate (a root or a node)."""

    @property
    def signer(self) -> Signer: ...

    @property
    def cert_der(self) -> bytes: ...


def issue_root(signer: Signer, trust_domain: str, *, now_ms: int, days: int = ROOT_DAYS) -> bytes:
    """A self-signed root certificate (DER) for ``trust_domain``, valid ``days`` from now."""
    validate_trust_domain(trust_domain)
    _check_days(days)
    return build_certificate(
        spiffe_id=SpiffeId.root(trust_domain),
        public_key=signer.public_key,
        issuer_signer=signer,
        issuer=None,
        not_before_ms=now_ms - CLOCK_SKEW_MS,
        not_after_ms=now_ms + days * DAY_MS,
    )


def issue_node(
    ca: Issuer, name: str, public_key: PublicKey, *, now_ms: int, days: int = NODE_DAYS
) -> bytes:
    """A node certificate (DER) for ``name``, signed by the root ``ca``."""
    return _issue_from_root(ca, IdKind.NODE, name, public_key, now_ms, days)


def issue_operator(
    ca: Issuer, name: str, public_key: PublicKey, *, now_ms: int, days: int = OPERATOR_DAYS
) -> bytes:
    """An operator certificate (DER) for ``name``, signed by the root ``ca``."""
    return _issue_from_root(ca, IdKind.OPERATOR, name, public_key, now_ms, days)


def _issue_from_root(
    ca: Issuer, kind: IdKind, name: str, public_key: PublicKey, now_ms: int, days: int
) -> bytes:
    root = _issuer_info(ca, IdKind.ROOT)
    _check_days(days)
    return build_certificate(
        spiffe_id=SpiffeId(kind, root.spiffe_id.trust_domain, name),
        public_key=public_key,
        issuer_signer=ca.signer,
        issuer=root,
        not_before_ms=now_ms - CLOCK_SKEW_MS,
        not_after_ms=now_ms + days * DAY_MS,
    )


def issue_workload(
    node: Issuer,
    service: str,
    public_key: PublicKey,
    *,
    now_ms: int,
    lifetime_ms: int = WORKLOAD_LIFETIME_MS,
    carry_issuer: bool = False,
) -> bytes:
    """A workload certificate (DER) for ``service``, signed by a node's key (issue 12).
    ``carry_issuer``: embed the node certificate (``CARRIED_ISSUER_OID``, ``carried_issuer``)."""
    issuer = _issuer_info(node, IdKind.NODE)
    if not MIN_WORKLOAD_LIFETIME_MS <= lifetime_ms <= MAX_DAYS * DAY_MS:
        raise UsageError(
            f"workload lifetime must be {MIN_WORKLOAD_LIFETIME_MS // 1000} s to {MAX_DAYS} days,"
            f" got {lifetime_ms} ms"
        )
    extra = (x509.UnrecognizedExtension(CARRIED_ISSUER_OID, node.cert_der),) if carry_issuer else ()
    return build_certificate(
        spiffe_id=SpiffeId.workload(issuer.spiffe_id.trust_domain, service),
        public_key=public_key,
        issuer_signer=node.signer,
        issuer=issuer,
        not_before_ms=now_ms - CLOCK_SKEW_MS,
        not_after_ms=now_ms + lifetime_ms,
        extensions=extra,
    )


def carried_issuer(cert: x509.Certificate) -> bytes | None:
    """The node certificate a workload certificate carries (``issue_workload(carry_issuer=
    True)``), unverified; None when it carries none."""
    try:
        ext = cert.extensions.get_extension_for_oid(CARRIED_ISSUER_OID).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


def build_certificate(
    *,
    spiffe_id: SpiffeId,
    public_key: PublicKey,
    issuer_signer: Signer,
    issuer: CertInfo | None,
    not_before_ms: int,
    not_after_ms: int,
    serial: int | None = None,
    deterministic: bool = False,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> bytes:
    """The one builder behind the ``issue_*`` functions and the playground.

    ``issuer`` is None for a self-signed root. ``deterministic`` makes the ECDSA signature
    deterministic (RFC 6979), so the same inputs give the same DER (the playground root).
    """
    kind = spiffe_id.kind
    if (issuer is None) != (kind is IdKind.ROOT):
        raise UsageError("only a root certificate is self-signed")
    if issuer is not None:
        not_after_ms = min(not_after_ms, issuer.not_after_ms)
    if not_after_ms <= not_before_ms:
        raise UsageError("the issuer expires before the new certificate would start")
    subject = subject_name(spiffe_id)
    issuer_name = subject if issuer is None else issuer.certificate.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(_datetime(not_before_ms))
        .not_valid_after(_datetime(not_after_ms))
        .add_extension(
            x509.BasicConstraints(ca=kind in _CA_KINDS, path_length=_PATH_LENGTH.get(kind)),
            critical=True,
        )
        .add_extension(_key_usage(kind), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id.uri)]),
            critical=False,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key), critical=False
        )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    key, algorithm = issuer_signer.private_key, hashes.SHA256()
    if deterministic:
        try:
            return _der(builder.sign(key, algorithm, ecdsa_deterministic=True))
        except (TypeError, UnsupportedAlgorithm):
            # An older cryptography or OpenSSL: the DER then differs between processes, which
            # trust does not depend on (a root is identified by its to-be-signed part).
            pass
    return _der(builder.sign(key, algorithm))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


_CA_KINDS = frozenset({IdKind.ROOT, IdKind.NODE})
_PATH_LENGTH = {IdKind.ROOT: 1, IdKind.NODE: 0}


def subject_name(spiffe_id: SpiffeId) -> x509.Name:
    """``CN=<trust domain>`` for a root, ``CN=<kind>/<name>`` below it: for humans only."""
    if spiffe_id.kind is IdKind.ROOT:
        cn = spiffe_id.trust_domain
    else:
        cn = f"{spiffe_id.kind.path_segment}/{spiffe_id.name}"
    if len(cn) > MAX_CN_CHARS:
        digest = hashlib.sha256(cn.encode("utf-8")).hexdigest()[:16]
        cn = cn[: MAX_CN_CHARS - 17] + "~" + digest
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(kind: IdKind) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=kind is not IdKind.ROOT,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=kind in _CA_KINDS,
        crl_sign=kind is IdKind.ROOT,
        encipher_only=False,
        decipher_only=False,
    )


def _issuer_info(issuer: Issuer, kind: IdKind) -> CertInfo:
    try:
        info = parse_certificate(issuer.cert_der)
        check_profile(info, kind, info.spiffe_id.trust_domain)
    except CertificateRejected as exc:
        raise UsageError(f"issuer certificate is not a usable {kind.value}: {exc}") from None
    if public_key_bytes(info.public_key) != issuer.signer.public_key_bytes:
        raise UsageError("issuer key does not match the issuer certificate")
    return info


def _check_days(days: int) -> None:
    if type(days) is not int or not 1 <= days <= MAX_DAYS:
        raise UsageError(f"days must be 1-{MAX_DAYS}, got {days}")


def _datetime(ms: int) -> dt.datetime:
    # X.509 times have one-second resolution; round down so a certificate never claims more.
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)
