"""Credentials: a private key together with its certificate (and the roots it chains to).

Theory of operation
-------------------
Three holders exist, each a frozen value checked once when it is made:

- ``CaCredentials``: a root key and its self-signed certificate (the operator's offline CA dir);
- ``NodeCredentials``: an agent's key, its node certificate and the roots it trusts;
- ``OperatorCredentials``: an operator's key, its certificate and the root(s) it chains to.

``from_parts`` checks that the pieces belong together (the key is the certificate's key, the
certificate has the right profile, every root is a root of the same trust domain). It does not
check time or the chain: those depend on a clock and on what the verifier trusts, and are the
``TrustStore``'s job. Nothing here touches files (``files.py`` does) or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Self

from gossipmesh.errors import UsageError
from gossipmesh.identity.certs import (
    NODE_DAYS,
    OPERATOR_DAYS,
    ROOT_DAYS,
    issue_node,
    issue_operator,
    issue_root,
)
from gossipmesh.identity.profile import (
    CertificateRejected,
    CertInfo,
    check_profile,
    parse_certificate,
)
from gossipmesh.identity.signing import Signer, public_key_bytes
from gossipmesh.identity.spiffe import IdKind, SpiffeId

MAX_ROOTS = 16  # a rotation needs two; the cap bounds what a roots file can make us parse


class CredentialError(UsageError):
    """Credentials are missing, unreadable or inconsistent; the message is one line to print."""


@dataclass(frozen=True, slots=True)
class CaCredentials:
    """A root key and its self-signed certificate."""

    trust_domain: str
    signer: Signer
    cert_der: bytes

    @classmethod
    def from_parts(cls, signer: Signer, cert_der: bytes, label: str = "CA") -> CaCredentials:
        info = _checked(cert_der, signer, IdKind.ROOT, None, label)
        return cls(info.spiffe_id.trust_domain, signer, cert_der)

    @classmethod
    def generate(cls, trust_domain: str, *, now_ms: int, days: int = ROOT_DAYS) -> CaCredentials:
        """A new root key and certificate."""
        signer = Signer.generate()
        return cls(trust_domain, signer, issue_root(signer, trust_domain, now_ms=now_ms, days=days))

    @property
    def spiffe_id(self) -> SpiffeId:
        return SpiffeId.root(self.trust_domain)


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """A key issued by a root, its certificate and the roots it trusts; see the two kinds below."""

    KIND: ClassVar[IdKind]
    DEFAULT_DAYS: ClassVar[int]

    name: str
    cluster: str
    signer: Signer
    cert_der: bytes
    roots: tuple[bytes, ...]

    @classmethod
    def from_parts(
        cls, signer: Signer, cert_der: bytes, roots: Iterable[bytes], label: str | None = None
    ) -> Self:
        """Credentials from their pieces, after checking that they belong together."""
        roots = tuple(roots)
        info = _checked(cert_der, signer, cls.KIND, roots, label or cls.KIND.value)
        return cls(info.spiffe_id.name, info.spiffe_id.trust_domain, signer, cert_der, roots)

    @classmethod
    def issue(
        cls,
        ca: CaCredentials,
        name: str,
        *,
        now_ms: int,
        days: int | None = None,
        extra_roots: Iterable[bytes] = (),
    ) -> Self:
        """A new key and a certificate for it from ``ca``; trusts ``ca``'s root (and extras)."""
        signer = Signer.generate()
        issue = issue_node if cls.KIND is IdKind.NODE else issue_operator
        der = issue(
            ca,
            name,
            signer.public_key,
            now_ms=now_ms,
            days=cls.DEFAULT_DAYS if days is None else days,
        )
        return cls.from_parts(signer, der, (ca.cert_der, *extra_roots))

    @property
    def spiffe_id(self) -> SpiffeId:
        return SpiffeId(self.KIND, self.cluster, self.name)


@dataclass(frozen=True, slots=True)
class NodeCredentials(IssuedCredentials):
    """An agent's key, its node certificate and the roots it trusts (one or more)."""

    KIND: ClassVar[IdKind] = IdKind.NODE
    DEFAULT_DAYS: ClassVar[int] = NODE_DAYS


@dataclass(frozen=True, slots=True)
class OperatorCredentials(IssuedCredentials):
    """An operator's signing key, its certificate and the root(s) it chains to."""

    KIND: ClassVar[IdKind] = IdKind.OPERATOR
    DEFAULT_DAYS: ClassVar[int] = OPERATOR_DAYS


def _checked(
    cert_der: bytes, signer: Signer, kind: IdKind, roots: tuple[bytes, ...] | None, label: str
) -> CertInfo:
    try:
        info = parse_certificate(cert_der)
        check_profile(info, kind, info.spiffe_id.trust_domain)
    except CertificateRejected as exc:
        raise CredentialError(
            f"{label}: certificate is not a {kind.value} certificate: {exc}"
        ) from None
    if public_key_bytes(info.public_key) != signer.public_key_bytes:
        raise CredentialError(f"{label}: the private key does not belong to the certificate")
    if roots is not None:
        if not roots:
            raise CredentialError(f"{label}: no root certificate")
        if len(roots) > MAX_ROOTS:
            raise CredentialError(f"{label}: {len(roots)} roots, at most {MAX_ROOTS}")
        for der in roots:
            try:
                check_profile(parse_certificate(der), IdKind.ROOT, info.spiffe_id.trust_domain)
            except CertificateRejected as exc:
                raise CredentialError(f"{label}: a trusted root is not usable: {exc}") from None
    return info
