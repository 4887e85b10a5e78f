"""Anti-entropy for the config document: Merkle digest, differing buckets, what is missing (sans-IO).

Theory of operation
-------------------
Gossip carries fresh deltas fast but may lose some. Periodically a node A opens a stream to a peer
B and they run one exchange of four legs:

1. A -> B ``Digest(root)``: A's 32-byte Merkle root (``digest.py``).
2. B compares. Equal roots mean identical documents: ``SyncReply(in_sync=True)`` and the exchange
   is over, about forty bytes whatever the size of the document. Otherwise B answers with the
   hashes of its non-empty buckets (``SyncReply(False, buckets)``, 8 bytes each: they only locate
   differences; the full root decides "in sync").
3. A finds the buckets that differ (all of them in the unlikely case that none seems to while the
   roots do) and sends ``SyncPush``: those buckets, its known maps for their keys and its entries
   of them.
4. B merges A's entries, then answers with a ``DeltaMessage`` of its entries in those buckets that
   A's known maps say A lacks; A merges that.

Nothing unsigned is ever merged into state: the known maps of leg 3 only decide what B sends
back. A lost, repeated or crossed exchange is harmless (merging is idempotent); the next round
repairs it. The same ``DeltaMessage`` wraps a delta gossiped eagerly after a write, and the store
keeps ``Snapshot`` (entries and this replica's own known maps) for compaction.

Wire format (msgpack arrays; every message starts ``[VERSION, TYPE, ...]``)::

    entry     = [key, writer, counter, hlc_wall_ms, hlc_logical,
                 [[writer, counter], ...] (key context, writers ascending), value (bin|nil),
                 signer (bin 32), signature (bin 64), suspect]
    known     = [[key, [[writer, counter], ...]], ...]
    Digest       = [2, 1, root (bin 32)]
    SyncReply    = [2, 2, in_sync, [[bucket, hash (bin 8)], ...]]
    SyncPush     = [2, 3, [bucket, ...], known, [entry, ...]]
    DeltaMessage = [2, 4, [entry, ...]]
    Snapshot     = [2, 5, [entry, ...], known]

**Bounded legs.** Legs 3 and 4 carry at most about ``MAX_SYNC_BATCH_BYTES`` of entries and known
maps (estimated per entry, before encoding), so one exchange fits a stream frame far below the
document's 16 MiB bound (the agent's frame cap, ``agent/stream_limits.py``): A pushes the differing
buckets in order until the budget is spent (always at least one), B answers with what A lacks
there, authority entries (``trust/``, ``cert/``, ``revocation/``) first, until the budget is spent.
The rest is left for another exchange; the initiator starts one at once when a leg was cut short
(``SyncPush.truncated`` on its side, a reply that filled half the budget on B's).

``decode`` validates everything (types, ranges, sizes, ordering) and raises
``DecodeError(reason)`` and nothing else, whatever the input bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from gossipmesh.crdt.digest import BUCKETS
from gossipmesh.crdt.document import Document
from gossipmesh.crdt.entries import (
    AUTHORITY_PREFIXES,
    FINGERPRINT_BYTES,
    MAX_CONTEXT_WRITERS,
    MAX_COUNTER,
    MAX_ENTITY_BYTES,
    MAX_HLC_LOGICAL,
    MAX_HLC_WALL_MS,
    MAX_KEY_BYTES,
    MAX_WRITER_BYTES,
    SIGNATURE_BYTES,
    Delta,
    Entry,
    MergeResult,
)
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.errors import DecodeError
from gossipmesh.wire import BAD_BYTES

VERSION = 2
T_DIGEST, T_REPLY, T_PUSH, T_DELTA, T_SNAPSHOT = 1, 2, 3, 4, 5
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a full 16 MiB document plus its framing, with headroom
# What legs 3 and 4 of one exchange carry at most (estimated, see ``entry_cost``): 32 entities of
# the largest size, or thousands of ordinary ones; a bigger difference takes more exchanges.
MAX_SYNC_BATCH_BYTES = 2 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 128  # counter, HLC, signer, signature and msgpack headers of one entry
PAIR_BYTES = 16  # one (writer, counter) pair beyond its writer's name
MAX_ENTRIES = 1_000_000
ROOT_BYTES = 32
BUCKET_HASH_BYTES = 8

KnownMaps = tuple[tuple[str, tuple[tuple[str, int], ...]], ...]


@dataclass(frozen=True, slots=True)
class Digest:
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class SyncReply:
    in_sync: bool
    buckets: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class SyncPush:
    buckets: tuple[int, ...]
    known: KnownMaps
    entries: tuple[Entry, ...]
    truncated: bool = False  # not on the wire: A left differing buckets for another exchange


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    delta: Delta


@dataclass(frozen=True, slots=True)
class Snapshot:
    delta: Delta
    known: KnownMaps


Message = Digest | SyncReply | SyncPush | DeltaMessage | Snapshot


# ---------------------------------------------------------------------------------------------
# The protocol steps, as pure functions over a Document


def make_digest(doc: Document) -> Digest:
    """Leg 1 (initiator A)."""
    return Digest(doc.root_hash)


def respond(doc: Document, digest: Digest) -> SyncReply:
    """Leg 2 (responder B): in sync, or our bucket hashes."""
    if digest.root_hash == doc.root_hash:
        return SyncReply(in_sync=True)
    buckets = tuple((b, h[:BUCKET_HASH_BYTES]) for b, h in sorted(doc.bucket_hashes().items()))
    return SyncReply(False, buckets)


def entry_cost(e: Entry) -> int:
    """An upper estimate of one entry's encoded bytes (what the leg budget counts)."""
    pairs = sum(len(w) + PAIR_BYTES for w, _ in e.context)
    return ENTRY_OVERHEAD_BYTES + len(e.key) + len(e.writer) + len(e.value or b"") + pairs


def on_reply(
    doc: Document, reply: SyncReply, max_bytes: int = MAX_SYNC_BATCH_BYTES, start: int = 0
) -> SyncPush | None:
    """Leg 3 (initiator A): our side of the buckets that differ, from bucket ``start`` on (and
    around), as many of them as fit ``max_bytes`` (at least one); None when in sync. A random
    ``start`` keeps a bucket that cannot converge from starving the others."""
    if reply.in_sync:
        return None
    theirs = dict(reply.buckets)
    mine = {b: h[:BUCKET_HASH_BYTES] for b, h in doc.bucket_hashes().items()}
    differ = sorted(b for b in set(theirs) | set(mine) if theirs.get(b) != mine.get(b))
    if not differ:
        differ = list(range(BUCKETS))  # roots differ but no bucket seems to: compare them all
    differ = [b for b in differ if b >= start] + [b for b in differ if b < start]
    chosen: list[int] = []
    known: list[tuple[str, tuple[tuple[str, int], ...]]] = []
    entries: list[Entry] = []
    spent = 0
    for bucket in differ:
        keys = doc.keys_in([bucket])
        b_known = [(k, tuple(sorted(doc.known(k).items()))) for k in keys]
        b_entries = doc.entries_of(keys)
        cost = sum(entry_cost(e) for e in b_entries)
        cost += sum(len(k) + sum(len(w) + PAIR_BYTES for w, _ in p) for k, p in b_known)
        if chosen and spent + cost > max_bytes:
            break
        chosen.append(bucket)
        known += b_known
        entries += b_entries
        spent += cost
    truncated = len(chosen) < len(differ)
    return SyncPush(tuple(sorted(chosen)), tuple(known), tuple(entries), truncated)


def on_push(
    doc: Document, push: SyncPush, wall_ms: int, max_bytes: int = MAX_SYNC_BATCH_BYTES
) -> tuple[MergeResult, DeltaMessage]:
    """Leg 4 (responder B): merge A's entries, answer with ours that A lacks, authority entries
    first, as many as fit ``max_bytes`` (at least one)."""
    result = doc.merge(Delta(push.entries), wall_ms)
    remote: Mapping[str, Mapping[str, int]] = {k: dict(pairs) for k, pairs in push.known}
    missing = doc.missing_for(doc.keys_in(push.buckets), remote)
    missing.sort(key=lambda e: not e.key.startswith(AUTHORITY_PREFIXES))  # stable: keeps order
    back: list[Entry] = []
    spent = 0
    for e in missing:
        cost = entry_cost(e)
        if back and spent + cost > max_bytes:
            break
        back.append(e)
        spent += cost
    return result, DeltaMessage(Delta(tuple(back)))


def on_delta(doc: Document, message: DeltaMessage, wall_ms: int) -> MergeResult:
    """The end of an exchange (A merges leg 4), or receipt of a gossiped delta."""
    return doc.merge(message.delta, wall_ms)


@dataclass(frozen=True, slots=True)
class Handled:
    """What ``handle`` did: the merge result (if it merged) and a message to send back (if any)."""

    merged: MergeResult | None
    reply: Message | None


def handle(doc: Document, message: Message, wall_ms: int) -> Handled:
    """One entry point for a test or a simple runtime: feed any decoded message, send back
    ``reply`` if set. A ``Snapshot`` is the store's and is ignored when it comes from outside."""
    if isinstance(message, Digest):
        return Handled(None, respond(doc, message))
    if isinstance(message, SyncReply):
        return Handled(None, on_reply(doc, message))
    if isinstance(message, SyncPush):
        merged, back = on_push(doc, message, wall_ms)
        return Handled(merged, back)
    if isinstance(message, DeltaMessage):
        return Handled(on_delta(doc, message, wall_ms), None)
    return Handled(None, None)


# ---------------------------------------------------------------------------------------------
# Encoding


def _enc_pairs(pairs: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    return [[w, c] for w, c in pairs]


def _enc_entry(e: Entry) -> list[Any]:
    return [e.key, e.writer, e.counter, e.hlc.wall_ms, e.hlc.logical, _enc_pairs(e.context),
            e.value, e.signer, e.signature, e.suspect]  # fmt: skip


def _enc_known(known: KnownMaps) -> list[Any]:
    return [[k, _enc_pairs(pairs)] for k, pairs in known]


def encode(message: Message) -> bytes:
    if isinstance(message, Digest):
        body: list[Any] = [VERSION, T_DIGEST, message.root_hash]
    elif isinstance(message, SyncReply):
        body = [VERSION, T_REPLY, message.in_sync, [[b, h] for b, h in message.buckets]]
    elif isinstance(message, SyncPush):
        body = [VERSION, T_PUSH, list(message.buckets), _enc_known(message.known),
                [_enc_entry(e) for e in message.entries]]  # fmt: skip
    elif isinstance(message, DeltaMessage):
        body = [VERSION, T_DELTA, [_enc_entry(e) for e in message.delta.entries]]
    elif isinstance(message, Snapshot):
        body = [VERSION, T_SNAPSHOT, [_enc_entry(e) for e in message.delta.entries],
                _enc_known(message.known)]  # fmt: skip
    else:
        raise TypeError(f"not a sync message: {message!r}")
    return msgpack.packb(body, use_bin_type=True)


def encode_delta(delta: Delta) -> bytes:
    """A delta for gossip or for the store's log."""
    return encode(DeltaMessage(delta))


def encode_snapshot(doc: Document) -> bytes:
    """The document's entries and known maps, for the store (never sent to a peer)."""
    known = tuple((k, tuple(sorted(v.items()))) for k, v in sorted(doc.known_maps().items()))
    return encode(Snapshot(doc.full_state(), known))


def decode_delta(data: bytes) -> Delta:
    msg = decode(data)
    if not isinstance(msg, DeltaMessage):
        raise DecodeError("unexpected_type", "expected a delta")
    return msg.delta


# ---------------------------------------------------------------------------------------------
# Decoding: trust nothing


def decode(data: bytes) -> Message:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("not_bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(data)} bytes")
    try:
        raw = msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=MAX_ENTITY_BYTES,
            max_str_len=MAX_ENTITY_BYTES,
            max_array_len=MAX_ENTRIES,
            max_map_len=0,  # the protocol has no maps; values travel as opaque bytes
            max_ext_len=0,
        )
    except BAD_BYTES as e:
        raise DecodeError("msgpack", type(e).__name__) from None
    # Every shape check raises DecodeError (tests/crdt/test_crdt_sync.py fuzzes random bytes,
    # mutated messages and structured garbage); anything else is a validator bug and surfaces.
    return _message(raw)


def _message(raw: Any) -> Message:
    arr = _array(raw, "message")
    if len(arr) < 2:
        raise DecodeError("malformed", "short message")
    if arr[0] != VERSION or isinstance(arr[0], bool):
        raise DecodeError("version", repr(arr[0])[:32])
    kind = arr[1]
    if isinstance(kind, bool):
        raise DecodeError("unknown_type", repr(kind))
    if kind == T_DIGEST:
        _arity(arr, 3)
        if not isinstance(arr[2], bytes) or len(arr[2]) != ROOT_BYTES:
            raise DecodeError("malformed", "root hash")
        return Digest(arr[2])
    if kind == T_REPLY:
        _arity(arr, 4)
        if not isinstance(arr[2], bool):
            raise DecodeError("malformed", "in_sync")
        return SyncReply(arr[2], _bucket_hashes(arr[3]))
    if kind == T_PUSH:
        _arity(arr, 5)
        return SyncPush(_buckets(arr[2]), _known(arr[3]), _entries(arr[4]))
    if kind == T_DELTA:
        _arity(arr, 3)
        return DeltaMessage(Delta(_entries(arr[2])))
    if kind == T_SNAPSHOT:
        _arity(arr, 4)
        return Snapshot(Delta(_entries(arr[2])), _known(arr[3]))
    raise DecodeError("unknown_type", repr(kind)[:32])


def _arity(arr: list[Any], n: int) -> None:
    if len(arr) != n:
        raise DecodeError("malformed", f"expected {n} fields, got {len(arr)}")


def _array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError("malformed", f"{what}: expected array")
    return value


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DecodeError("malformed", what)
    return value


def _writer(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_WRITER_BYTES:
        raise DecodeError("malformed", "writer")
    return value


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_KEY_BYTES:
        raise DecodeError("malformed", "key")
    return value


def _pairs(value: Any, what: str) -> tuple[tuple[str, int], ...]:
    arr = _array(value, what)
    if len(arr) > MAX_CONTEXT_WRITERS:
        raise DecodeError("too_large", what)
    out = []
    for item in arr:
        pair = _array(item, what)
        if len(pair) != 2:
            raise DecodeError("malformed", what)
        out.append((_writer(pair[0]), _int(pair[1], 1, MAX_COUNTER, f"{what}: counter")))
    for a, b in zip(out, out[1:], strict=False):
        if a[0] >= b[0]:
            raise DecodeError("malformed", f"{what}: writers not strictly ascending")
    return tuple(out)


def _entry(value: Any) -> Entry:
    arr = _array(value, "entry")
    if len(arr) != 10:
        raise DecodeError("malformed", "entry arity")
    key, writer, counter, wall_ms, logical, ctx, val, signer, signature, suspect = arr
    if val is not None and not isinstance(val, bytes):
        raise DecodeError("malformed", "entry.value")
    if not isinstance(signer, bytes) or len(signer) != FINGERPRINT_BYTES:
        raise DecodeError("malformed", "entry.signer")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise DecodeError("malformed", "entry.signature")
    if not isinstance(suspect, bool):
        raise DecodeError("malformed", "entry.suspect")
    hlc = Timestamp(_int(wall_ms, 0, MAX_HLC_WALL_MS, "entry.hlc"),
                    _int(logical, 0, MAX_HLC_LOGICAL, "entry.hlc"))  # fmt: skip
    return Entry(_key(key), _writer(writer), _int(counter, 1, MAX_COUNTER, "entry.counter"), hlc,
                 _pairs(ctx, "entry.context"), val, signer, signature, suspect)  # fmt: skip


def _entries(value: Any) -> tuple[Entry, ...]:
    return tuple(_entry(e) for e in _array(value, "entries"))


def _known(value: Any) -> KnownMaps:
    out = []
    for item in _array(value, "known"):
        pair = _array(item, "known")
        if len(pair) != 2:
            raise DecodeError("malformed", "known")
        out.append((_key(pair[0]), _pairs(pair[1], "known")))
    return tuple(out)


def _buckets(value: Any) -> tuple[int, ...]:
    arr = _array(value, "buckets")
    if len(arr) > BUCKETS:
        raise DecodeError("too_large", "buckets")
    return tuple(_int(b, 0, BUCKETS - 1, "bucket") for b in arr)


def _bucket_hashes(value: Any) -> tuple[tuple[int, bytes], ...]:
    arr = _array(value, "buckets")
    if len(arr) > BUCKETS:
        raise DecodeError("too_large", "buckets")
    out = []
    for item in arr:
        pair = _array(item, "bucket")
        if len(pair) != 2 or not isinstance(pair[1], bytes) or len(pair[1]) != BUCKET_HASH_BYTES:
            raise DecodeError("malformed", "bucket hash")
        out.append((_int(pair[0], 0, BUCKETS - 1, "bucket"), pair[1]))
    return tuple(out)
