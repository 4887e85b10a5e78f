"""``ConfigAuthority``: the config document's ``EntryAuthority``, built on ``gossipmesh.identity``.

Theory of operation
-------------------
**Admission** (is an entry stored?) is decided from the entry and the document alone:

1. who signed: a root (its fingerprint is a configured *anchor* root, or the subject of a stored
   ``trust/root/FP`` statement, which carries the root's DER), or an operator whose certificate
   is stored as ``cert/FP`` (or is the entry itself, for a ``cert/`` entry) and chains to such a
   root (``TrustStore.verify_chain``: profile and chain, not time);
2. may that signer write that key: roots sign ``trust/`` and ``revocation/`` entries only;
   operators sign everything else, and ``revocation/`` entries of nodes; nobody deletes a
   ``cert/``, ``revocation/`` or ``trust/`` entry;
3. the signature over ``config.signing.entry_bytes`` verifies with the signer's key.

A refusal is a slug (``unknown_signer``, ``bad_signature``, ``unauthorized``, ...) the document
counts; anti-entropy offers a refused entry again later (once its root or certificate arrived).

**Policy** (does a stored entry count?) is ``TrustPolicy``, derived from the stored statements:

- the *root timeline*: anchors are trusted from the beginning; a statement counts only if its
  signing root is trusted at the statement's time, and the latest counting one about a root sets
  its state: trusted, distrusted from time T (retired: trusted before T), or never trusted
  (compromised). Judging a statement needs its signer's state, which statements set: the policy
  iterates to a fixed point (each pass judges against the previous pass's states), so a replica
  configured with only the new root of a rotation reaches the same states as one configured with
  the old;
- *operator revocations*: root-signed ``revocation/FP`` entries that count;
- an operator's entry counts iff its HLC time is inside its certificate's window, its root is
  trusted at that time, and no revocation applies (retired: from the revocation's time on;
  compromised: always). A root's entry counts iff the root is trusted at its time.

Both are pure functions of the stored entries and the anchors, so replicas that hold the same
entries and were given the same roots agree. Signature checks are memoised (``SignatureMemo``, a
pure function, so a simulator may share one across all its nodes); chain checks are memoised by
the ``TrustStore``.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature

from gossipmesh.config.signing import entry_bytes
from gossipmesh.config.trust import ROOT_PREFIX
from gossipmesh.crdt.authority import OPERATOR, ROOT, DocumentView, SignerInfo
from gossipmesh.crdt.entries import CERT_PREFIX, REVOCATION_PREFIX, TRUST_PREFIX, Entry
from gossipmesh.identity import (
    CertificateRejected,
    CertInfo,
    IdKind,
    Rejected,
    TrustStore,
    parse_certificate,
    verify_signature,
)
from gossipmesh.wire import BAD_BYTES

MEMO_ENTRIES = 200_000
MAX_POLICY_PASSES = 8
ROOT_STATEMENTS = f"{TRUST_PREFIX}{ROOT_PREFIX}"


class SignatureMemo:
    """A bounded LRU of signature checks: (message, signature, key) -> valid."""

    def __init__(self, max_entries: int = MEMO_ENTRIES) -> None:
        self._memo: OrderedDict[bytes, bool] = OrderedDict()
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def verify(self, info: CertInfo, message: bytes, signature: bytes) -> bool:
        key = hashlib.sha256(info.fingerprint + signature + message).digest()
        found = self._memo.get(key)
        if found is not None:
            self.hits += 1
            self._memo.move_to_end(key)
            return found
        self.misses += 1
        ok = verify_signature(info.public_key, message, signature)
        self._memo[key] = ok
        if len(self._memo) > self._max:
            self._memo.popitem(last=False)
        return ok


def _decoded(entry: Entry) -> dict[str, object] | None:
    if entry.value is None:
        return None
    try:
        value = msgpack.unpackb(entry.value, raw=False, strict_map_key=True)
    except BAD_BYTES:
        return None
    return value if isinstance(value, dict) else None


def _der_of(entry: Entry) -> bytes | None:
    value = _decoded(entry)
    text = None if value is None else value.get("der")
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


class ConfigAuthority:
    """Admission and policy for one cluster's config document (see the module docstring)."""

    def __init__(
        self, cluster: str, anchors: Iterable[bytes], memo: SignatureMemo | None = None
    ) -> None:
        self.cluster = cluster
        self._anchors: dict[bytes, CertInfo] = {}
        self._version = 0
        self.memo = memo if memo is not None else SignatureMemo()
        self._stores: dict[frozenset[bytes], TrustStore] = {}
        self._parsed: dict[bytes, CertInfo | None] = {}
        # Chain checks by (certificate, known roots): pure, so kept (bounded).
        self._signers: dict[tuple[bytes, frozenset[bytes]], SignerInfo | str] = {}
        self.set_anchors(anchors)

    @property
    def version(self) -> int:
        return self._version

    @property
    def anchors(self) -> dict[bytes, bytes]:
        return {fp: info.der for fp, info in self._anchors.items()}

    def set_anchors(self, roots: Iterable[bytes]) -> bool:
        """The configured roots (a node's roots.pem); True (and a new version) if they changed."""
        infos = {}
        for der in roots:
            info = self._parse(der)
            if info is None or info.kind is not IdKind.ROOT:
                raise ValueError("an anchor must be a root certificate")
            infos[info.fingerprint] = info
        if infos.keys() == self._anchors.keys():
            return False
        self._anchors = infos
        self._version += 1
        return True

    # ---- admission --------------------------------------------------------------------------

    def known_roots(self, view: DocumentView) -> dict[bytes, CertInfo]:
        """Anchors plus every root a stored statement carries (trusted or not: a distrusted
        root's old entries must still verify)."""
        roots = dict(self._anchors)
        for e in view.stored_under(ROOT_STATEMENTS):
            der = _der_of(e)
            info = None if der is None else self._parse(der)
            if info is not None and info.kind is IdKind.ROOT:
                roots.setdefault(info.fingerprint, info)
        return roots

    def admit(self, entry: Entry, view: DocumentView) -> SignerInfo | str:
        if not entry.is_signed:
            return "unsigned"
        key = entry.key
        if key.startswith((TRUST_PREFIX, CERT_PREFIX, REVOCATION_PREFIX)) and entry.value is None:
            return "immutable"
        roots = self.known_roots(view)
        root = roots.get(entry.signer)
        if root is not None:
            if not key.startswith((TRUST_PREFIX, REVOCATION_PREFIX)):
                return "unauthorized"  # a root signs trust statements and revocations only
            info, signer = root, SignerInfo(root.fingerprint, ROOT, root.spiffe_id.name or "root",
                                            root.fingerprint, root.not_before_ms,
                                            root.not_after_ms)  # fmt: skip
        else:
            if key.startswith(TRUST_PREFIX):
                # Only roots sign statements: an operator's is unauthorized; an unknown signer may
                # be a root that another statement of the same delta vouches for.
                return "unauthorized" if view.stored(f"{CERT_PREFIX}{entry.signer.hex()}") else (
                    "unknown_signer")  # fmt: skip
            if key.startswith(CERT_PREFIX):
                der = _der_of(entry)
                if der is None or key[len(CERT_PREFIX) :] != entry.signer.hex():
                    return "cert_mismatch"
            else:
                der = self._operator_cert(entry.signer, view)
                if der is None:
                    return "unknown_signer"
            found = self._operator(der, roots)
            if isinstance(found, str):
                return found
            info, signer = found
            if info.fingerprint != entry.signer:
                return "cert_mismatch"
            if key.startswith(REVOCATION_PREFIX) and (_decoded(entry) or {}).get("kind") != "node":
                return "unauthorized"  # operators revoke nodes; operator revocations need a root
        message = entry_bytes(self.cluster, *entry.signed_fields())
        if not self.memo.verify(info, message, entry.signature):
            return "bad_signature"
        return signer

    def _operator_cert(self, fp: bytes, view: DocumentView) -> bytes | None:
        for e in view.stored(f"{CERT_PREFIX}{fp.hex()}"):
            der = _der_of(e)
            if der is not None:
                return der
        return None

    def _operator(
        self, der: bytes, roots: dict[bytes, CertInfo]
    ) -> tuple[CertInfo, SignerInfo] | str:
        info = self._parse(der)
        if info is None:
            return "bad_certificate"
        anchors = frozenset(roots)
        memo_key = (info.fingerprint, anchors)
        found = self._signers.get(memo_key)
        if found is None:
            found = self._signers[memo_key] = self._chain(info, roots, anchors)
            if len(self._signers) > 4096:
                self._signers.pop(next(iter(self._signers)))
        return found if isinstance(found, str) else (info, found)

    def _chain(
        self, info: CertInfo, roots: dict[bytes, CertInfo], anchors: frozenset[bytes]
    ) -> SignerInfo | str:
        der = info.der
        store = self._stores.get(anchors)
        if store is None:
            if len(self._stores) > 16:
                self._stores.clear()
            store = self._stores[anchors] = TrustStore(
                self.cluster, [r.der for r in roots.values()]
            )
        verdict = store.verify_chain(der, IdKind.OPERATOR)
        if isinstance(verdict, Rejected):
            return "untrusted_chain"
        issuer = next((fp for fp, r in roots.items() if _issued_by(info, r)), None)
        if issuer is None:
            return "untrusted_chain"
        return SignerInfo(info.fingerprint, OPERATOR, info.spiffe_id.name, issuer,
                          verdict.not_before_ms, verdict.not_after_ms)  # fmt: skip

    def _parse(self, der: bytes) -> CertInfo | None:
        h = hashlib.sha256(der).digest()
        if h not in self._parsed:
            if len(self._parsed) > 4096:
                self._parsed.clear()
            try:
                self._parsed[h] = parse_certificate(der)
            except CertificateRejected:
                self._parsed[h] = None
        return self._parsed[h]

    # ---- policy -----------------------------------------------------------------------------

    def policy(self, view: DocumentView) -> TrustPolicy:
        return TrustPolicy.build(view, self.known_roots(view), set(self._anchors))


def _issued_by(leaf: CertInfo, root: CertInfo) -> bool:
    try:
        leaf.certificate.verify_directly_issued_by(root.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class RootState:
    """A root's standing: trusted for ever, until ``until_ms`` (retired), or never (compromised)."""

    until_ms: int | None = None
    compromised: bool = False

    def trusted_at(self, t_ms: int) -> bool:
        return not self.compromised and (self.until_ms is None or t_ms < self.until_ms)


@dataclass(frozen=True, slots=True)
class RevocationState:
    at_ms: int
    compromised: bool


class TrustPolicy:
    """Which stored entries count (see the module docstring). Immutable once built."""

    def __init__(
        self,
        roots: dict[bytes, RootState],
        root_ders: dict[bytes, bytes],
        revoked: dict[bytes, RevocationState],
        statement_void: dict[tuple[str, tuple[str, int]], str],
    ) -> None:
        self.roots = roots
        self.root_ders = root_ders
        self.revoked_operators = revoked
        self._statement_void = statement_void

    @classmethod
    def build(
        cls, view: DocumentView, known: dict[bytes, CertInfo], anchors: set[bytes]
    ) -> TrustPolicy:
        ders = {fp: info.der for fp, info in known.items()}
        statements = sorted((e for e in view.stored_under(ROOT_STATEMENTS) if e.value is not None),
                            key=lambda e: (e.hlc, e.key, e.writer, e.counter))  # fmt: skip
        # Each pass judges every statement against the root states the previous pass ended
        # with, so a statement signed by a root that a later statement vouches for (an old root
        # known to a new replica only through its distrust) counts, whichever roots this replica
        # was configured with. Honest histories settle in two or three passes; the cap keeps
        # conflicting root keys (each distrusting the other) from looping.
        roots = {fp: RootState() for fp in anchors}
        void: dict[tuple[str, tuple[str, int]], str] = {}
        for _ in range(MAX_POLICY_PASSES):
            after, void = cls._pass(view, statements, roots, anchors)
            if after == roots:
                break
            roots = after
        policy = cls(roots, ders, {}, void)
        for r in view.stored_under(REVOCATION_PREFIX):
            signer = view.signer(r.signer)
            revocation = _decoded(r)
            if signer is None or signer.kind != ROOT or revocation is None:
                continue
            if policy.void_reason(r, signer) is not None:
                continue
            fp = bytes.fromhex(r.key[len(REVOCATION_PREFIX) :])
            revoked = RevocationState(r.hlc.wall_ms, revocation.get("mode") == "compromised")
            old = policy.revoked_operators.get(fp)
            if old is not None:  # several: compromised wins, else the earliest time
                revoked = RevocationState(min(old.at_ms, revoked.at_ms),
                                          old.compromised or revoked.compromised)  # fmt: skip
            policy.revoked_operators[fp] = revoked
        return policy

    @staticmethod
    def _pass(
        view: DocumentView,
        statements: list[Entry],
        judge: dict[bytes, RootState],
        anchors: set[bytes],
    ) -> tuple[dict[bytes, RootState], dict[tuple[str, tuple[str, int]], str]]:
        """One pass: root states from the counting statements (the latest about a root wins)."""
        roots = {fp: RootState() for fp in anchors}
        void: dict[tuple[str, tuple[str, int]], str] = {}
        for s in statements:
            signer = view.signer(s.signer)
            t = s.hlc.wall_ms
            state = None if signer is None else judge.get(signer.fingerprint)
            if signer is None or state is None or not state.trusted_at(t):
                void[(s.key, s.dot)] = "root_distrusted"
                continue
            if not signer.not_before_ms <= t <= signer.not_after_ms:
                void[(s.key, s.dot)] = "expired"
                continue
            value = _decoded(s) or {}
            subject = bytes.fromhex(s.key[len(ROOT_STATEMENTS) :])
            if value.get("state") == "distrusted":
                compromised = value.get("mode") == "compromised"
                roots[subject] = RootState(None if compromised else t, compromised)
            else:
                roots[subject] = RootState()
        return roots, void

    def root_trusted_at(self, fp: bytes, t_ms: int) -> bool:
        state = self.roots.get(fp)
        return state is not None and state.trusted_at(t_ms)

    def void_reason(self, entry: Entry, signer: SignerInfo) -> str | None:
        reason = self._statement_void.get((entry.key, entry.dot))
        if reason is not None:
            return reason
        t = entry.hlc.wall_ms
        if t < signer.not_before_ms:
            return "not_yet_valid"
        if t > signer.not_after_ms:
            return "expired"
        if not self.root_trusted_at(signer.root, t):
            return "root_distrusted"
        revoked = self.revoked_operators.get(signer.fingerprint)
        if revoked is not None and (revoked.compromised or t >= revoked.at_ms):
            return "revoked"
        return None

    def trusted_roots(self, now_ms: int) -> dict[bytes, bytes]:
        """The roots trusted at ``now_ms`` whose DER we hold: what the mesh should accept."""
        return {fp: self.root_ders[fp] for fp, s in self.roots.items()
                if s.trusted_at(now_ms) and fp in self.root_ders}  # fmt: skip


__all__ = ["ConfigAuthority", "RevocationState", "RootState", "SignatureMemo", "TrustPolicy"]
