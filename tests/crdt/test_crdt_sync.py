"""Anti-entropy: push-pull converges, in-sync pairs move a few bytes, decode trusts nothing."""

from __future__ import annotations

import contextlib

import msgpack
from crdt_helpers import T0, new_doc, snapshot, write
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.crdt import sync
from gossipmesh.crdt.document import Document
from gossipmesh.crdt.entries import MAX_COUNTER
from gossipmesh.errors import DecodeError


def push_pull(a: Document, b: Document, wall_ms: int = T0) -> int:
    """Run one exchange A->B->A->B->A through the byte encoding; return bytes moved."""
    moved = 0
    message: sync.Message | None = sync.make_digest(a)
    docs = (b, a)
    turn = 0
    while message is not None:
        data = sync.encode(message)
        moved += len(data)
        message = sync.handle(docs[turn % 2], sync.decode(data), wall_ms).reply
        turn += 1
    return moved


def fill(doc: Document, n: int, writer: str) -> None:
    for i in range(n):
        body = {"destinations": [{"service": f"s{i}", "weight": i}]}
        write(doc, f"route/r{i}", body, writer, T0)


def test_push_pull_repairs_both_sides() -> None:
    a, b = new_doc(), new_doc()
    fill(a, 20, "a")
    write(b, "service/only-b", {"protocol": "tcp"}, "b", T0, op=1)
    push_pull(a, b)
    assert snapshot(a) == snapshot(b)
    assert b.get("route/r3") is not None and a.get("service/only-b") == {"protocol": "tcp"}


def test_in_sync_pair_moves_few_bytes_whatever_the_document_size() -> None:
    sizes = []
    for n in (10, 300):
        a, b = new_doc(), new_doc()
        for w in ("node-a", "node-b", "node-c"):
            fill(a, n, w)
        push_pull(a, b)
        assert snapshot(a) == snapshot(b)
        sizes.append(push_pull(a, b))
    assert sizes[0] == sizes[1] < 50  # the 32-byte root and a one-byte answer, plus framing


def test_only_the_differing_buckets_travel() -> None:
    a, b = new_doc(), new_doc()
    fill(a, 300, "a")
    push_pull(a, b)
    d = write(a, "route/new", {"x": 1}, "a", T0 + 1)
    reply = sync.respond(b, sync.make_digest(a))
    push = sync.on_reply(a, reply)
    assert push is not None and len(push.buckets) == 1
    assert d.entries[0] in push.entries and len(push.entries) < 10
    merged, back = sync.on_push(b, push, T0 + 1)
    assert merged.accepted == 1 and back.delta.entries == ()
    assert a.root_hash == b.root_hash


def test_equal_roots_but_no_differing_bucket_falls_back_to_all_buckets() -> None:
    a = new_doc()
    fill(a, 5, "a")
    forged = sync.SyncReply(False, tuple((k, h[:8]) for k, h in a.bucket_hashes().items()))
    push = sync.on_reply(a, forged)
    assert push is not None and len(push.buckets) == 256


def test_round_trip_of_every_message() -> None:
    a, b = new_doc(), new_doc()
    fill(a, 3, "a")
    write(a, "route/r1", None, "a", T0)
    write(b, "route/r1", {"v": 2}, "b", T0, op=1)
    b.merge(write(new_doc(), "route/r2", {"v": 9}, "z", T0 + 10**7), T0)  # suspect entry
    push = sync.on_reply(a, sync.respond(b, sync.make_digest(a)))
    assert push is not None
    msgs: list[sync.Message] = [
        sync.make_digest(a),
        sync.respond(b, sync.make_digest(a)),
        sync.SyncReply(True),
        push,
        sync.DeltaMessage(a.full_state()),
        sync.decode(sync.encode_snapshot(b)),
    ]
    for m in msgs:
        assert sync.decode(sync.encode(m)) == m
    assert sync.decode_delta(sync.encode_delta(b.full_state())) == b.full_state()


def test_a_counter_above_the_bound_does_not_decode() -> None:
    a = new_doc()
    fill(a, 1, "a")
    raw = msgpack.unpackb(sync.encode_delta(a.full_state()), raw=False)
    raw[2][-1][2] = MAX_COUNTER + 1
    try:
        sync.decode(msgpack.packb(raw, use_bin_type=True))
    except DecodeError as exc:
        assert exc.reason == "malformed"
    else:
        raise AssertionError("a counter of 2**53 decoded")


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


_a = new_doc()
fill(_a, 3, "a")
write(_a, "route/r0", None, "a", T0)
_push = sync.on_reply(_a, sync.SyncReply(False, ()))
assert _push is not None
VALID = [
    sync.encode(sync.DeltaMessage(_a.full_state())),
    sync.encode(sync.make_digest(_a)),
    sync.encode(sync.respond(new_doc(), sync.make_digest(_a))),
    sync.encode(_push),
]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(VALID).flatmap(_mutations))
def test_mutated_messages_raise_only_decode_error(data: bytes) -> None:
    try:
        msg = sync.decode(data)
    except DecodeError:
        return
    # Whatever decodes must be safe to feed to a replica.
    sync.handle(new_doc(), msg, T0)


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
@given(st.tuples(st.just(2), st.integers(1, 5)).flatmap(lambda h: json_like.map(lambda x: [*h, x])))
def test_structured_garbage_raises_only_decode_error(value: object) -> None:
    with contextlib.suppress(DecodeError):
        sync.decode(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(json_like | st.floats(allow_nan=True), min_size=1, max_size=7),
)
def test_garbage_of_every_arity_raises_only_decode_error(kind: int, fields: list[object]) -> None:
    """Each message kind with any number of fields of any type: the shape checks must answer
    DecodeError (``decode`` lets anything else surface as the validator bug it would be)."""
    try:
        msg = sync.decode(msgpack.packb([2, kind, *fields], use_bin_type=True))
    except DecodeError:
        return
    sync.handle(new_doc(), msg, T0)
