"""The replicated config document: a delta-state CRDT of multi-value registers, of signed entries.

Theory of operation
-------------------
The document maps keys (``KIND/NAME``) to entities. Any replica accepts writes; replicas exchange
*deltas* (the few entries a write produced, or what a peer lacks) and merging is commutative,
associative and idempotent, so any delivery order, duplication or re-delivery converges.

Every write creates an **entry**: a *dot* ``(writer, counter)`` that names it within its key, an
HLC timestamp, the value (msgpack bytes, kept verbatim) or ``None`` for a delete (a *tombstone*),
and the write's **causal context** for its key: ``{writer: counter}`` covering every entry of that
key the writer had seen. A write supersedes exactly what it had seen, so:

- entry ``a`` is superseded by ``b`` when ``b.context[a.writer] >= a.counter``;
- entries that do not supersede each other are **siblings**: concurrent writes stay visible as a
  conflict until some later write (which has seen them all) replaces them;
- the **effective value** is the winner among the siblings that count (see "Authority") by a rule
  every replica applies alike: not suspect before suspect, then highest HLC, writer, counter.

**Signed entries, two-phase writes.** Every entry is signed by an operator (or, for trust
statements and operator revocations, by a root) over all its fields, context included; an injected
``EntryAuthority`` (``authority.py``) admits it or not. A local write is therefore two steps:
``prepare`` proposes the exact entries (writer, counter, HLC, context), an operator signs them
elsewhere, and ``commit`` checks that they are still current (same siblings, fresh counters and
time) and admitted before applying them. Nobody without an operator key can make an entry, under
any writer id, so a dot cannot be forged and a captured node can only replay what was signed.

**What a replica has integrated** is derived from signed entries only, per key: ``known[key]``
maps each writer to the highest counter among the entries held and their contexts. An incoming
entry with ``counter <= known[key][writer]`` was seen (or superseded) here and is skipped; that is
what makes re-delivery harmless. This is exact for honest writers: a writer's later entry of a key
presents the siblings it replaces, so it covers the writer's own earlier ones. Known maps never
shrink, and stay after a tombstone is collected, so a stale copy can never resurrect a key.

**Authority.** Stored entries *count* (win, are read, drive the data plane) according to a
``Policy`` derived from the document's own ``trust/``, ``cert/`` and ``revocation/`` entries:
the signer's certificate was valid at the entry's HLC time, its root trusted then, no revocation
applies. An entry that does not count is *void* and reads show why. The policy is a function of the
stored entries, so replicas that hold the same entries show the same values; it is recomputed
whenever an authority key changes, and the keys whose visible value changed are reported.

**Tombstones** are collected ``grace_ms`` after their HLC time, when no sibling ranks below them
(so the read cannot change): time-based and deterministic across replicas; the known map stays.

**Clock drift.** An incoming entry more than ``max_drift_ms`` ahead of our wall clock is kept but
marked *suspect* (it never beats a non-suspect sibling and does not drag our clock); more than
``MAX_FUTURE_MS`` ahead it is refused. The mark is monotonic and travels with the entry, so every
replica converges on the same winner. (The mark is not signed: a peer can demote a concurrent
sibling by marking it, never create or change one.)

**Digest.** ``root_hash`` is a Merkle root over SHA-256 (``digest.py``): equal roots mean the same
entries and the same known maps. This module performs no I/O and reads no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from gossipmesh.crdt.authority import EntryAuthority, Policy, SignerInfo
from gossipmesh.crdt.digest import MerkleDigest
from gossipmesh.crdt.entries import (
    AUTHORITY_PREFIXES,
    DEFAULT_HISTORY_PER_KEY,
    MAX_DOCUMENT_BYTES,
    MAX_ENTITY_BYTES,
    MAX_FUTURE_MS,
    MAX_KEY_BYTES,
    MAX_WRITER_BYTES,
    Conflict,
    Delta,
    Dot,
    Entry,
    MergeResult,
    Validator,
    Version,
    authority_rank,
    bounds_problem,
    same_content,
    unpack_value,
    with_suspect,
)
from gossipmesh.crdt.hlc import DEFAULT_MAX_DRIFT_MS, HybridClock, Timestamp
from gossipmesh.crdt.proposals import (
    DEFAULT_COMMIT_SKEW_MS,
    RefusedWriteError,
    StaleWriteError,
    WriterExhaustedError,
    check_commit,
    propose,
)
from gossipmesh.errors import UsageError
from gossipmesh.wire import BAD_BYTES


class Document:
    """One replica of the config document. Single owner; every method is synchronous and pure
    apart from mutating this object."""

    def __init__(
        self,
        authority: EntryAuthority,
        validator: Validator | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        max_entity_bytes: int = MAX_ENTITY_BYTES,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        history_per_key: int = DEFAULT_HISTORY_PER_KEY,
    ) -> None:
        self.authority = authority
        self.validator = validator
        self.clock = HybridClock(max_drift_ms)
        self.max_entity_bytes = max_entity_bytes
        self.max_document_bytes = max_document_bytes
        self._history_per_key = history_per_key
        self._entries: dict[str, dict[Dot, Entry]] = {}
        self._known: dict[str, dict[str, int]] = {}
        self._top: dict[str, int] = {}  # highest counter known per writer, over every key
        self._signers: dict[bytes, SignerInfo] = {}
        self._void: dict[tuple[str, Dot], str] = {}
        self._digest = MerkleDigest()
        self._size_bytes = 0
        self._history: dict[str, deque[Version]] = {}
        self._policy: Policy = authority.policy(self)
        self._policy_version = authority.version
        self.stats: dict[str, int] = {}

    # -----------------------------------------------------------------------------------------
    # Reads (what counts)

    def get(self, key: str) -> dict[str, Any] | None:
        """The effective value of ``key`` (the winner among counted siblings), or None."""
        winner = self.winner(key)
        return None if winner is None else winner.decoded()

    def winner(self, key: str) -> Entry | None:
        counted = [e for e in self._entries.get(key, {}).values() if not self.void_reason(e)]
        return max(counted, key=Entry.rank) if counted else None

    def absent(self, key: str) -> bool:
        """Nothing to delete: no entries, or the counted winner is already a tombstone."""
        if not self._entries.get(key):
            return True
        winner = self.winner(key)
        return winner is not None and winner.value is None

    def void_reason(self, entry: Entry) -> str | None:
        """Why a stored entry does not count (``revoked``, ``expired``, ...), or None."""
        return self._void.get((entry.key, entry.dot))

    def items(self, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
        """Live keys (counted winner not a tombstone) under ``prefix``, sorted."""
        for key in sorted(k for k in self._entries if k.startswith(prefix)):
            winner = self.winner(key)
            if winner is not None and winner.value is not None:
                yield key, unpack_value(winner.value)

    def siblings(self, key: str) -> tuple[Entry, ...]:
        """Every stored entry of ``key``: the counted ones first, winner first."""
        return tuple(sorted(self._entries.get(key, {}).values(),
                            key=lambda e: (not self.void_reason(e), e.rank()), reverse=True))  # fmt: skip

    def conflicts(self) -> list[Conflict]:
        out = []
        for key in sorted(self._entries):
            counted = [e for e in self.siblings(key) if not self.void_reason(e)]
            if len({e.value for e in counted}) > 1:  # the same value twice is no conflict
                out.append(Conflict(key, counted[0], tuple(counted)))
        return out

    def history(self, key: str) -> list[Version]:
        """Current siblings then the last superseded versions seen here, newest first. Local: a
        replica only lists versions it saw before they were replaced."""
        current = [self._version(e, True) for e in self.siblings(key)]
        past = sorted(self._history.get(key, ()), key=lambda v: (v.hlc, v.writer), reverse=True)
        return current + past

    def signer(self, fingerprint: bytes) -> SignerInfo | None:
        return self._signers.get(fingerprint)

    def stored(self, key: str) -> tuple[Entry, ...]:
        return tuple(self._entries.get(key, {}).values())

    def stored_under(self, prefix: str) -> Iterator[Entry]:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            yield from self._entries[key].values()

    def known(self, key: str) -> dict[str, int]:
        return dict(self._known.get(key, {}))

    def known_maps(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in self._known.items()}

    def has_seen(self, key: str, dot: Dot) -> bool:
        return dot[1] <= self._known.get(key, {}).get(dot[0], 0)

    def top(self, writer: str) -> int:
        return self._top.get(writer, 0)

    def writers(self) -> list[str]:
        """Every writer id this document holds an entry of (or held one, before a collection)."""
        return list(self._top)

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def root_hash(self) -> bytes:
        return self._digest.root

    def bucket_hashes(self) -> dict[int, bytes]:
        return self._digest.bucket_hashes()

    def keys_in(self, buckets: Iterable[int]) -> list[str]:
        return self._digest.keys_in(buckets)

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        for siblings in self._entries.values():
            yield from siblings.values()

    def max_hlc(self) -> Timestamp:
        return max((e.hlc for e in self.entries()), default=Timestamp(0, 0))

    # -----------------------------------------------------------------------------------------
    # Local writes: prepare, then commit what an operator signed

    def prepare(
        self, items: Sequence[tuple[str, Mapping[str, Any] | None]], writer: str, wall_ms: int
    ) -> tuple[Entry, ...]:
        """The unsigned entries that would write ``items`` (None deletes) as one batch. Raises
        UsageError/LimitExceededError (or what the validator raises); changes nothing but the HLC.
        Deleting an absent key is left out. See ``proposals.propose``."""
        return propose(self, items, writer, wall_ms)

    def commit(
        self,
        entries: Sequence[Entry],
        writer: str,
        wall_ms: int,
        max_skew_ms: int = DEFAULT_COMMIT_SKEW_MS,
    ) -> MergeResult:
        """Apply signed entries made from ``prepare`` by this replica's ``writer``, atomically.

        Raises StaleWriteError (prepare again), RefusedWriteError (signature, chain, revoked,
        void ...) or UsageError/LimitExceededError, with nothing changed (``check_commit``)."""
        if not entries:
            return MergeResult(frozenset())
        batch, signers = check_commit(self, entries, writer, wall_ms, max_skew_ms)
        authority = any(authority_rank(e.key) < len(AUTHORITY_PREFIXES) for e in batch)
        before = self._visible_winners() if authority else None
        for e in batch:
            self.clock.observe(e.hlc, wall_ms)
            self._apply(e, signers[e.dot])
        voided = self._after_authority_change(before)
        self._count("local_writes", len(batch))
        changed = frozenset(e.key for e in batch) | voided
        return MergeResult(changed, len(batch), forward=Delta(tuple(batch)), voided=voided)

    # -----------------------------------------------------------------------------------------
    # Merging

    def merge(self, delta: Delta, wall_ms: int, *, check_clock: bool = True) -> MergeResult:
        """Fold a peer's delta (or full state) in. Never raises on bad content: entries that fail
        bounds, limits, validation or the authority are refused and counted (``refused_*``).
        ``check_clock=False`` (loading our own store) skips the too-far-in-the-future refusal."""
        ordered = sorted(delta.entries, key=lambda e: authority_rank(e.key))
        changed: set[str] = set()
        forward: list[Entry] = []
        refused: list[str] = []
        drifted: list[Dot] = []
        counts = {"accepted": 0, "duplicates": 0}
        authority_before = self._visible_winners() if any(
            authority_rank(e.key) < len(AUTHORITY_PREFIXES) for e in ordered) else None  # fmt: skip

        def one(incoming: Entry) -> str | None:
            outcome = self._merge_one(incoming, wall_ms, check_clock, drifted)
            if outcome is None:
                counts["duplicates"] += 1
                return None
            if isinstance(outcome, str):
                return outcome
            forward.append(outcome)
            changed.add(outcome.key)
            counts["accepted"] += 1
            return None

        # Trust statements may vouch for the roots that signed other statements of the same
        # delta: retry the ones with an unknown signer while a pass admits something.
        pending = [e for e in ordered if authority_rank(e.key) == 0]
        while pending:
            retry = []
            for e in pending:
                reason = one(e)
                if reason == "unknown_signer":
                    retry.append(e)
                elif reason is not None:
                    refused.append(reason)
            if len(retry) == len(pending):
                break
            pending = retry
        refused += ["unknown_signer"] * len(pending)
        for incoming in ordered:
            if authority_rank(incoming.key) != 0:
                reason = one(incoming)
                if reason is not None:
                    refused.append(reason)
        for reason in refused:
            self._count(f"refused_{reason}")
        voided = self._after_authority_change(authority_before)
        self._count("merged_entries", counts["accepted"])
        self._count("duplicate_entries", counts["duplicates"])
        fwd = Delta(tuple(forward)) if forward else None
        return MergeResult(frozenset(changed) | voided, counts["accepted"], counts["duplicates"],
                           len(refused), tuple(refused), tuple(drifted), fwd, voided)  # fmt: skip

    def _merge_one(
        self, incoming: Entry, wall_ms: int, check_clock: bool, drifted: list[Dot]
    ) -> Entry | str | None:
        """The entry as stored (new, or a newly suspect copy), a refusal slug, or None (seen)."""
        if self.has_seen(incoming.key, incoming.dot):
            held = self._entries.get(incoming.key, {}).get(incoming.dot)
            if held is None or not incoming.suspect or held.suspect:
                return None
            if not same_content(held, incoming):
                return "equivocation"  # the same dot signed twice with different content
            # The suspect mark only ever grows; take it so every replica picks alike.
            marked = with_suspect(held)
            self._replace(held, marked)
            return marked
        problem = bounds_problem(incoming)
        if problem is not None:
            return "bounds"
        reason = self.content_refusal(incoming, self._size_bytes)
        if reason is not None:
            return reason
        if check_clock and incoming.hlc.wall_ms - wall_ms > MAX_FUTURE_MS:
            return "future"
        admitted = self.authority.admit(incoming, self)
        if isinstance(admitted, str):
            return admitted
        entry = incoming
        if self.clock.is_too_far_ahead(entry.hlc, wall_ms):
            drifted.append(entry.dot)
            self._count("drift_exceeded")
            if not entry.suspect:
                entry = with_suspect(entry)
        else:
            self.clock.observe(entry.hlc, wall_ms)
        self._apply(entry, admitted)
        return entry

    def content_refusal(self, entry: Entry, size_now: int) -> str | None:
        """Why an entry's key or value must not be stored, as a counter slug, or None."""
        if not entry.key or len(entry.key.encode()) > MAX_KEY_BYTES:
            return "key"
        if len(entry.writer.encode()) > MAX_WRITER_BYTES:
            return "writer"
        if entry.value is None:
            return None
        if len(entry.value) > self.max_entity_bytes:
            return "entity_size"
        if size_now + len(entry.value) - self.held_bytes(entry.key) > self.max_document_bytes:
            return "document_size"
        try:
            value = unpack_value(entry.value)
        except BAD_BYTES:
            return "value_encoding"
        if self.validator is not None:
            try:
                self.validator(entry.key, value)
            except UsageError:  # what a validator raises for a bad value; anything else is a bug
                return "invalid"
        return None

    # -----------------------------------------------------------------------------------------
    # Anti-entropy and storage support

    def entries_of(self, keys: Iterable[str]) -> list[Entry]:
        out: list[Entry] = []
        for key in keys:
            out += sorted(self._entries.get(key, {}).values(), key=lambda e: e.dot)
        return out

    def missing_for(
        self, keys: Iterable[str], remote: Mapping[str, Mapping[str, int]]
    ) -> list[Entry]:
        """Our entries of ``keys`` that a replica with known maps ``remote`` lacks. Suspect ones
        always go along: their mark may be news where the dot is not."""
        return [e for e in self.entries_of(keys)
                if e.suspect or e.counter > remote.get(e.key, {}).get(e.writer, 0)]  # fmt: skip

    def full_state(self) -> Delta:
        """Every stored entry: merging it into an empty document reproduces this one's entries
        (the known maps of collected tombstones travel separately, see ``restore_known``)."""
        return Delta(tuple(self.entries_of(sorted(self._entries))))

    def restore_known(self, known: Mapping[str, Mapping[str, int]]) -> None:
        """After loading our own snapshot: the known maps it saved (they outlive collected
        tombstones). Never from a peer: known maps are not signed."""
        for key, pairs in known.items():
            mine = self._known.setdefault(key, {})
            for w, c in pairs.items():
                if c > mine.get(w, 0):
                    mine[w] = c
                    self._top[w] = max(self._top.get(w, 0), c)
            self._touch(key)

    def collect_garbage(self, wall_ms: int, grace_ms: int) -> list[str]:
        """Drop tombstones older than ``grace_ms`` that no sibling ranks below (the read stays
        the same). The key's known map stays. Returns the keys touched."""
        collected = []
        for key in list(self._entries):
            siblings = self._entries[key]
            for t in [e for e in siblings.values() if e.value is None]:
                if wall_ms - t.hlc.wall_ms < grace_ms:
                    continue
                if any(s.rank() < t.rank() for s in siblings.values() if s is not t):
                    continue
                self._remove(t, superseded=False)
                collected.append(key)
        self._count("tombstones_collected", len(collected))
        return collected

    def refresh_policy(self) -> frozenset[str]:
        """Recompute which entries count (the authority's anchors changed); the keys whose
        visible value changed."""
        return self._after_authority_change(self._visible_winners(), force=True)

    def restore_clock(self) -> None:
        """After loading from disk: never issue an HLC at or below one already written."""
        self.clock.restore(self.max_hlc())

    # -----------------------------------------------------------------------------------------
    # Internals

    def _apply(self, entry: Entry, signer: SignerInfo) -> None:
        """Store an admitted entry: learn its dot and context, drop what it supersedes."""
        self._signers[signer.fingerprint] = signer
        known = self._known.setdefault(entry.key, {})
        for w, c in (*entry.context, entry.dot):
            if c > known.get(w, 0):
                known[w] = c
                if c > self._top.get(w, 0):
                    self._top[w] = c
        for s in [s for s in self._entries.get(entry.key, {}).values() if entry.covers(s)]:
            self._remove(s, superseded=True)
        self._entries.setdefault(entry.key, {})[entry.dot] = entry
        self._size_bytes += entry.size_bytes
        void = self._policy.void_reason(entry, signer)
        if void is not None:
            self._void[(entry.key, entry.dot)] = void
        self._touch(entry.key)

    def _replace(self, old: Entry, new: Entry) -> None:
        self._entries[old.key][old.dot] = new
        self._touch(old.key)

    def _remove(self, entry: Entry, superseded: bool) -> None:
        siblings = self._entries[entry.key]
        del siblings[entry.dot]
        if not siblings:
            del self._entries[entry.key]
        self._void.pop((entry.key, entry.dot), None)
        self._size_bytes -= entry.size_bytes
        if superseded:
            self._record_past(entry)
        self._touch(entry.key)

    def _touch(self, key: str) -> None:
        self._digest.update(key, self._known.get(key, {}), self._entries.get(key, {}).values())

    def held_bytes(self, key: str) -> int:
        return sum(e.size_bytes for e in self._entries.get(key, {}).values())

    def _visible_winners(self) -> dict[str, Dot | None]:
        out: dict[str, Dot | None] = {}
        for key in self._entries:
            w = self.winner(key)
            out[key] = None if w is None else w.dot
        return out

    def _after_authority_change(
        self, before: dict[str, Dot | None] | None, force: bool = False
    ) -> frozenset[str]:
        """Recompute the policy and every entry's void mark; the keys whose winner changed."""
        if before is None and not force and self.authority.version == self._policy_version:
            return frozenset()
        if before is None:
            before = self._visible_winners()
        self._policy = self.authority.policy(self)
        self._policy_version = self.authority.version
        self._void.clear()
        for e in self.entries():
            signer = self._signers.get(e.signer)
            reason = "unknown_signer" if signer is None else self._policy.void_reason(e, signer)
            if reason is not None:
                self._void[(e.key, e.dot)] = reason
        after = self._visible_winners()
        return frozenset(k for k in set(before) | set(after) if before.get(k) != after.get(k))

    def _version(self, e: Entry, current: bool) -> Version:
        try:
            value = e.decoded()
        except BAD_BYTES:  # bytes that are not a mapping: the history shows no value
            value = None
        return Version(e.writer, e.counter, e.hlc, value, current, e.suspect, e.signer,
                       self.void_reason(e))  # fmt: skip

    def _record_past(self, entry: Entry) -> None:
        if self._history_per_key <= 0:
            return
        past = self._history.get(entry.key)
        if past is None:
            past = self._history[entry.key] = deque(maxlen=self._history_per_key)
        past.append(self._version(entry, False))

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self.stats[name] = self.stats.get(name, 0) + n


# The value types are re-exported: callers that hold a Document usually need them too.
__all__ = [
    "DEFAULT_COMMIT_SKEW_MS",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTITY_BYTES",
    "MAX_KEY_BYTES",
    "MAX_WRITER_BYTES",
    "Conflict",
    "Delta",
    "Document",
    "Dot",
    "Entry",
    "MergeResult",
    "RefusedWriteError",
    "StaleWriteError",
    "Version",
    "WriterExhaustedError",
]
