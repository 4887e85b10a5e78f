"""The document's authority kinds: ``cert/FP``, ``revocation/FP``, ``trust/root/FP`` (DESIGN-11 D5).

- ``cert/FP``: an operator certificate, ``{"der": BASE64}``. Signed by that very certificate's key
  (self-authenticating), so the entries it signs can be verified by any replica that has it. ``FP``
  is the certificate's fingerprint (64 lower-case hex digits, ``gossipmesh.identity.fingerprint``).
- ``revocation/FP``: ``{"kind": "node"|"operator", "name": NAME, "mode": "retired"|"compromised",
  "reason": TEXT}`` revokes the certificate ``FP`` from the entry's time on (``retired``: the
  signer's earlier config entries keep counting; ``compromised``: none of them does, a stolen key
  can backdate). Node revocations may be signed by any operator; operator revocations by a root.
- ``trust/root/FP``: ``{"der": BASE64, "state": "trusted"|"distrusted", "mode": ..., "reason":
  TEXT}``, signed by a trusted root: adds a root (``trusted``), or stops trusting one from the
  entry's time on (``distrusted``; with ``mode = "compromised"``, entries it vouched for never
  count).

None of the three can be deleted (the authority refuses tombstones under these keys): a
certificate must stay to verify what it signed, and a revocation is for good. Bodies hold text
only (base64 for DER), so every value stays JSON, on the admin API as in reads.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import read_choice, read_str, reject_unknown
from gossipmesh.errors import ConfigValidationError, UsageError

FP_RE = re.compile(r"[0-9a-f]{64}")
MAX_REASON_CHARS = 256
MAX_DER_CHARS = 22 * 1024  # base64 of the 16 KiB certificate limit
MODES = ("retired", "compromised")
ROOT_PREFIX = "root/"


@dataclass(frozen=True, slots=True)
class CertEntry:
    name: str  # the fingerprint, hex
    der: bytes

    kind: Literal["cert"] = field(default="cert", init=False)


@dataclass(frozen=True, slots=True)
class Revocation:
    name: str  # the revoked certificate's fingerprint, hex
    subject_kind: Literal["node", "operator"]
    subject: str
    mode: Literal["retired", "compromised"] = "retired"
    reason: str = ""

    kind: Literal["revocation"] = field(default="revocation", init=False)


@dataclass(frozen=True, slots=True)
class RootStatement:
    name: str  # "root/" + the root's fingerprint, hex
    der: bytes
    state: Literal["trusted", "distrusted"] = "trusted"
    mode: Literal["retired", "compromised"] = "retired"
    reason: str = ""

    kind: Literal["trust"] = field(default="trust", init=False)

    @property
    def fingerprint(self) -> bytes:
        return bytes.fromhex(self.name[len(ROOT_PREFIX) :])


def check_fp_name(kind: str, name: str) -> str:
    """``name`` must be a fingerprint (``trust`` names: ``root/`` + a fingerprint)."""
    fp = name[len(ROOT_PREFIX) :] if kind == "trust" and name.startswith(ROOT_PREFIX) else name
    if kind == "trust" and not name.startswith(ROOT_PREFIX):
        raise ConfigValidationError("key", f"trust/{name}: expected trust/root/FINGERPRINT")
    if FP_RE.fullmatch(fp) is None:
        raise ConfigValidationError("key", f"{kind}/{name}: the name must be a certificate "
                                    "fingerprint, 64 lower-case hex digits")  # fmt: skip
    return name


def _der(body: Mapping[str, Any], path: str, fp_hex: str, kind: str) -> bytes:
    # Imported here: the CLI loads this schema on every start, and cryptography's X.509 stack
    # is only needed when a certificate is actually checked.
    from gossipmesh.identity import CertificateRejected, parse_certificate

    if "der" not in body:
        raise ConfigValidationError(f"{path}.der", "required (the certificate, base64 DER)")
    text = read_str(body["der"], f"{path}.der")
    if len(text) > MAX_DER_CHARS:
        raise ConfigValidationError(f"{path}.der", "too large for a certificate")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigValidationError(f"{path}.der", "not base64") from None
    try:
        info = parse_certificate(der)
    except (CertificateRejected, UsageError) as exc:
        raise ConfigValidationError(f"{path}.der", f"not a mesh certificate: {exc}") from None
    if info.kind.value != kind:
        raise ConfigValidationError(f"{path}.der", f"a {info.kind.value} certificate, expected "
                                    f"a {kind} certificate")  # fmt: skip
    if info.fingerprint.hex() != fp_hex:
        raise ConfigValidationError(f"{path}.der", "the certificate's fingerprint is not the key's")
    return der


def _reason(body: Mapping[str, Any], path: str) -> str:
    text = read_str(body.get("reason", ""), f"{path}.reason")
    if len(text) > MAX_REASON_CHARS or any(ord(c) < 0x20 for c in text):
        raise ConfigValidationError(f"{path}.reason", f"at most {MAX_REASON_CHARS} printable "
                                    "characters")  # fmt: skip
    return text


def parse_cert(name: str, body: Mapping[str, Any]) -> CertEntry:
    reject_unknown(body, ("der",), "cert")
    return CertEntry(check_fp_name("cert", name), _der(body, "cert", name, "operator"))


def parse_revocation(name: str, body: Mapping[str, Any]) -> Revocation:
    p = "revocation"
    reject_unknown(body, ("kind", "name", "mode", "reason"), p)
    for required in ("kind", "name"):
        if required not in body:
            raise ConfigValidationError(f"{p}.{required}", "required")
    subject = read_str(body["name"], f"{p}.name")
    if not 1 <= len(subject) <= 128:
        raise ConfigValidationError(f"{p}.name", "1-128 characters")
    return Revocation(
        check_fp_name(p, name),
        read_choice(body["kind"], f"{p}.kind", ("node", "operator")),
        subject,
        read_choice(body.get("mode", "retired"), f"{p}.mode", MODES),
        _reason(body, p),
    )


def parse_trust(name: str, body: Mapping[str, Any]) -> RootStatement:
    p = "trust"
    check_fp_name(p, name)
    reject_unknown(body, ("der", "state", "mode", "reason"), p)
    return RootStatement(
        name,
        _der(body, p, name[len(ROOT_PREFIX) :], "root"),
        read_choice(body.get("state", "trusted"), f"{p}.state", ("trusted", "distrusted")),
        read_choice(body.get("mode", "retired"), f"{p}.mode", MODES),
        _reason(body, p),
    )


def cert_body(entity: CertEntry) -> dict[str, Any]:
    return {"der": base64.b64encode(entity.der).decode()}


def revocation_body(entity: Revocation) -> dict[str, Any]:
    return {"kind": entity.subject_kind, "name": entity.subject, "mode": entity.mode,
            "reason": entity.reason}  # fmt: skip


def trust_body(entity: RootStatement) -> dict[str, Any]:
    return {"der": base64.b64encode(entity.der).decode(), "state": entity.state,
            "mode": entity.mode, "reason": entity.reason}  # fmt: skip


def cert_key(fingerprint: bytes) -> str:
    return f"cert/{fingerprint.hex()}"


def revocation_key(fingerprint: bytes) -> str:
    return f"revocation/{fingerprint.hex()}"


def root_key(fingerprint: bytes) -> str:
    return f"trust/{ROOT_PREFIX}{fingerprint.hex()}"


__all__ = [
    "MODES",
    "CertEntry",
    "Revocation",
    "RootStatement",
    "cert_body",
    "cert_key",
    "check_fp_name",
    "parse_cert",
    "parse_revocation",
    "parse_trust",
    "revocation_body",
    "revocation_key",
    "root_key",
    "trust_body",
]
