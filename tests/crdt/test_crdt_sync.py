"""Anti-entropy: push-pull converges, in-sync pairs move a few bytes, decode trusts nothing."""

from __future__ import annotations

import contextlib

import msgpack
from crdt_helpers import snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.crdt import sync
from gossipmesh.crdt.document import Document
from gossipmesh.errors import DecodeError

T0 = 1_700_000_000_000


def push_pull(a: Document, b: Document, wall_ms: int = T0) -> int:
    """Run one exchange A→B→A→B through the byte encoding; return bytes moved."""
    moved = 0
    m1 = sync.encode(sync.make_digest(a))
    moved += len(m1)
    out = sync.handle(b, sync.decode(m1), wall_ms)
    assert out.reply is not None
    m2 = sync.encode(out.reply)
    moved += len(m2)
    out = sync.handle(a, sync.decode(m2), wall_ms)
    if out.reply is not None:
        m3 = sync.encode(out.reply)
        moved += len(m3)
        sync.handle(b, sync.decode(m3), wall_ms)
    return moved


def fill(doc: Document, n: int, writer: str) -> None:
    for i in range(n):
        doc.write(f"route/r{i}", {"destinations": [{"service": f"s{i}", "weight": i}]}, writer, T0)


def test_push_pull_repairs_both_sides() -> None:
    a, b = Document(), Document()
    fill(a, 20, "a")
    b.write("service/only-b", {"protocol": "tcp"}, "b", T0)
    push_pull(a, b)
    assert snapshot(a) == snapshot(b)
    assert b.get("route/r3") is not None and a.get("service/only-b") == {"protocol": "tcp"}


def test_in_sync_pair_moves_few_bytes_whatever_the_document_size() -> None:
    sizes = []
    for n in (10, 1000):
        a, b = Document(), Document()
        for w in ("node-a", "node-b", "node-c"):
            fill(a, n, w)
        push_pull(a, b)
        assert snapshot(a) == snapshot(b)
        sizes.append(push_pull(a, b))
    print(f"in-sync push-pull bytes (3 writers): {sizes}")
    # Only the width of the counters grows (msgpack ints: 1 byte below 128, 3 bytes to 65535).
    assert sizes[1] - sizes[0] <= 3 * 2
    assert max(sizes) < 100


def test_only_missing_entries_are_sent() -> None:
    a, b = Document(), Document()
    fill(a, 500, "a")
    push_pull(a, b)
    d = a.write("route/new", {"x": 1}, "a", T0 + 1)
    reply = sync.respond(a, sync.make_digest(b))
    assert reply.delta is not None and [e.key for e in reply.delta.entries] == ["route/new"]
    assert d.entries[0] in reply.delta.entries


def test_round_trip_of_every_message() -> None:
    a, b = Document(), Document()
    fill(a, 3, "a")
    a.write("route/r1", None, "a", T0)
    b.write("route/r1", {"v": 2}, "b", T0)
    b.merge(a.write("route/r2", {"v": 9}, "z", T0 + 10**7), T0)  # suspect entry
    msgs: list[sync.Message] = [
        sync.make_digest(a),
        sync.respond(b, sync.make_digest(a)),
        sync.SyncReply(True),
        sync.SyncPush(b.full_state()),
        sync.DeltaMessage(a.full_state()),
    ]
    for m in msgs:
        assert sync.decode(sync.encode(m)) == m
    assert sync.decode_delta(sync.encode_delta(b.full_state())) == b.full_state()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        sync.decode(data)
    except DecodeError as e:
        assert e.reason


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, max(0, len(data) - 1)), st.integers(0, 255), st.booleans()).map(
        lambda t: (data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]) if t[2] else data[: t[0]]
    )


_a = Document()
fill(_a, 3, "a")
_a.write("route/r0", None, "a", T0)
VALID = [sync.encode(sync.DeltaMessage(_a.full_state())), sync.encode(sync.make_digest(_a))]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(VALID).flatmap(_mutations))
def test_mutated_messages_raise_only_decode_error(data: bytes) -> None:
    try:
        msg = sync.decode(data)
    except DecodeError:
        return
    # Whatever decodes must be safe to feed to a replica.
    sync.handle(Document(), msg, T0)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=9)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.just(1), st.integers(1, 4)).flatmap(lambda h: json_like.map(lambda x: [*h, x])))
def test_structured_garbage_raises_only_decode_error(value: object) -> None:
    with contextlib.suppress(DecodeError):
        sync.decode(msgpack.packb(value, use_bin_type=True))
