"""Anti-entropy for the config document: digest, compare, send only what is missing (sans-IO).

Theory of operation
-------------------
Gossip carries fresh deltas fast but may lose some. Periodically a node A opens a stream to a peer
B and they run one push-pull:

1. A → B  ``Digest(root_hash, context)``: A's 8-byte root hash and its causal context (a version
   vector, one ``(writer, counter)`` per node that ever accepted a write, plus stray dots).
2. B compares root hashes. Equal: ``SyncReply(in_sync=True)`` and the exchange is over; the pair
   moved a few dozen bytes plus one pair per writer, whatever the size of the document. Otherwise
   B replies ``SyncReply(context_B, delta)`` where ``delta`` is everything A's context lacks.
3. A merges that and answers ``SyncPush(delta)`` with everything B's context lacks; B merges it.

Because merging is idempotent and a delta always travels with its context, a lost, repeated or
crossed exchange is harmless; the next round repairs it. The digests also tell the runtime every
peer's version vector, which is what it needs to decide causal stability for tombstone collection
(``document.stable_vector``).

The same ``DeltaMessage`` wraps a delta gossiped eagerly after a write.

Wire format (msgpack, arrays for compactness; every message starts ``[VERSION, TYPE, ...]``)::

    context  = [[[writer, counter], ...] (vv, writers ascending), [[writer, counter], ...] (cloud)]
    entry    = [key, writer, counter, hlc_wall_ms, hlc_logical,
                [[writer, counter], ...] (key context, writers ascending), value (bin|nil), suspect]
    delta    = [[entry, ...], context]
    Digest      = [1, 1, root_hash (bin 8), context]
    SyncReply   = [1, 2, in_sync (bool), context | nil, delta | nil]
    SyncPush    = [1, 3, delta]
    DeltaMessage= [1, 4, delta]

``value`` is the entity's msgpack encoding, carried as opaque bytes so hashes never depend on
re-encoding. ``decode`` validates everything (types, ranges, sizes, ordering) and raises
``DecodeError(reason)`` and nothing else, whatever the input bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from gossipmesh.crdt.document import Document
from gossipmesh.crdt.entries import (
    MAX_ENTITY_BYTES,
    MAX_KEY_BYTES,
    MAX_WRITER_BYTES,
    Context,
    Delta,
    Entry,
    MergeResult,
)
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.errors import DecodeError

VERSION = 1
T_DIGEST, T_REPLY, T_PUSH, T_DELTA = 1, 2, 3, 4
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a full 16 MiB document plus its framing, with headroom
MAX_ENTRIES = 1_000_000
MAX_CONTEXT_ITEMS = 100_000
MAX_COUNTER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Digest:
    root_hash: bytes
    context: Context


@dataclass(frozen=True, slots=True)
class SyncReply:
    in_sync: bool
    context: Context | None = None
    delta: Delta | None = None


@dataclass(frozen=True, slots=True)
class SyncPush:
    delta: Delta


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    delta: Delta


Message = Digest | SyncReply | SyncPush | DeltaMessage


# ---------------------------------------------------------------------------------------------
# The protocol steps, as pure functions over a Document


def make_digest(doc: Document) -> Digest:
    """Step 1 (initiator A)."""
    return Digest(doc.root_hash, doc.context())


def respond(doc: Document, digest: Digest) -> SyncReply:
    """Step 2 (responder B): in sync, or our context plus what the initiator lacks."""
    if digest.root_hash == doc.root_hash:
        return SyncReply(in_sync=True)
    return SyncReply(False, doc.context(), doc.delta_for(digest.context))


def on_reply(
    doc: Document, reply: SyncReply, wall_ms: int
) -> tuple[MergeResult | None, SyncPush | None]:
    """Step 3 (initiator A): merge what B sent; return what B lacks (None when in sync)."""
    if reply.in_sync or reply.context is None:
        return None, None
    result = doc.merge(reply.delta, wall_ms) if reply.delta is not None else None
    push = doc.delta_for(reply.context)
    if not push.entries and not _exceeds(push.context, reply.context):
        return result, None  # B already has everything we have
    return result, SyncPush(push)


def _exceeds(ours: Context, theirs: Context) -> bool:
    """Does ``ours`` hold a dot ``theirs`` lacks? (Then our context would still fill a hole.)"""
    return any(not theirs.contains((w, c)) for w, c in ours.vv) or any(
        not theirs.contains(d) for d in ours.cloud
    )


def on_push(doc: Document, push: SyncPush | DeltaMessage, wall_ms: int) -> MergeResult:
    """Step 4 (responder B), or receipt of a gossiped delta."""
    return doc.merge(push.delta, wall_ms)


@dataclass(frozen=True, slots=True)
class Handled:
    """What ``handle`` did: the merge result (if it merged) and a message to send back (if any)."""

    merged: MergeResult | None
    reply: Message | None


def handle(doc: Document, message: Message, wall_ms: int) -> Handled:
    """One entry point for a runtime: feed any decoded message, send back ``reply`` if set."""
    if isinstance(message, Digest):
        return Handled(None, respond(doc, message))
    if isinstance(message, SyncReply):
        merged, push = on_reply(doc, message, wall_ms)
        return Handled(merged, push)
    return Handled(on_push(doc, message, wall_ms), None)


# ---------------------------------------------------------------------------------------------
# Encoding


def _enc_pairs(pairs: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    return [[w, c] for w, c in pairs]


def _enc_context(ctx: Context) -> list[Any]:
    return [_enc_pairs(ctx.vv), _enc_pairs(ctx.cloud)]


def _enc_entry(e: Entry) -> list[Any]:
    return [e.key, e.writer, e.counter, e.hlc.wall_ms, e.hlc.logical, _enc_pairs(e.context),
            e.value, e.suspect]  # fmt: skip


def _enc_delta(d: Delta) -> list[Any]:
    return [[_enc_entry(e) for e in d.entries], _enc_context(d.context)]


def encode(message: Message) -> bytes:
    if isinstance(message, Digest):
        body: list[Any] = [VERSION, T_DIGEST, message.root_hash, _enc_context(message.context)]
    elif isinstance(message, SyncReply):
        body = [
            VERSION,
            T_REPLY,
            message.in_sync,
            None if message.context is None else _enc_context(message.context),
            None if message.delta is None else _enc_delta(message.delta),
        ]
    elif isinstance(message, SyncPush):
        body = [VERSION, T_PUSH, _enc_delta(message.delta)]
    elif isinstance(message, DeltaMessage):
        body = [VERSION, T_DELTA, _enc_delta(message.delta)]
    else:
        raise TypeError(f"not a sync message: {message!r}")
    return msgpack.packb(body, use_bin_type=True)


def encode_delta(delta: Delta) -> bytes:
    """A delta for gossip or for the store's log."""
    return encode(DeltaMessage(delta))


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
    except Exception as e:  # msgpack raises a zoo of types on bad input; all mean the same
        raise DecodeError("msgpack", type(e).__name__) from None
    try:
        return _message(raw)
    except DecodeError:
        raise
    except Exception as e:  # belt and braces: a validator bug must still look like bad input
        raise DecodeError("malformed", type(e).__name__) from None


def _message(raw: Any) -> Message:
    arr = _array(raw, "message")
    if len(arr) < 2:
        raise DecodeError("malformed", "short message")
    if arr[0] != VERSION or isinstance(arr[0], bool):
        raise DecodeError("version", repr(arr[0])[:32])
    kind = arr[1]
    if kind == T_DIGEST and not isinstance(kind, bool):
        _arity(arr, 4)
        root = arr[2]
        if not isinstance(root, bytes) or len(root) != 8:
            raise DecodeError("malformed", "root hash")
        return Digest(root, _context(arr[3]))
    if kind == T_REPLY and not isinstance(kind, bool):
        _arity(arr, 5)
        in_sync = arr[2]
        if not isinstance(in_sync, bool):
            raise DecodeError("malformed", "in_sync")
        ctx = None if arr[3] is None else _context(arr[3])
        delta = None if arr[4] is None else _delta(arr[4])
        return SyncReply(in_sync, ctx, delta)
    if kind == T_PUSH and not isinstance(kind, bool):
        _arity(arr, 3)
        return SyncPush(_delta(arr[2]))
    if kind == T_DELTA and not isinstance(kind, bool):
        _arity(arr, 3)
        return DeltaMessage(_delta(arr[2]))
    raise DecodeError("unknown_type", repr(kind)[:32])


def _arity(arr: list[Any], n: int) -> None:
    if len(arr) != n:
        raise DecodeError("malformed", f"expected {n} fields, got {len(arr)}")


def _array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError("malformed", f"{what}: expected array")
    return value


def _writer(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_WRITER_BYTES:
        raise DecodeError("malformed", "writer")
    return value


def _counter(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNTER:
        raise DecodeError("malformed", "counter")
    return value


def _pairs(value: Any, what: str, ascending_writers: bool) -> tuple[tuple[str, int], ...]:
    arr = _array(value, what)
    if len(arr) > MAX_CONTEXT_ITEMS:
        raise DecodeError("too_large", what)
    out = []
    for item in arr:
        pair = _array(item, what)
        if len(pair) != 2:
            raise DecodeError("malformed", what)
        out.append((_writer(pair[0]), _counter(pair[1])))
    if ascending_writers:
        for a, b in zip(out, out[1:], strict=False):
            if a[0] >= b[0]:
                raise DecodeError("malformed", f"{what}: writers not strictly ascending")
    return tuple(out)


def _context(value: Any) -> Context:
    arr = _array(value, "context")
    if len(arr) != 2:
        raise DecodeError("malformed", "context")
    vv = _pairs(arr[0], "context.vv", ascending_writers=True)
    cloud = _pairs(arr[1], "context.cloud", ascending_writers=False)
    return Context(vv, cloud)


def _entry(value: Any) -> Entry:
    arr = _array(value, "entry")
    if len(arr) != 8:
        raise DecodeError("malformed", "entry arity")
    key, writer, counter, wall_ms, logical, ctx, val, suspect = arr
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise DecodeError("malformed", "entry.key")
    for n in (wall_ms, logical):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNTER:
            raise DecodeError("malformed", "entry.hlc")
    if val is not None and not isinstance(val, bytes):
        raise DecodeError("malformed", "entry.value")
    if not isinstance(suspect, bool):
        raise DecodeError("malformed", "entry.suspect")
    return Entry(key, _writer(writer), _counter(counter), Timestamp(wall_ms, logical),
                 _pairs(ctx, "entry.context", ascending_writers=True), val, suspect)  # fmt: skip


def _delta(value: Any) -> Delta:
    arr = _array(value, "delta")
    if len(arr) != 2:
        raise DecodeError("malformed", "delta")
    entries = _array(arr[0], "delta.entries")
    return Delta(tuple(_entry(e) for e in entries), _context(arr[1]))
