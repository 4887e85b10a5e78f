"""TrustStore: which certificates this agent believes, and for how long.

Theory of operation
-------------------
A store holds, for one trust domain (the cluster), the trusted roots (several at once during a
root rotation) and the fingerprints of revoked node and operator certificates (from the
replicated document, DESIGN-11 D5). Every change bumps ``version``, so callers that cache
decisions about certificates know when to drop them.

``verify(der, kind, now_ms)`` answers with a ``VerifiedIdentity`` or a ``Rejected`` carrying a
``Reason`` slug; it never raises on hostile input. In order:

1. size: more than ``MAX_CERT_BYTES`` is refused before parsing;
2. our profile (``profile.py``): strict DER, P-256, exactly one SPIFFE URI SAN, the kind asked
   for, this trust domain, the kind's basicConstraints and keyUsage; for a workload, the node
   certificate given as its intermediate must itself pass the node profile (``path_length=0``);
3. revocation, of the leaf and (for a workload) of its node certificate;
4. the chain, by cryptography's verifier (``x509.verification``): signatures, CA flags,
   path lengths, validity of every certificate. A node or operator certificate must be signed
   directly by a root; a workload by the node certificate passed with it, which is signed by a
   root. The library accepts a node certificate (a CA) as a leaf under the permissive EE policy
   we give it, which is what lets one certificate be both a node's identity and its workloads'
   issuer;
5. the validity window of the whole chain against the caller's wall clock ``now_ms``.

Steps 1-4 do not depend on the clock: the library is asked about the latest ``not_before`` of
the leaf and its intermediate (the first instant at which the chain can be valid), and the
window of the returned chain is kept. So their outcome, success or failure, is memoised by a
hash of the input bytes (not the bytes: a flood of 16 KiB junk must not fill memory), in a
bounded LRU cleared on every change of roots or revocations. Step 5 runs on every call: a memo
never extends a certificate's life, and a flood of one junk certificate costs one verification.

Roots are identified by their ``fingerprint``, the hash of their to-be-signed part (subject, key,
serial, validity): two processes that build the same playground root (``playground.py``) agree on
it even though ECDSA signatures are randomised; the library matches issuers by subject and
checks signatures with the root's key, so either copy verifies the other's node certificates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from gossipmesh.identity.certs import carried_issuer
from gossipmesh.identity.credentials import CredentialError
from gossipmesh.identity.profile import (
    FINGERPRINT_BYTES,
    MAX_CERT_BYTES,
    CertificateRejected,
    CertInfo,
    Reason,
    check_profile,
    parse_certificate,
)
from gossipmesh.identity.signing import PublicKey
from gossipmesh.identity.spiffe import IdKind, SpiffeId, validate_trust_domain

MEMO_ENTRIES = 10_000
MAX_ROOTS = 16

_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, None
)
_EE_POLICY = ExtensionPolicy.permit_all()


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """A certificate that chains to a trusted root, with the window its whole chain is valid."""

    spiffe_id: SpiffeId
    fingerprint: bytes
    not_before_ms: int
    not_after_ms: int
    public_key: PublicKey = field(compare=False, repr=False)
    # The issuing node of a workload certificate (issue 12 checks that it hosts the service).
    node: SpiffeId | None = None

    @property
    def name(self) -> str:
        return self.spiffe_id.name

    @property
    def kind(self) -> IdKind:
        return self.spiffe_id.kind


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a certificate was not accepted. ``reason`` is a counter label."""

    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


Verdict = VerifiedIdentity | Rejected


class TrustStore:
    """Trusted roots and revocations of one trust domain, and a memo of verifications."""

    def __init__(
        self,
        trust_domain: str,
        roots: Iterable[bytes] = (),
        revoked: Iterable[bytes] = (),
        *,
        memo_entries: int = MEMO_ENTRIES,
    ) -> None:
        self.trust_domain = validate_trust_domain(trust_domain)
        if memo_entries < 1:
            raise ValueError("memo_entries must be at least 1")
        self._memo_entries = memo_entries
        self._roots: dict[bytes, CertInfo] = {}
        self._revoked: set[bytes] = set()
        self._store: Store | None = None
        self._memo: OrderedDict[bytes, Verdict] = OrderedDict()
        # leaf hash -> the node certificate it carries (a pure function of the bytes: never
        # cleared), so a peer's repeated handshakes parse its certificate once.
        self._carried: OrderedDict[bytes, bytes | None] = OrderedDict()
        self.version = 0
        # Counters for /metrics and for tests: memo hits, full checks (misses), and how often
        # the library's chain verifier really ran (a subset of the misses).
        self.memo_hits = 0
        self.memo_misses = 0
        self.chain_verifications = 0
        for der in roots:
            self.add_root(der)
        self.set_revoked(revoked)

    # -- roots --------------------------------------------------------------------------------

    @property
    def roots(self) -> tuple[bytes, ...]:
        """The trusted root certificates (DER), in the order they were added."""
        return tuple(info.der for info in self._roots.values())

    @property
    def root_fingerprints(self) -> frozenset[bytes]:
        return frozenset(self._roots)

    def add_root(self, der: bytes) -> bool:
        """Trust ``der``, a root of this trust domain; False if it was trusted already."""
        try:
            info = parse_certificate(der)
            check_profile(info, IdKind.ROOT, self.trust_domain)
        except CertificateRejected as exc:
            raise CredentialError(f"not a usable root of {self.trust_domain!r}: {exc}") from None
        if info.certificate.issuer != info.certificate.subject:
            raise CredentialError("a root certificate must be self-issued")
        if info.fingerprint in self._roots:
            return False
        if len(self._roots) >= MAX_ROOTS:
            raise CredentialError(f"at most {MAX_ROOTS} trusted roots")
        self._roots[info.fingerprint] = info
        self._changed()
        return True

    def remove_root(self, fingerprint: bytes) -> bool:
        """Stop trusting the root with this fingerprint; False if it was not trusted."""
        if self._roots.pop(fingerprint, None) is None:
            return False
        self._changed()
        return True

    # -- revocation ---------------------------------------------------------------------------

    @property
    def revoked(self) -> frozenset[bytes]:
        return frozenset(self._revoked)

    def is_revoked(self, fingerprint: bytes) -> bool:
        return fingerprint in self._revoked

    def revoke(self, fingerprint: bytes) -> bool:
        """Refuse the certificate with this fingerprint from now on; False if already refused."""
        _check_fingerprint(fingerprint)
        if fingerprint in self._revoked:
            return False
        self._revoked.add(fingerprint)
        self._changed()
        return True

    def unrevoke(self, fingerprint: bytes) -> bool:
        if fingerprint not in self._revoked:
            return False
        self._revoked.discard(fingerprint)
        self._changed()
        return True

    def set_revoked(self, fingerprints: Iterable[bytes]) -> bool:
        """Replace the revoked set (e.g. from the document); bumps the version only on a change."""
        new = set(fingerprints)
        for fp in new:
            _check_fingerprint(fp)
        if new == self._revoked:
            return False
        self._revoked = new
        self._changed()
        return True

    @property
    def memo_size(self) -> int:
        return len(self._memo)

    def _changed(self) -> None:
        self.version += 1
        self._store = None
        self._memo.clear()  # every memoised verdict belonged to the previous version

    # -- verification -------------------------------------------------------------------------

    def verify_node(self, der: bytes, now_ms: int, *, name: str | None = None) -> Verdict:
        """A node certificate, optionally for exactly node ``name``."""
        return self.verify(der, IdKind.NODE, now_ms, name=name)

    def verify_operator(self, der: bytes, now_ms: int, *, name: str | None = None) -> Verdict:
        """An operator certificate, optionally for exactly operator ``name``."""
        return self.verify(der, IdKind.OPERATOR, now_ms, name=name)

    def verify_workload(
        self, der: bytes, node_der: bytes, now_ms: int, *, service: str | None = None
    ) -> Verdict:
        """A workload leaf issued by the node certificate ``node_der`` (issue 12).

        The caller must still check that the issuing node (``VerifiedIdentity.node``) hosts the
        service: X.509 name constraints cannot restrict a URI path.
        """
        return self.verify(der, IdKind.WORKLOAD, now_ms, name=service, intermediate=node_der)

    def verify_carried_workload(
        self, der: bytes, now_ms: int, *, service: str | None = None
    ) -> Verdict:
        """A workload leaf that carries the node certificate which issued it
        (``issue_workload(carry_issuer=True)``): what a TLS peer shows (issue 12)."""
        if type(der) is not bytes or len(der) > MAX_CERT_BYTES:
            return Rejected(Reason.TOO_LARGE if type(der) is bytes else Reason.BAD_CERTIFICATE)
        key = hashlib.sha256(der).digest()
        if key in self._carried:
            node_der = self._carried[key]
            self._carried.move_to_end(key)
        else:
            try:
                node_der = carried_issuer(x509.load_der_x509_certificate(der))
            except (ValueError, TypeError):
                return Rejected(Reason.BAD_CERTIFICATE, "not a valid certificate")
            self._carried[key] = node_der
            if len(self._carried) > self._memo_entries:
                self._carried.popitem(last=False)
        if node_der is None:  # not a workload (WRONG_KIND), or one that carries no issuer
            return self.verify(der, IdKind.WORKLOAD, now_ms, name=service)
        return self.verify_workload(der, node_der, now_ms, service=service)

    def verify(
        self,
        der: bytes,
        kind: IdKind,
        now_ms: int,
        *,
        name: str | None = None,
        intermediate: bytes | None = None,
    ) -> Verdict:
        """Verify ``der`` as a ``kind`` certificate at wall-clock ``now_ms``. Never raises on input."""
        verdict = self.verify_chain(der, kind, name=name, intermediate=intermediate)
        if isinstance(verdict, Rejected):
            return verdict
        if now_ms < verdict.not_before_ms:
            return Rejected(Reason.NOT_YET_VALID, f"valid from {verdict.not_before_ms} ms")
        if now_ms > verdict.not_after_ms:
            return Rejected(Reason.EXPIRED, f"expired at {verdict.not_after_ms} ms")
        return verdict

    def verify_chain(
        self,
        der: bytes,
        kind: IdKind,
        *,
        name: str | None = None,
        intermediate: bytes | None = None,
    ) -> Verdict:
        """``verify`` without the clock: profile, revocation and chain only. The returned window
        says when the chain is valid; signed configuration (DESIGN-11 D4) judges each entry
        against its own timestamp rather than against the verifier's clock."""
        for blob in (der,) if intermediate is None else (der, intermediate):
            if type(blob) is not bytes:
                return Rejected(Reason.BAD_CERTIFICATE, "not bytes")
            if len(blob) > MAX_CERT_BYTES:
                return Rejected(Reason.TOO_LARGE, f"{len(blob)} bytes > {MAX_CERT_BYTES}")
        key = _memo_key(der, kind, intermediate)
        verdict = self._memo.get(key)
        if verdict is None:
            self.memo_misses += 1
            verdict = self._verify_chain(der, kind, intermediate)
            self._memo[key] = verdict
            if len(self._memo) > self._memo_entries:
                self._memo.popitem(last=False)
        else:
            self.memo_hits += 1
            self._memo.move_to_end(key)
        if isinstance(verdict, Rejected):
            return verdict
        if name is not None and verdict.spiffe_id.name != name:
            return Rejected(Reason.WRONG_NAME, f"certificate is for {verdict.spiffe_id.name!r}")
        return verdict

    def _verify_chain(self, der: bytes, kind: IdKind, intermediate: bytes | None) -> Verdict:
        """Steps 1-4 of the theory of operation: everything that does not depend on the clock."""
        try:
            leaf = parse_certificate(der)
            check_profile(leaf, kind, self.trust_domain)
            issuer = self._intermediate(kind, intermediate)
        except CertificateRejected as exc:
            return Rejected(exc.reason, exc.detail)
        for info in (leaf, issuer):
            if info is not None and info.fingerprint in self._revoked:
                return Rejected(Reason.REVOKED, f"{info.spiffe_id} is revoked")
        if not self._roots:
            return Rejected(Reason.UNKNOWN_ROOT, "no trusted root")
        chain_infos = [leaf] if issuer is None else [leaf, issuer]
        first_valid_ms = max(i.not_before_ms for i in chain_infos)
        if first_valid_ms > min(i.not_after_ms for i in chain_infos):
            return Rejected(Reason.EXPIRED, "the certificates are never valid at the same time")
        self.chain_verifications += 1
        try:
            verified = self._verifier(first_valid_ms).verify(
                leaf.certificate, [issuer.certificate] if issuer is not None else []
            )
        except VerificationError as exc:
            # The leaf and its intermediate are valid at the instant asked about, so whatever
            # failed (a signature, a CA flag, a root out of its validity) means no trusted root
            # vouches for this chain.
            return Rejected(Reason.UNKNOWN_ROOT, str(exc)[:200])
        except ValueError as exc:  # a certificate the library cannot process at all
            return Rejected(Reason.BAD_CERTIFICATE, str(exc)[:200])
        chain = verified.chain
        expected = 2 if issuer is None else 3
        if len(chain) != expected or (issuer is not None and chain[1] != issuer.certificate):
            return Rejected(Reason.BAD_ISSUER, f"chain of {len(chain)} certificates")
        root = self._roots.get(hashlib.sha256(chain[-1].tbs_certificate_bytes).digest())
        assert root is not None, "the library builds chains that end in the store it was given"
        return VerifiedIdentity(
            spiffe_id=leaf.spiffe_id,
            fingerprint=leaf.fingerprint,
            not_before_ms=max(first_valid_ms, root.not_before_ms),
            not_after_ms=min(root.not_after_ms, *(i.not_after_ms for i in chain_infos)),
            public_key=leaf.public_key,
            node=None if issuer is None else issuer.spiffe_id,
        )

    def _intermediate(self, kind: IdKind, intermediate: bytes | None) -> CertInfo | None:
        if kind is not IdKind.WORKLOAD:
            if intermediate is not None:
                raise CertificateRejected(Reason.BAD_ISSUER, f"a {kind.value} has no intermediate")
            return None
        if intermediate is None:
            raise CertificateRejected(Reason.BAD_ISSUER, "a workload needs its node certificate")
        try:
            info = parse_certificate(intermediate)
            check_profile(info, IdKind.NODE, self.trust_domain)
        except CertificateRejected as exc:
            raise CertificateRejected(Reason.BAD_ISSUER, f"node certificate: {exc}") from None
        return info

    def _verifier(self, at_ms: int) -> ClientVerifier:
        if self._store is None:
            self._store = Store([info.certificate for info in self._roots.values()])
        return (
            PolicyBuilder()
            .store(self._store)
            .time(_datetime(at_ms))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )


def _memo_key(der: bytes, kind: IdKind, intermediate: bytes | None) -> bytes:
    h = hashlib.sha256(kind.value.encode())
    h.update(len(der).to_bytes(4, "big"))
    h.update(der)
    if intermediate is not None:
        h.update(intermediate)
    return h.digest()


def _check_fingerprint(fingerprint: bytes) -> None:
    if type(fingerprint) is not bytes or len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"a fingerprint is {FINGERPRINT_BYTES} bytes")


def _datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
