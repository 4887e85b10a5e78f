"""The immutable values of the config document: entries, causal contexts, deltas, merge results.

Theory of operation
-------------------
A write is an ``Entry`` named by its *dot* ``(writer, counter)``; it carries the key's causal
context it had seen, so "``b`` replaces ``a``" is ``b.covers(a)``, decided from the two entries
alone. A ``Context`` is a set of dots (a version vector plus a cloud of stray dots), and a
``Delta`` is what replicas ship: entries plus the context they come with. ``entry_hash`` is an
entry's share of the document's XOR root hash; ``stable_vector`` is the causal-stability floor that
gates tombstone collection. ``document.py`` holds the state machine that combines them.

Values are msgpack bytes kept verbatim (``pack`` / ``unpack_value``), so hashes never depend on
re-encoding. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.errors import UsageError

Dot = tuple[str, int]
VersionVector = Mapping[str, int]
Validator = Callable[[str, Mapping[str, Any]], None]

MAX_ENTITY_BYTES = 64 * 1024
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_KEY_BYTES = 256
MAX_WRITER_BYTES = 128
DEFAULT_HISTORY_PER_KEY = 10


@dataclass(frozen=True, slots=True)
class Entry:
    """One write. ``value`` is msgpack bytes of a mapping, or None for a tombstone. ``context``
    is sorted ``(writer, counter)`` pairs: the key's entries this write had seen."""

    key: str
    writer: str
    counter: int
    hlc: Timestamp
    context: tuple[tuple[str, int], ...]
    value: bytes | None
    suspect: bool = False

    @property
    def dot(self) -> Dot:
        return (self.writer, self.counter)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def covers(self, other: Entry) -> bool:
        """Did this write see ``other`` (so replaces it)?"""
        for writer, counter in self.context:
            if writer == other.writer:
                return other.counter <= counter
        return False

    def rank(self) -> tuple[bool, Timestamp, str, int]:
        """Sort key of the winner rule; the max wins."""
        return (not self.suspect, self.hlc, self.writer, self.counter)

    def decoded(self) -> dict[str, Any] | None:
        return None if self.value is None else unpack_value(self.value)

    @property
    def size_bytes(self) -> int:
        return 0 if self.value is None else len(self.value)


@dataclass(frozen=True, slots=True)
class Context:
    """A set of dots: ``vv`` (writer → every counter up to n) plus ``cloud`` (stray dots above)."""

    vv: tuple[tuple[str, int], ...] = ()
    cloud: tuple[Dot, ...] = ()

    def as_dict(self) -> dict[str, int]:
        return dict(self.vv)

    def contains(self, dot: Dot) -> bool:
        for writer, counter in self.vv:
            if writer == dot[0] and dot[1] <= counter:
                return True
        return dot in self.cloud


@dataclass(frozen=True, slots=True)
class Delta:
    """What one replica ships to another: entries plus the context they come with."""

    entries: tuple[Entry, ...] = ()
    context: Context = Context()

    @property
    def is_empty(self) -> bool:
        return not self.entries and not self.context.vv and not self.context.cloud


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge did. ``forward`` holds only what was new here (for eager push), with just
    those entries' dots as context; it is None when nothing was. Refused entries are never in it."""

    changed_keys: frozenset[str]
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    refused_reasons: tuple[str, ...] = ()
    drifted: tuple[Dot, ...] = ()
    forward: Delta | None = None


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a key, for ``history``: who wrote what when, and whether it still stands."""

    writer: str
    counter: int
    hlc: Timestamp
    value: dict[str, Any] | None
    current: bool
    suspect: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    key: str
    winner: Entry
    siblings: tuple[Entry, ...]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack_value(data: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if not isinstance(value, dict):
        raise ValueError("value is not a mapping")
    return value


def hash64(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(pack(parts), digest_size=8).digest(), "big")


def entry_hash(entry: Entry) -> int:
    """The entry's share of the root hash. Tombstones only count if suspect (see "Digest" in document.py)."""
    if entry.value is None and not entry.suspect:
        return 0
    return hash64("e", entry.key, entry.writer, entry.counter, tuple(entry.hlc), entry.context,
                   entry.value, entry.suspect)  # fmt: skip


def with_suspect(entry: Entry) -> Entry:
    return Entry(entry.key, entry.writer, entry.counter, entry.hlc, entry.context, entry.value,
                 True)  # fmt: skip


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise UsageError(f"key {key!r} must be 1-{MAX_KEY_BYTES} bytes")


def check_writer(writer: str) -> None:
    if not isinstance(writer, str) or not writer or len(writer.encode()) > MAX_WRITER_BYTES:
        raise UsageError(f"writer {writer!r} must be 1-{MAX_WRITER_BYTES} bytes")


def stable_vector(vectors: Iterable[VersionVector]) -> dict[str, int]:
    """Pointwise minimum of the live members' version vectors: every dot it covers has reached
    every one of them. A writer missing from any vector counts as 0."""
    result: dict[str, int] | None = None
    for vv in vectors:
        if result is None:
            result = dict(vv)
        else:
            result = {w: min(c, vv.get(w, 0)) for w, c in result.items() if vv.get(w, 0) > 0}
    return result or {}


__all__ = [
    "DEFAULT_HISTORY_PER_KEY",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTITY_BYTES",
    "MAX_KEY_BYTES",
    "MAX_WRITER_BYTES",
    "Conflict",
    "Context",
    "Delta",
    "Dot",
    "Entry",
    "MergeResult",
    "Validator",
    "Version",
    "VersionVector",
    "check_key",
    "check_writer",
    "entry_hash",
    "hash64",
    "pack",
    "stable_vector",
    "unpack_value",
    "with_suspect",
]
