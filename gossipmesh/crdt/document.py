"""The replicated config document: a delta-state CRDT of multi-value registers.

Theory of operation
-------------------
The document maps keys (``KIND/NAME``) to entities. Any replica accepts writes; replicas exchange
*deltas* (the few entries a write produced, or what a peer lacks) and merging is commutative,
associative and idempotent, so any delivery order, duplication or re-delivery converges.

Every write creates an **entry**: a *dot* ``(writer, counter)`` that names it uniquely (each
writer counts its own writes), an HLC timestamp, the value (msgpack bytes, kept verbatim so
hashes and signatures never depend on re-encoding) or ``None`` for a delete (a *tombstone*), and
the write's **causal context** for its key: a version vector ``{writer: counter}`` covering every
entry of that key the writer had seen. A write supersedes exactly what it had seen, so:

- entry ``a`` is superseded by ``b`` when ``b.context[a.writer] >= a.counter``;
- entries that do not supersede each other are **siblings**: concurrent writes stay visible as a
  conflict until some later write (which has seen them all) replaces them;
- the **effective value** is the winner among the siblings by a rule every replica applies alike:
  not suspect before suspect, then highest HLC, then writer id, then counter.

Entries, not fields, are the unit: a route is never half one operator's and half another's.

Besides the entries, each replica keeps a global **causal context** (``Context``): every dot it has
integrated, as a compact version vector plus a small "cloud" of dots that arrived out of order. An
incoming entry whose dot is already in the context is a duplicate or was superseded (or collected)
here, and is skipped; that is what makes re-delivery harmless. Deltas carry context too, and a
receiver joins it in, which fills holes left by writes it will never see because they were
superseded before reaching it.

**Tombstones** are collected only when causally stable: the runtime passes the pointwise minimum of
the live members' version vectors, and a tombstone that is the only entry of its key, whose dot and
key context that vector covers, and which is older than a grace period, is dropped. Every live
member then has every dot the tombstone replaced in its context, so a stale copy that turns up later
is skipped rather than resurrected. A replica that was away for longer than the grace period can
still hold such a stale entry; it must rejoin with a fresh store (an empty ``replica.db``), the
same rule as Cassandra's ``gc_grace_seconds``.

**Clock drift.** An incoming entry whose HLC is more than ``max_drift_ms`` ahead of our wall clock
is kept (dropping it would make replicas diverge) but marked *suspect*: a suspect entry never beats
a non-suspect sibling, and it does not drag our clock. The mark is monotonic (once suspect, always
suspect) and travels with the entry, so every replica converges on the same winner.

**Validation.** Values from peers are checked with an injected validator (the schema lives in
``gossipmesh.config``, which this core may not import) and with the size limits; an entry that
fails is refused, counted, and neither merged nor forwarded.

**Digest.** ``root_hash`` summarises the state for anti-entropy: an XOR of per-entry hashes and of
per-writer context hashes, updated as entries come and go (never recomputed over the whole
document), so a digest costs O(1) at any size. Tombstones only count through the context, so two
replicas that differ only in which stable tombstones they have collected still compare equal.

This module performs no I/O and reads no clock: ``wall_ms`` is always passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gossipmesh.crdt.entries import (
    DEFAULT_HISTORY_PER_KEY,
    MAX_DOCUMENT_BYTES,
    MAX_ENTITY_BYTES,
    MAX_KEY_BYTES,
    MAX_WRITER_BYTES,
    Conflict,
    Context,
    Delta,
    Dot,
    Entry,
    MergeResult,
    Validator,
    Version,
    VersionVector,
    check_key,
    check_writer,
    entry_hash,
    hash64,
    pack,
    stable_vector,
    unpack_value,
    with_suspect,
)
from gossipmesh.crdt.hlc import DEFAULT_MAX_DRIFT_MS, HybridClock, Timestamp
from gossipmesh.errors import LimitExceededError, UsageError


class Document:
    """One replica of the config document. Single owner; every method is synchronous and pure
    apart from mutating this object."""

    def __init__(
        self,
        validator: Validator | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        max_entity_bytes: int = MAX_ENTITY_BYTES,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        history_per_key: int = DEFAULT_HISTORY_PER_KEY,
    ) -> None:
        self._validator = validator
        self.clock = HybridClock(max_drift_ms)
        self.max_entity_bytes = max_entity_bytes
        self.max_document_bytes = max_document_bytes
        self._history_per_key = history_per_key
        self._entries: dict[str, dict[Dot, Entry]] = {}
        self._vv: dict[str, int] = {}
        self._cloud: set[Dot] = set()
        self._top: dict[str, int] = {}  # highest counter seen per writer (vv or cloud)
        self._root = 0
        self._size_bytes = 0
        self._history: dict[str, deque[Version]] = {}
        self.stats: dict[str, int] = {}

    # -----------------------------------------------------------------------------------------
    # Reads

    def get(self, key: str) -> dict[str, Any] | None:
        """The effective value of ``key`` (the winner among siblings), or None if absent/deleted."""
        winner = self.winner(key)
        return None if winner is None else winner.decoded()

    def winner(self, key: str) -> Entry | None:
        siblings = self._entries.get(key)
        if not siblings:
            return None
        return max(siblings.values(), key=Entry.rank)

    def items(self, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
        """Live keys (winner not a tombstone) under ``prefix``, sorted."""
        for key in sorted(k for k in self._entries if k.startswith(prefix)):
            winner = self.winner(key)
            if winner is not None and winner.value is not None:
                yield key, unpack_value(winner.value)

    def siblings(self, key: str) -> tuple[Entry, ...]:
        """Every current entry of ``key``, winner first."""
        return tuple(sorted(self._entries.get(key, {}).values(), key=Entry.rank, reverse=True))

    def conflicts(self) -> list[Conflict]:
        out = []
        for key in sorted(self._entries):
            siblings = self.siblings(key)
            if len(siblings) > 1:
                out.append(Conflict(key, siblings[0], siblings))
        return out

    def history(self, key: str) -> list[Version]:
        """Current siblings then the last superseded versions seen here, newest first. Local: a
        replica only lists versions it saw before they were replaced."""
        current = [
            Version(e.writer, e.counter, e.hlc, e.decoded(), True, e.suspect)
            for e in self.siblings(key)
        ]
        past = sorted(self._history.get(key, ()), key=lambda v: (v.hlc, v.writer), reverse=True)
        return current + past

    def version_vector(self) -> dict[str, int]:
        return dict(self._vv)

    def context(self) -> Context:
        return Context(tuple(sorted(self._vv.items())), tuple(sorted(self._cloud)))

    @property
    def root_hash(self) -> bytes:
        return self._root.to_bytes(8, "big")

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

    def has_seen(self, dot: Dot) -> bool:
        return dot[1] <= self._vv.get(dot[0], 0) or dot in self._cloud

    # -----------------------------------------------------------------------------------------
    # Local writes

    def write(self, key: str, value: Mapping[str, Any] | None, writer: str, wall_ms: int) -> Delta:
        """Set (or, with None, delete) ``key``. Raises UsageError/LimitExceededError or whatever
        the validator raises, with nothing changed. Deleting an absent key is a no-op."""
        return self.apply_batch([(key, value)], writer, wall_ms)

    def apply_batch(
        self, items: Sequence[tuple[str, Mapping[str, Any] | None]], writer: str, wall_ms: int
    ) -> Delta:
        """Write many keys as one delta: all are validated before any is applied, so either every
        write lands or none does (readers never see half of a ``config apply``)."""
        check_writer(writer)
        prepared: list[tuple[str, bytes | None]] = []
        seen_keys: set[str] = set()
        size_after = self._size_bytes
        for key, value in items:
            check_key(key)
            if key in seen_keys:
                raise UsageError(f"{key}: appears twice in one batch")
            seen_keys.add(key)
            if value is None:
                if not self._entries.get(key):
                    continue
                prepared.append((key, None))
            else:
                if self._validator is not None:
                    self._validator(key, value)
                try:
                    data = pack(dict(value))
                except (TypeError, ValueError, OverflowError) as e:
                    raise UsageError(f"{key}: value is not msgpack-able: {e}") from None
                if len(data) > self.max_entity_bytes:
                    raise LimitExceededError(
                        f"{key}: entity is {len(data)} bytes encoded, over the entity limit of "
                        f"{self.max_entity_bytes} bytes (max_entity_bytes)"
                    )
                prepared.append((key, data))
                size_after += len(data)
            size_after -= sum(e.size_bytes for e in self._entries.get(key, {}).values())
        if size_after > self.max_document_bytes:
            raise LimitExceededError(
                f"document would be {size_after} bytes, over the document limit of "
                f"{self.max_document_bytes} bytes (max_document_bytes)"
            )

        new_entries: list[Entry] = []
        context_dots: list[Dot] = []
        for key, payload in prepared:
            siblings = self._entries.get(key, {})
            seen: dict[str, int] = {}
            for s in siblings.values():
                for w, c in s.context:
                    if c > seen.get(w, 0):
                        seen[w] = c
                if s.counter > seen.get(s.writer, 0):
                    seen[s.writer] = s.counter
                context_dots.append(s.dot)
            counter = self._top.get(writer, 0) + 1
            entry = Entry(key, writer, counter, self.clock.now(wall_ms), tuple(sorted(seen.items())),
                          payload)  # fmt: skip
            for s in list(siblings.values()):
                self._remove(s, superseded=True)
            self._insert(entry)
            self._add_dot(entry.dot)
            context_dots.append(entry.dot)
            new_entries.append(entry)
        self._count("local_writes", len(new_entries))
        return Delta(tuple(new_entries), Context((), tuple(sorted(context_dots))))

    # -----------------------------------------------------------------------------------------
    # Merging

    def merge(self, delta: Delta, wall_ms: int) -> MergeResult:
        """Fold a peer's delta (or full state) in. Never raises on bad content: entries that fail
        validation or limits are refused and counted under ``stats['refused_*']``."""
        changed: set[str] = set()
        forward: list[Entry] = []
        accepted = duplicates = 0
        refused: list[str] = []
        drifted: list[Dot] = []
        for incoming in delta.entries:
            siblings = self._entries.get(incoming.key)
            if self.has_seen(incoming.dot):
                held = siblings.get(incoming.dot) if siblings else None
                if held is not None and incoming.suspect and not held.suspect:
                    # The suspect mark only ever grows; take it so every replica picks alike.
                    self._remove(held, superseded=False)
                    self._insert(with_suspect(held))
                    changed.add(incoming.key)
                    forward.append(with_suspect(held))
                else:
                    duplicates += 1
                continue
            reason = self._refusal(incoming)
            if reason is not None:
                refused.append(reason)
                self._count(f"refused_{reason}")
                continue
            entry = incoming
            if self.clock.is_too_far_ahead(entry.hlc, wall_ms):
                drifted.append(entry.dot)
                self._count("drift_exceeded")
                if not entry.suspect:
                    entry = with_suspect(entry)
            else:
                self.clock.observe(entry.hlc, wall_ms)
            accepted += 1
            forward.append(entry)
            self._add_dot(entry.dot)
            if siblings and any(s.covers(entry) for s in siblings.values()):
                # Already replaced by something we hold: remember we saw it, keep it out.
                self._record_past(entry)
                continue
            if siblings:
                for s in [s for s in siblings.values() if entry.covers(s)]:
                    self._remove(s, superseded=True)
            self._insert(entry)
            changed.add(entry.key)
        self._join_context(delta.context)
        self._count("merged_entries", accepted)
        self._count("duplicate_entries", duplicates)
        # The forward part carries only its own dots as context, never the incoming delta's
        # whole context: that may name dots of entries we already held and so left out, and a
        # receiver lacking those would join the dots, believe it has the entries, and never ask
        # for them again (a silent, permanent loss that anti-entropy cannot see).
        fwd = None
        if forward:
            fwd = Delta(tuple(forward), Context((), tuple(sorted({e.dot for e in forward}))))
        return MergeResult(frozenset(changed), accepted, duplicates, len(refused), tuple(refused),
                           tuple(drifted), fwd)  # fmt: skip

    def _refusal(self, entry: Entry) -> str | None:
        """Why a remote entry must not be merged, as a counter slug, or None."""
        if not entry.key or len(entry.key.encode()) > MAX_KEY_BYTES:
            return "key"
        if entry.value is None:
            return None
        if len(entry.value) > self.max_entity_bytes:
            return "entity_size"
        held = sum(e.size_bytes for e in self._entries.get(entry.key, {}).values())
        if self._size_bytes + len(entry.value) - held > self.max_document_bytes:
            return "document_size"
        try:
            value = unpack_value(entry.value)
        except Exception:
            return "value_encoding"
        if self._validator is not None:
            try:
                self._validator(entry.key, value)
            except Exception:
                return "invalid"
        return None

    # -----------------------------------------------------------------------------------------
    # Anti-entropy support

    def delta_for(self, remote: Context) -> Delta:
        """Everything a replica with context ``remote`` lacks, plus our context (it fills the holes
        left by writes superseded before they reached it). Suspect entries always go along: their
        mark may be news even where the dot is not."""
        out = [e for e in self.entries() if e.suspect or not remote.contains(e.dot)]
        out.sort(key=lambda e: (e.key, e.writer, e.counter))
        return Delta(tuple(out), self.context())

    def full_state(self) -> Delta:
        """The whole replica as a delta: merging it into an empty document reproduces this one."""
        return self.delta_for(Context())

    def collect_garbage(self, stable: VersionVector, wall_ms: int, grace_ms: int) -> list[str]:
        """Drop tombstones that are causally stable and older than ``grace_ms``.

        ``stable`` is the pointwise minimum of the version vectors of every live member (this one
        included); see ``stable_vector``. Returns the keys collected.
        """
        collected = []
        for key in list(self._entries):
            siblings = self._entries[key]
            if len(siblings) != 1:
                # With a live sibling, collecting the tombstone could change the winner on some
                # replicas before others: only lone tombstones go.
                continue
            (entry,) = siblings.values()
            if entry.value is not None or wall_ms - entry.hlc.wall_ms < grace_ms:
                continue
            if stable.get(entry.writer, 0) < entry.counter:
                continue
            if any(stable.get(w, 0) < c for w, c in entry.context):
                continue
            self._remove(entry, superseded=False)
            collected.append(key)
        self._count("tombstones_collected", len(collected))
        return collected

    # -----------------------------------------------------------------------------------------
    # Internals

    def _insert(self, entry: Entry) -> None:
        self._entries.setdefault(entry.key, {})[entry.dot] = entry
        self._root ^= entry_hash(entry)
        self._size_bytes += entry.size_bytes

    def _remove(self, entry: Entry, superseded: bool) -> None:
        siblings = self._entries[entry.key]
        del siblings[entry.dot]
        if not siblings:
            del self._entries[entry.key]
        self._root ^= entry_hash(entry)
        self._size_bytes -= entry.size_bytes
        if superseded:
            self._record_past(entry)

    def _record_past(self, entry: Entry) -> None:
        if self._history_per_key <= 0:
            return
        past = self._history.get(entry.key)
        if past is None:
            past = self._history[entry.key] = deque(maxlen=self._history_per_key)
        try:
            value = entry.decoded()
        except Exception:
            value = None
        past.append(Version(entry.writer, entry.counter, entry.hlc, value, False, entry.suspect))

    def _add_dot(self, dot: Dot) -> None:
        writer, counter = dot
        if counter > self._top.get(writer, 0):
            self._top[writer] = counter
        have = self._vv.get(writer, 0)
        if counter <= have:
            return
        if counter == have + 1:
            self._set_vv(writer, counter)
            self._compact(writer)
        elif dot not in self._cloud:
            self._cloud.add(dot)
            self._root ^= hash64("c", writer, counter)

    def _set_vv(self, writer: str, counter: int) -> None:
        old = self._vv.get(writer, 0)
        if old:
            self._root ^= hash64("v", writer, old)
        self._vv[writer] = counter
        self._root ^= hash64("v", writer, counter)

    def _compact(self, writer: str) -> None:
        """Absorb cloud dots that the vector now reaches, and any below it."""
        if not self._cloud:
            return
        have = self._vv[writer]
        for dot in [d for d in self._cloud if d[0] == writer and d[1] <= have]:
            self._cloud.discard(dot)
            self._root ^= hash64("c", dot[0], dot[1])
        while (writer, have + 1) in self._cloud:
            have += 1
            self._cloud.discard((writer, have))
            self._root ^= hash64("c", writer, have)
            self._set_vv(writer, have)

    def _join_context(self, ctx: Context) -> None:
        for writer, counter in ctx.vv:
            if counter > self._vv.get(writer, 0):
                if counter > self._top.get(writer, 0):
                    self._top[writer] = counter
                self._set_vv(writer, counter)
                self._compact(writer)
        for dot in ctx.cloud:
            self._add_dot(dot)

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self.stats[name] = self.stats.get(name, 0) + n

    def restore_clock(self) -> None:
        """After loading from disk: never issue an HLC at or below one already written."""
        self.clock.restore(self.max_hlc())


# The value types are re-exported: callers that hold a Document usually need them too.
__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTITY_BYTES",
    "MAX_KEY_BYTES",
    "MAX_WRITER_BYTES",
    "Conflict",
    "Context",
    "Delta",
    "Document",
    "Dot",
    "Entry",
    "MergeResult",
    "Version",
    "stable_vector",
]
