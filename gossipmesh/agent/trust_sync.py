"""Keeps the agent's ``TrustStore`` in step with the config document's revocations and roots.

Theory of operation
-------------------
Revocations and root rotation live in the replicated document (DESIGN-11 D5): ``revocation/FP``
entries and ``trust/root/FP`` statements, signed, judged by the document's ``TrustPolicy``. The
other mesh layers (SWIM membership claims, node records, and issue 12's mTLS) consult one
``TrustStore``: ``agent.identity.trust``. ``TrustSync.sync(now_ms)`` makes that store say what the
document says at wall-clock ``now_ms``:

- **revoked** = the fingerprint of every ``revocation/`` entry that counts and whose time has
  come (both modes: a retired certificate is refused from the revocation on, like a compromised
  one); ``TrustStore.set_revoked`` bumps the store's version only on a change, which drops its
  memo, so the next check of a revoked node fails;
- **roots** = the configured roots and the document's trusted roots, minus those distrusted by
  ``now_ms`` (``TrustPolicy.trusted_roots``). A root the document never mentions is left alone.

It runs after every change of an authority key (``concerns``) and once a minute (a distrust or a
revocation dated a little ahead of this node's clock takes effect when its time comes). Each run
is a handful of dictionary operations: the policy is already computed by the document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gossipmesh.config.authority import TrustPolicy
from gossipmesh.crdt.document import Document
from gossipmesh.crdt.entries import AUTHORITY_PREFIXES, REVOCATION_PREFIX
from gossipmesh.identity import CredentialError, TrustStore

__all__ = ["TrustSync"]


class TrustSync:
    def __init__(self, doc: Document, trust: TrustStore, counters: Counter[str]) -> None:
        self.doc = doc
        self.trust = trust
        self.counters = counters

    @staticmethod
    def concerns(keys: Iterable[str]) -> bool:
        return any(k.startswith(AUTHORITY_PREFIXES) for k in keys)

    def revoked(self, now_ms: int) -> set[bytes]:
        out = set()
        for e in self.doc.stored_under(REVOCATION_PREFIX):
            if e.value is None or self.doc.void_reason(e) is not None or e.hlc.wall_ms > now_ms:
                continue
            try:
                out.add(bytes.fromhex(e.key[len(REVOCATION_PREFIX) :]))
            except ValueError:
                continue  # the schema admits only hex names; nothing else can be stored
        return {fp for fp in out if len(fp) == 32}

    def sync(self, now_ms: int) -> bool:
        """Carry the document's view into the trust store; True if the store changed."""
        changed = self.trust.set_revoked(self.revoked(now_ms))
        policy = self.doc.policy
        if isinstance(policy, TrustPolicy):
            changed |= self._sync_roots(policy, now_ms)
        if changed:
            self.counters["trust.updates"] += 1
        return changed

    def _sync_roots(self, policy: TrustPolicy, now_ms: int) -> bool:
        wanted = policy.trusted_roots(now_ms)
        changed = False
        for fp in self.trust.root_fingerprints - set(wanted):
            if fp in policy.roots:  # distrusted by the document (never one it does not know)
                changed |= self.trust.remove_root(fp)
        for fp, der in wanted.items():
            if fp not in self.trust.root_fingerprints:
                try:
                    changed |= self.trust.add_root(der)
                except CredentialError:
                    self.counters["trust.root_refused"] += 1
        return changed
