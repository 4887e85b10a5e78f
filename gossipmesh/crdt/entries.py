"""The immutable values of the config document: signed entries, deltas, merge results, and bounds.

Theory of operation
-------------------
A write is an ``Entry`` named by its *dot* ``(writer, counter)`` within its key; it carries the
key's causal context it had seen, so "``b`` replaces ``a``" is ``b.covers(a)``, decided from the
two entries alone. Every field but the receiver's ``suspect`` mark is covered by an operator's (or
a root's) signature: ``signed_fields`` are the fields, in order, that the canonical bytes are made
of (``gossipmesh.config.signing`` adds the domain and the cluster and signs; this core never sees
a key or a certificate). ``signer`` is the 32-byte fingerprint of the signing certificate.

A ``Delta`` is what replicas ship: entries only. There is no delta-level causal context: nothing
unsigned may tell a receiver what it has "already seen" (DESIGN-11 D4). What a replica has
integrated is derived from signed entries alone (``document.py``'s per-key known maps).

Every number that comes from outside is bounded here, once: counters and HLC times below 2**53
(a JSON number and a float can still carry them exactly), logical counters below 2**32, contexts
of at most ``MAX_CONTEXT_WRITERS`` writers, batches of at most ``MAX_BATCH_ENTRIES`` entries.

Values are msgpack bytes kept verbatim (``pack`` / ``unpack_value``), so hashes and signatures
never depend on re-encoding. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from gossipmesh.crdt.hlc import MAX_LOGICAL, Timestamp
from gossipmesh.errors import UsageError

Dot = tuple[str, int]
# Raises UsageError (config's ConfigValidationError) for a bad value; anything else is a bug.
Validator = Callable[[str, Mapping[str, Any]], None]

MAX_ENTITY_BYTES = 64 * 1024
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_KEY_BYTES = 256
MAX_WRITER_BYTES = 128
MAX_COUNTER = 2**53 - 1  # counters are 1..MAX_COUNTER
MAX_HLC_WALL_MS = 2**53 - 1
MAX_HLC_LOGICAL = MAX_LOGICAL
MAX_CONTEXT_WRITERS = 4096  # writers named in one key's context
MAX_BATCH_ENTRIES = 1024  # entries in one local commit (a ``config apply`` plus its cert entry)
FINGERPRINT_BYTES = 32
SIGNATURE_BYTES = 64
DEFAULT_HISTORY_PER_KEY = 10
MAX_FUTURE_MS = 24 * 3600 * 1000  # an entry further ahead of our wall clock is refused

# Keys whose entries decide who may sign what (DESIGN-11 D5). A merge takes them first, in this
# order, so one delta carries the roots and certificates its other entries need.
TRUST_PREFIX = "trust/"
CERT_PREFIX = "cert/"
REVOCATION_PREFIX = "revocation/"
AUTHORITY_PREFIXES = (TRUST_PREFIX, CERT_PREFIX, REVOCATION_PREFIX)


def authority_rank(key: str) -> int:
    """Processing order within a merge: trust statements, certificates, revocations, the rest."""
    for i, prefix in enumerate(AUTHORITY_PREFIXES):
        if key.startswith(prefix):
            return i
    return len(AUTHORITY_PREFIXES)


@dataclass(frozen=True, slots=True)
class Entry:
    """One signed write. ``value`` is msgpack bytes of a mapping, or None for a tombstone.
    ``context`` is sorted ``(writer, counter)`` pairs: the key's entries this write had seen.
    ``signer``/``signature`` are empty on a proposal that is not signed yet."""

    key: str
    writer: str
    counter: int
    hlc: Timestamp
    context: tuple[tuple[str, int], ...]
    value: bytes | None
    signer: bytes = b""
    signature: bytes = b""
    suspect: bool = False

    @property
    def dot(self) -> Dot:
        return (self.writer, self.counter)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    @property
    def is_signed(self) -> bool:
        return len(self.signer) == FINGERPRINT_BYTES and len(self.signature) == SIGNATURE_BYTES

    def covers(self, other: Entry) -> bool:
        """Did this write see ``other`` (so replaces it)?"""
        for writer, counter in self.context:
            if writer == other.writer:
                return other.counter <= counter
        return False

    def rank(self) -> tuple[bool, Timestamp, str, int]:
        """Sort key of the winner rule; the max wins."""
        return (not self.suspect, self.hlc, self.writer, self.counter)

    def signed_fields(self) -> tuple[Any, ...]:
        """What the signature covers, in order (the canonical encoding adds domain and cluster)."""
        return (self.key, self.writer, self.counter, self.hlc.wall_ms, self.hlc.logical,
                [[w, c] for w, c in self.context], self.value, self.signer)  # fmt: skip

    def content_hash(self) -> bytes:
        """SHA-256 of the signed fields and the suspect mark: the entry's share of the digest.
        The signature is left out: ECDSA signatures are malleable, and two valid signatures of
        one entry must not make two replicas look different."""
        return hashlib.sha256(pack([*self.signed_fields(), self.suspect])).digest()

    def decoded(self) -> dict[str, Any] | None:
        return None if self.value is None else unpack_value(self.value)

    @property
    def size_bytes(self) -> int:
        return 0 if self.value is None else len(self.value)

    def signed(self, signer: bytes, signature: bytes) -> Entry:
        return replace(self, signer=signer, signature=signature)

    def unsigned(self) -> Entry:
        """The proposal this entry was signed from."""
        return replace(self, signer=b"", signature=b"", suspect=False)


@dataclass(frozen=True, slots=True)
class Delta:
    """What one replica ships to another: signed entries, nothing else."""

    entries: tuple[Entry, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.entries


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge did. ``forward`` holds only what was new here (for eager push); it is None
    when nothing was. Refused entries are never in it. ``voided``: keys whose value became void
    (or stopped being void) because an authority entry changed."""

    changed_keys: frozenset[str]
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    refused_reasons: tuple[str, ...] = ()
    drifted: tuple[Dot, ...] = ()
    forward: Delta | None = None
    voided: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a key, for ``history``: who wrote what when, and whether it still stands."""

    writer: str
    counter: int
    hlc: Timestamp
    value: dict[str, Any] | None
    current: bool
    suspect: bool = False
    signer: bytes = b""
    void: str | None = None


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


def with_suspect(entry: Entry) -> Entry:
    return replace(entry, suspect=True)


def same_content(a: Entry, b: Entry) -> bool:
    """The same signed write (signatures may differ: ECDSA is malleable)."""
    return a.signed_fields() == b.signed_fields()


def derived_context(siblings: Iterable[Entry]) -> tuple[tuple[str, int], ...]:
    """The context a write replacing ``siblings`` carries: every writer's highest counter among
    their dots and their own contexts, writers ascending."""
    seen: dict[str, int] = {}
    for s in siblings:
        for w, c in (*s.context, s.dot):
            if c > seen.get(w, 0):
                seen[w] = c
    return tuple(sorted(seen.items()))


def bounds_problem(entry: Entry) -> str | None:
    """What is out of range in an entry (a number, a size, the context's order), or None."""
    if not 1 <= entry.counter <= MAX_COUNTER:
        return "counter out of range"
    if (
        not 0 <= entry.hlc.wall_ms <= MAX_HLC_WALL_MS
        or not 0 <= entry.hlc.logical <= MAX_HLC_LOGICAL
    ):
        return "timestamp out of range"
    if len(entry.context) > MAX_CONTEXT_WRITERS:
        return "context names too many writers"
    previous = ""
    for w, c in entry.context:
        if not previous < w or not 1 <= c <= MAX_COUNTER:
            return "context is not ascending writers with counters in range"
        previous = w
    if not entry.writer or len(entry.writer.encode()) > MAX_WRITER_BYTES:
        return "writer out of range"
    if entry.signature and not entry.is_signed:
        return "signature or signer of the wrong size"
    return None


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise UsageError(f"key {key!r} must be 1-{MAX_KEY_BYTES} bytes")


def check_writer(writer: str) -> None:
    if not isinstance(writer, str) or not writer or len(writer.encode()) > MAX_WRITER_BYTES:
        raise UsageError(f"writer {writer!r} must be 1-{MAX_WRITER_BYTES} bytes")


__all__ = [
    "AUTHORITY_PREFIXES",
    "CERT_PREFIX",
    "DEFAULT_HISTORY_PER_KEY",
    "FINGERPRINT_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_CONTEXT_WRITERS",
    "MAX_COUNTER",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTITY_BYTES",
    "MAX_FUTURE_MS",
    "MAX_HLC_LOGICAL",
    "MAX_HLC_WALL_MS",
    "MAX_KEY_BYTES",
    "MAX_WRITER_BYTES",
    "REVOCATION_PREFIX",
    "SIGNATURE_BYTES",
    "TRUST_PREFIX",
    "Conflict",
    "Delta",
    "Dot",
    "Entry",
    "MergeResult",
    "Validator",
    "Version",
    "authority_rank",
    "bounds_problem",
    "check_key",
    "check_writer",
    "derived_context",
    "pack",
    "same_content",
    "unpack_value",
    "with_suspect",
]
