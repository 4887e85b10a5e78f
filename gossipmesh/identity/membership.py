"""The SWIM core's ``Authority``, on node certificates: who may say what about membership.

Theory of operation
-------------------
The SWIM core (``gossipmesh/swim/authority.py``) hands us claims, certificates and signatures and
asks: is this valid now? ``MembershipAuthority`` answers for one node:

- *signing*: our alive claims and accusations, with the node key of our ``NodeCredentials``,
  over ``canonical(domain, cluster, ...)`` (DESIGN-11 D1): ``gossipmesh/alive/v1`` covers
  ``[name, incarnation, host, port, meta, certificate fingerprint]``; ``gossipmesh/accuse/v1``
  covers ``[kind, subject, incarnation, accuser]``. Binding the fingerprint into the alive claim
  means a claim cannot be moved under another certificate of the same name.
- *certificates*: a node certificate is valid for node ``name`` iff it chains to a root of the
  ``TrustStore``, names exactly ``spiffe://CLUSTER/node/NAME``, is not revoked and is inside its
  validity window at the wall clock ``wall_ms()``.
- *signatures*: ECDSA P-256 over the canonical bytes with the certificate's key.

Everything here is a pure function of (the bytes, the trust store's roots and revocations, the
clock), so it is memoised in a ``VerificationMemo``, which the simulator shares between all its
simulated nodes (a memo of a pure function is behaviour-neutral: DESIGN-11 D2) and an agent keeps
for itself. What a memo keeps, and when it forgets:

- the chain verdict of each certificate (DER bytes -> ``VerifiedIdentity`` or a structural
  ``Rejected``), forgotten when the trust roots change. Revocation and the validity window are
  checked on every use, so a revocation takes effect at the next call without re-verifying any
  chain (a 1,000-member cluster would otherwise spend ~250 ms re-verifying at each revocation);
- the outcome of each signature check, successes and failures, keyed by the signer's key
  fingerprint, the signature and the claim's fields (which determine the signed bytes: the memo
  never has to build them to answer), so a replayed forgery costs one dictionary lookup.

- the verdict on each whole claim (certificate, signature and fields -> valid, or why not),
  for the current revocations and within the certificate's validity window: a claim that many
  members relay, or that a simulator hands to 10,000 hosts, is then one dictionary lookup.

All are bounded. Every rejection comes back as a reason slug the core counts:
``cert.<Reason>`` for certificates, ``bad_signature`` for signatures.

This is library code (no core imports): the claims are taken by shape (``AliveStatement``,
``AccusationStatement``), which the core's ``AliveClaim`` and ``Accusation`` have.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from gossipmesh.identity.credentials import NodeCredentials
from gossipmesh.identity.profile import Reason, fingerprint
from gossipmesh.identity.signing import canonical, verify_signature
from gossipmesh.identity.truststore import Rejected, TrustStore, VerifiedIdentity
from gossipmesh.ids import Address

ALIVE_DOMAIN = b"gossipmesh/alive/v1"
ACCUSE_DOMAIN = b"gossipmesh/accuse/v1"
CERT_MEMO_ENTRIES = 20_000
SIGNATURE_MEMO_ENTRIES = 20_000
# Verdicts that depend on the clock, the revocations or the name asked about: never memoised
# here (the trust store's own memo answers them in microseconds).
_UNSTABLE = frozenset({Reason.REVOKED, Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.WRONG_NAME})
_TIMELESS = -(1 << 62), 1 << 62
_UNCACHEABLE = 1, 0  # an empty window: never served from the claim memo
ClaimVerdict = tuple[str | None, int, int]  # (reason or None, valid from ms, valid until ms)


class Miss(enum.Enum):
    MISS = "miss"


MISS = Miss.MISS  # "the memo holds no verdict" (None is a verdict: valid)


class AliveStatement(Protocol):
    """ "I, ``name``, am alive at ``incarnation``, at ``address``, with ``meta``" (the SWIM
    core's ``AliveClaim``)."""

    @property
    def name(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def address(self) -> Address: ...
    @property
    def meta(self) -> bytes: ...


class _Kind(Protocol):
    @property
    def value(self) -> str: ...


class AccusationStatement(Protocol):
    """ "I, ``accuser``, hold ``subject`` at ``incarnation`` to be ``kind``" (the SWIM core's
    ``Accusation``; ``kind.value`` is ``suspect``, ``dead`` or ``left``)."""

    @property
    def kind(self) -> _Kind: ...
    @property
    def subject(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def accuser(self) -> str: ...


def alive_bytes(cluster: str, claim: AliveStatement, cert_fingerprint: bytes) -> bytes:
    """The exact bytes an alive claim's signature covers."""
    a = claim.address
    return canonical(
        ALIVE_DOMAIN, cluster, claim.name, claim.incarnation, a.host, a.port, claim.meta,
        cert_fingerprint,
    )  # fmt: skip


def accusation_bytes(cluster: str, claim: AccusationStatement) -> bytes:
    """The exact bytes an accusation's signature covers."""
    return canonical(
        ACCUSE_DOMAIN, cluster, claim.kind.value, claim.subject, claim.incarnation, claim.accuser
    )


class VerificationMemo:
    """Memoised certificate chains and signature checks for one trust store (see above)."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        cert_entries: int = CERT_MEMO_ENTRIES,
        signature_entries: int = SIGNATURE_MEMO_ENTRIES,
    ) -> None:
        self.trust = trust
        self._cert_entries = cert_entries
        self._signature_entries = signature_entries
        self._certs: OrderedDict[bytes, VerifiedIdentity | Rejected] = OrderedDict()
        self._signatures: OrderedDict[tuple[object, ...], bool] = OrderedDict()
        self._claims: dict[tuple[object, ...], ClaimVerdict] = {}
        self._claims_version = trust.version
        self._version = trust.version
        self._roots = trust.root_fingerprints
        # For benchmarks and tests: real verifications (not memo hits).
        self.chain_checks = 0
        self.signature_checks = 0

    def certificate(self, cert: bytes, name: str, now_ms: int) -> VerifiedIdentity | Rejected:
        """``cert`` as a node certificate for exactly ``name`` at wall clock ``now_ms``."""
        trust = self.trust
        if trust.version != self._version:
            self._version = trust.version
            roots = trust.root_fingerprints
            if roots != self._roots:  # a new or distrusted root: every chain may differ
                self._roots = roots
                self._certs.clear()
                self._signatures.clear()
        certs = self._certs
        verdict = certs.get(cert)
        if verdict is None:
            self.chain_checks += 1
            verdict = trust.verify_node(cert, now_ms)
            if isinstance(verdict, Rejected) and verdict.reason in _UNSTABLE:
                return verdict  # revoked or out of its window now; the store re-checks cheaply
            certs[cert] = verdict
            if len(certs) > self._cert_entries:
                certs.popitem(last=False)
        else:
            certs.move_to_end(cert)
        if isinstance(verdict, Rejected):
            return verdict
        if verdict.spiffe_id.name != name:
            return Rejected(Reason.WRONG_NAME, f"certificate is for {verdict.spiffe_id.name!r}")
        if trust.is_revoked(verdict.fingerprint):
            return Rejected(Reason.REVOKED, f"{verdict.spiffe_id} is revoked")
        if now_ms < verdict.not_before_ms:
            return Rejected(Reason.NOT_YET_VALID, f"valid from {verdict.not_before_ms} ms")
        if now_ms > verdict.not_after_ms:
            return Rejected(Reason.EXPIRED, f"expired at {verdict.not_after_ms} ms")
        return verdict

    def known_claim(self, key: tuple[object, ...], now_ms: int) -> str | None | Miss:
        """The memoised verdict on a whole claim (``key`` determines it, for the current trust
        store), if one is held that is valid at ``now_ms``; else ``MISS``."""
        if self.trust.version != self._claims_version:
            self._claims.clear()  # a revocation or a root changed: verdicts may differ
            self._claims_version = self.trust.version
        hit = self._claims.get(key)
        if hit is not None and hit[1] <= now_ms <= hit[2]:
            return hit[0]
        return MISS

    def remember_claim(self, key: tuple[object, ...], now_ms: int, verdict: ClaimVerdict) -> None:
        if verdict[1] <= now_ms <= verdict[2]:
            claims = self._claims
            if len(claims) >= self._signature_entries:
                del claims[next(iter(claims))]  # the oldest
            claims[key] = verdict

    def signature(
        self,
        signer: VerifiedIdentity,
        signature: bytes,
        fields: tuple[object, ...],
        data: Callable[[], bytes],
    ) -> bool:
        """Did ``signer``'s key sign ``data()``, the bytes ``fields`` (domain first) determine?"""
        key = (signer.fingerprint, signature, *fields)
        sigs = self._signatures
        ok = sigs.get(key)
        if ok is None:
            self.signature_checks += 1
            ok = verify_signature(signer.public_key, data(), signature)
            sigs[key] = ok
            if len(sigs) > self._signature_entries:
                sigs.popitem(last=False)
        return ok


class MembershipAuthority:
    """The ``swim.authority.Authority`` of one node (see the module docstring)."""

    def __init__(
        self,
        credentials: NodeCredentials,
        memo: VerificationMemo,
        wall_ms: Callable[[], int],
    ) -> None:
        if memo.trust.trust_domain != credentials.cluster:
            raise ValueError("the trust store is for another cluster")
        self.credentials = credentials
        self.memo = memo
        self.wall_ms = wall_ms
        self.cluster = credentials.cluster
        self.name = credentials.name
        self._fingerprint = fingerprint(credentials.cert_der)

    @property
    def certificate(self) -> bytes:
        return self.credentials.cert_der

    def sign_alive(self, claim: AliveStatement) -> bytes:
        if claim.name != self.name:
            raise ValueError(f"{self.name} cannot sign an alive claim for {claim.name!r}")
        return self.credentials.signer.sign(alive_bytes(self.cluster, claim, self._fingerprint))

    def sign_accusation(self, claim: AccusationStatement) -> bytes:
        if claim.accuser != self.name:
            raise ValueError(f"{self.name} cannot sign an accusation by {claim.accuser!r}")
        return self.credentials.signer.sign(accusation_bytes(self.cluster, claim))

    def check_certificate(self, name: str, cert: bytes) -> str | None:
        verdict = self.memo.certificate(cert, name, self.wall_ms())
        return "cert." + verdict.reason if isinstance(verdict, Rejected) else None

    def verify_alive(self, claim: AliveStatement, cert: bytes, signature: bytes) -> str | None:
        a = claim.address
        fields = (ALIVE_DOMAIN, claim.name, claim.incarnation, a.host, a.port, claim.meta)
        key = (cert, signature, *fields)
        now_ms = self.wall_ms()
        known = self.memo.known_claim(key, now_ms)
        if known is not MISS:
            return known
        verdict = self._verify(
            claim.name, cert, signature, fields, now_ms,
            lambda fp: alive_bytes(self.cluster, claim, fp),
        )  # fmt: skip
        self.memo.remember_claim(key, now_ms, verdict)
        return verdict[0]

    def verify_accusation(
        self, claim: AccusationStatement, cert: bytes, signature: bytes
    ) -> str | None:
        fields = (ACCUSE_DOMAIN, claim.kind.value, claim.subject, claim.incarnation, claim.accuser)
        key = (cert, signature, *fields)
        now_ms = self.wall_ms()
        known = self.memo.known_claim(key, now_ms)
        if known is not MISS:
            return known
        verdict = self._verify(
            claim.accuser, cert, signature, fields, now_ms,
            lambda fp: accusation_bytes(self.cluster, claim),
        )  # fmt: skip
        self.memo.remember_claim(key, now_ms, verdict)
        return verdict[0]

    def _verify(
        self,
        signer: str,
        cert: bytes,
        signature: bytes,
        fields: tuple[object, ...],
        now_ms: int,
        data: Callable[[bytes], bytes],
    ) -> ClaimVerdict:
        """Certificate for ``signer``, then signature; the verdict and the window it holds in."""
        verdict = self.memo.certificate(cert, signer, now_ms)
        if isinstance(verdict, Rejected):
            window = _UNCACHEABLE if verdict.reason in _UNSTABLE else _TIMELESS
            return ("cert." + verdict.reason, *window)
        ok = self.memo.signature(verdict, signature, fields, lambda: data(verdict.fingerprint))
        return (None if ok else "bad_signature", verdict.not_before_ms, verdict.not_after_ms)
