"""What a mesh certificate must look like, checked before any chain is built.

Theory of operation
-------------------
cryptography's verifier (``truststore.py``) decides whether a chain reaches a trusted root, whether
each issuer is a CA and whether the signatures hold. It does not know our profile (DESIGN-11 D2),
so this module checks, on the parsed certificate alone:

- size (at most ``MAX_CERT_BYTES``, refused before parsing) and strict DER;
- an ECDSA P-256 key and an ecdsa-with-SHA256 signature (the verifier would also take P-384);
- exactly one subject alternative name, a URI, that is a canonical SPIFFE id;
- the kind's constraints: a root and a node are CAs (a node with ``path_length=0``: it may sign
  workload leaves and nothing below them), operators and workloads are not; key usages per kind.

Failures raise ``CertificateRejected`` carrying a ``Reason``: a stable slug for counters. The
``fingerprint`` of a certificate is the SHA-256 of its *to-be-signed* part, not of the whole DER:
an ECDSA signature can be re-encoded as ``(r, n - s)`` and still verify, which would give a revoked
certificate a second whole-DER fingerprint; the signed part cannot change without breaking the
signature, so it is the certificate's one name.
"""

from __future__ import annotations

import enum
import hashlib
import warnings
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.identity.spiffe import IdKind, SpiffeId

MAX_CERT_BYTES = 16 * 1024
# What cryptography raises on malformed or unsupported certificates (found by fuzzing too).
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    CryptographyDeprecationWarning,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
FINGERPRINT_BYTES = 32


class Reason(enum.StrEnum):
    """Why a certificate was refused; the values are counter labels."""

    TOO_LARGE = "too_large"
    BAD_CERTIFICATE = "bad_certificate"
    WRONG_KIND = "wrong_kind"
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"
    WRONG_NAME = "wrong_name"
    BAD_ISSUER = "bad_issuer"
    UNKNOWN_ROOT = "unknown_root"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"


class CertificateRejected(DecodeError):
    """A certificate failed a check; ``reason`` is a ``Reason``."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class CertInfo:
    """A parsed mesh certificate and the facts the checks and ``ca show`` need."""

    der: bytes
    spiffe_id: SpiffeId
    fingerprint: bytes
    not_before_ms: int
    not_after_ms: int
    is_ca: bool
    path_length: int | None
    serial: int
    certificate: x509.Certificate = field(compare=False, repr=False)
    public_key: ec.EllipticCurvePublicKey = field(compare=False, repr=False)

    @property
    def kind(self) -> IdKind:
        return self.spiffe_id.kind

    # RFC 4514 strings are for people (``ca show``) and cost ~30 µs each: made on demand.
    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string()


def fingerprint(der: bytes) -> bytes:
    """The certificate's identity: SHA-256 of its to-be-signed part (32 bytes).

    Raises CertificateRejected for bytes that are not a certificate.
    """
    return parse_certificate(der).fingerprint


def parse_certificate(der: bytes) -> CertInfo:
    """Parse DER and check what every mesh certificate shares (size, key, one SPIFFE URI SAN)."""
    if type(der) is not bytes:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "not bytes")
    if len(der) > MAX_CERT_BYTES:
        raise CertificateRejected(Reason.TOO_LARGE, f"{len(der)} bytes > {MAX_CERT_BYTES}")
    try:
        with warnings.catch_warnings():
            # cryptography only warns about some malformations (a serial that is not positive)
            # that a later release will refuse; refuse them now.
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            # Parsing is lazy in places: touch everything we read inside the try.
            tbs = cert.tbs_certificate_bytes
            sig_oid = cert.signature_algorithm_oid
            key = cert.public_key()
            extensions = cert.extensions
            not_before_ms = _ms(cert.not_valid_before_utc.timestamp())
            not_after_ms = _ms(cert.not_valid_after_utc.timestamp())
            serial = cert.serial_number
            version = cert.version
    except _PARSE_ERRORS as exc:
        raise CertificateRejected(
            Reason.BAD_CERTIFICATE, f"not a valid certificate: {exc}"
        ) from None
    if version is not x509.Version.v3:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "not an X.509 v3 certificate")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "public key is not ECDSA P-256")
    if sig_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "signature is not ecdsa-with-SHA256")
    spiffe_id = _spiffe_id(extensions)
    try:
        bc = extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "no basicConstraints") from None
    assert isinstance(bc, x509.BasicConstraints)
    return CertInfo(
        der=der,
        spiffe_id=spiffe_id,
        fingerprint=hashlib.sha256(tbs).digest(),
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
        is_ca=bc.ca,
        path_length=bc.path_length,
        serial=serial,
        certificate=cert,
        public_key=key,
    )


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _spiffe_id(extensions: x509.Extensions) -> SpiffeId:
    try:
        san = extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "no subjectAltName") from None
    assert isinstance(san, x509.SubjectAlternativeName)
    names = list(san)
    if len(names) != 1:
        raise CertificateRejected(
            Reason.BAD_CERTIFICATE, f"{len(names)} subjectAltNames, expected exactly one URI"
        )
    (only,) = names
    if not isinstance(only, x509.UniformResourceIdentifier):
        raise CertificateRejected(
            Reason.BAD_CERTIFICATE, f"subjectAltName is a {type(only).__name__}, not a URI"
        )
    try:
        return SpiffeId.parse(only.value)
    except UsageError as exc:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, str(exc)) from None


# Key usages each kind must have and must not have (digitalSignature, keyCertSign, cRLSign).
_USAGE = {
    IdKind.ROOT: ({"key_cert_sign"}, set()),
    IdKind.NODE: ({"digital_signature", "key_cert_sign"}, set()),
    IdKind.OPERATOR: ({"digital_signature"}, {"key_cert_sign", "crl_sign"}),
    IdKind.WORKLOAD: ({"digital_signature"}, {"key_cert_sign", "crl_sign"}),
}


def check_profile(info: CertInfo, kind: IdKind, trust_domain: str) -> None:
    """Raise CertificateRejected unless ``info`` is a well-formed ``kind`` of ``trust_domain``."""
    if info.kind is not kind:
        raise CertificateRejected(
            Reason.WRONG_KIND, f"certificate kind is {info.kind.value}, expected {kind.value}"
        )
    if info.spiffe_id.trust_domain != trust_domain:
        raise CertificateRejected(
            Reason.WRONG_TRUST_DOMAIN,
            f"trust domain {info.spiffe_id.trust_domain!r}, expected {trust_domain!r}",
        )
    if kind is IdKind.ROOT:
        if not info.is_ca:
            raise CertificateRejected(Reason.BAD_CERTIFICATE, "a root must be a CA")
    elif kind is IdKind.NODE:
        if not info.is_ca or info.path_length != 0:
            raise CertificateRejected(
                Reason.BAD_CERTIFICATE, "a node certificate must be a CA with path_length=0"
            )
    elif info.is_ca:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, f"a {kind.value} must not be a CA")
    try:
        usage = info.certificate.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        raise CertificateRejected(Reason.BAD_CERTIFICATE, "no keyUsage") from None
    assert isinstance(usage, x509.KeyUsage)
    required, forbidden = _USAGE[kind]
    for attr in required:
        if not getattr(usage, attr):
            raise CertificateRejected(Reason.BAD_CERTIFICATE, f"keyUsage lacks {attr}")
    for attr in forbidden:
        if getattr(usage, attr):
            raise CertificateRejected(Reason.BAD_CERTIFICATE, f"keyUsage has {attr}")
