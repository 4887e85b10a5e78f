"""The config document: registers with causal context, merge laws, limits, refusals, GC."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from crdt_helpers import T0, apply_batch, merged, new_doc, sign, snapshot, write
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.crdt.document import Delta, Document
from gossipmesh.crdt.entries import MAX_COUNTER, MAX_FUTURE_MS
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.crdt.proposals import WriterExhaustedError
from gossipmesh.errors import ConfigValidationError, LimitExceededError, UsageError

CERTS = new_doc().size_bytes  # the two operators' cert entries every test document starts with


def test_write_then_merge_elsewhere() -> None:
    a, b = new_doc(), new_doc()
    d = write(a, "route/web", {"v": 1}, "a", T0)
    assert a.get("route/web") == {"v": 1}
    r = b.merge(d, T0)
    assert r.changed_keys == {"route/web"} and r.accepted == 1 and r.forward is not None
    assert b.get("route/web") == {"v": 1}
    again = b.merge(d, T0)  # duplicate: nothing changes, nothing to forward
    assert again.changed_keys == frozenset() and again.duplicates == 1 and again.forward is None
    assert snapshot(a) == snapshot(b)


def test_a_later_write_supersedes_what_it_saw() -> None:
    a, b = new_doc(), new_doc()
    b.merge(write(a, "k", {"v": 1}, "a", T0), T0)
    d2 = write(b, "k", {"v": 2}, "b", T0 + 1)
    a.merge(d2, T0 + 1)
    assert a.siblings("k") == b.siblings("k") and len(a.siblings("k")) == 1
    assert a.get("k") == {"v": 2} and a.conflicts() == []
    assert [v.value for v in a.history("k")] == [{"v": 2}, {"v": 1}]
    assert [v.current for v in a.history("k")] == [True, False]


def test_concurrent_writes_are_siblings_with_one_winner_everywhere() -> None:
    a, b, c = new_doc(), new_doc(), new_doc()
    base = write(a, "k", {"v": 0}, "a", T0)
    b.merge(base, T0)
    da = write(a, "k", {"v": "a"}, "a", T0 + 5)
    db = write(b, "k", {"v": "b"}, "b", T0 + 9)  # later HLC: wins
    a.merge(db, T0 + 10)
    b.merge(da, T0 + 10)
    c.merge(db, T0 + 10)
    c.merge(da, T0 + 10)
    c.merge(base, T0 + 10)  # late and superseded: ignored
    for doc in (a, b, c):
        assert doc.get("k") == {"v": "b"}
        (conflict,) = doc.conflicts()
        assert conflict.key == "k" and conflict.winner.writer == "b" and len(conflict.siblings) == 2
    assert snapshot(a) == snapshot(b) == snapshot(c)
    # A write that has seen both siblings resolves the conflict.
    resolved = write(c, "k", {"v": "c"}, "c", T0 + 20)
    a.merge(resolved, T0 + 20)
    assert a.conflicts() == [] and a.get("k") == {"v": "c"}


def test_equal_wall_clocks_tie_break_on_writer() -> None:
    a, b = new_doc(), new_doc()
    da = write(a, "k", {"v": "a"}, "a", T0)
    db = write(b, "k", {"v": "b"}, "b", T0)
    a.merge(db, T0)
    b.merge(da, T0)
    assert a.get("k") == b.get("k") == {"v": "b"}


def test_delete_is_a_tombstone_and_items_skip_it() -> None:
    a, b = new_doc(), new_doc()
    b.merge(write(a, "service/x", {"p": 1}, "a", T0), T0)
    b.merge(write(a, "service/y", {"p": 2}, "a", T0), T0)
    b.merge(write(a, "service/x", None, "a", T0 + 1), T0 + 1)
    assert b.get("service/x") is None
    assert list(b.items("service/")) == [("service/y", {"p": 2})]
    assert write(a, "service/never", None, "a", T0).entries == ()  # deleting nothing is a no-op


def test_apply_batch_is_one_atomic_delta() -> None:
    def validator(key: str, value: Any) -> None:
        if value.get("bad"):
            raise ConfigValidationError(f"{key}.bad", "no")

    a, b = new_doc(validator), new_doc(validator)
    batch = [(f"route/r{i}", {"i": i}) for i in range(50)]
    with pytest.raises(ConfigValidationError):
        apply_batch(a, [*batch, ("route/z", {"bad": True})], "a", T0)
    assert list(a.items("route/")) == [] and a.top("a") == 0  # nothing written
    d = apply_batch(a, batch, "a", T0)
    assert len(d.entries) == 50
    b.merge(d, T0)
    assert len(list(b.items("route/"))) == 50 and snapshot(a) == snapshot(b)
    with pytest.raises(UsageError):
        apply_batch(a, [("k", {}), ("k", {})], "a", T0)


def test_size_limits_name_the_limit() -> None:
    # The entity limit leaves room for the operators' cert entries (~600 bytes each).
    a = new_doc(max_entity_bytes=1000, max_document_bytes=2000 + CERTS)
    with pytest.raises(LimitExceededError, match="max_entity_bytes"):
        write(a, "k", {"x": "y" * 2000}, "a", T0)
    write(a, "k1", {"x": "y" * 800}, "a", T0)
    write(a, "k2", {"x": "y" * 800}, "a", T0)
    with pytest.raises(LimitExceededError, match="max_document_bytes"):
        write(a, "k3", {"x": "y" * 800}, "a", T0)
    write(a, "k2", {"x": "y" * 700}, "a", T0)  # replacing frees the old size
    big = new_doc()
    d = write(big, "k", {"x": "y" * 2000}, "b", T0)
    r = a.merge(d, T0)
    assert r.refused == 1 and r.refused_reasons == ("entity_size",) and a.get("k") is None
    assert a.stats["refused_entity_size"] == 1


def test_invalid_remote_entries_are_refused_counted_and_not_forwarded() -> None:
    def validator(key: str, value: Any) -> None:
        if "route" in value:
            raise ConfigValidationError("x", "bad")

    lax, strict = new_doc(), new_doc(validator)
    good = write(lax, "k1", {"ok": 1}, "lax", T0)
    bad = write(lax, "k2", {"route": 1}, "lax", T0)
    both = Delta(good.entries + bad.entries)
    r = strict.merge(both, T0)
    assert r.refused == 1 and r.refused_reasons == ("invalid",) and r.accepted == 1
    assert r.forward is not None and [e.key for e in r.forward.entries] == ["k1"]
    assert strict.get("k2") is None and strict.stats["refused_invalid"] == 1
    junk = Delta((sign(replace(bad.entries[0], key="k3", counter=9, value=b"\xc1")),))
    assert strict.merge(junk, T0).refused_reasons == ("value_encoding",)


def test_a_write_from_a_fast_clock_is_suspect_and_does_not_win() -> None:
    fast, a, b = new_doc(), new_doc(max_drift_ms=500), new_doc(max_drift_ms=500)
    d_fast = write(fast, "k", {"v": "fast"}, "fast", T0 + 3_600_000)  # an hour ahead
    d_a = write(a, "k", {"v": "a"}, "a", T0)
    r = a.merge(d_fast, T0)
    assert r.drifted == (("fast", 1),) and a.stats["drift_exceeded"] == 1
    assert a.get("k") == {"v": "a"}
    assert a.clock.now(T0).wall_ms == T0  # not dragged an hour ahead
    # The mark travels: b hears of the fast write from a (marked) and from fast itself (unmarked).
    assert r.forward is not None
    b.merge(d_a, T0)
    b.merge(d_fast, T0 + 3_600_000)  # b's clock is fine with it ...
    b.merge(r.forward, T0 + 3_600_000)  # ... but takes the mark when it arrives
    fast.merge(a.full_state(), T0 + 3_600_000)
    for doc in (a, b, fast):
        assert doc.get("k") == {"v": "a"}
    assert snapshot(a) == snapshot(b) == snapshot(fast)


def test_a_write_more_than_a_day_ahead_is_refused() -> None:
    far, a = new_doc(), new_doc()
    d = write(far, "k", {"v": 1}, "far", T0 + MAX_FUTURE_MS + 1)
    r = a.merge(d, T0)
    assert r.refused_reasons == ("future",) and a.get("k") is None
    assert a.merge(d, T0).refused == 1  # refused, so never counted as seen
    assert a.merge(d, T0 + 2).accepted == 1  # within a day now: kept, marked suspect


def test_tombstones_are_collected_after_the_grace_period() -> None:
    a, b = new_doc(), new_doc()
    stale = write(a, "k", {"v": 1}, "a", T0)
    b.merge(stale, T0)
    tomb = write(a, "k", None, "a", T0 + 1)
    grace = 60_000
    late = T0 + 1 + grace
    assert a.collect_garbage(late - 1, grace) == []  # too young
    root = a.root_hash
    assert a.collect_garbage(late, grace) == ["k"]
    assert a.stored("k") == () and a.root_hash == root  # the digest counts it by its known map
    assert a.known("k") == {"a": 2}
    # b never saw the delete and still holds the value: the digests differ, a sync repairs it.
    assert b.root_hash != a.root_hash
    b.merge(tomb, late)
    assert b.get("k") is None
    # A stale copy of the deleted value turns up: it is not resurrected.
    a.merge(stale, late)
    assert a.get("k") is None and a.stored("k") == ()


def test_a_tombstone_that_wins_over_a_live_sibling_is_kept() -> None:
    a, b = new_doc(), new_doc()
    b.merge(write(a, "k", {"v": 1}, "a", T0), T0)
    tb = write(b, "k", {"v": 2}, "b", T0 + 2)
    ta = write(a, "k", None, "a", T0 + 3)  # concurrent, later: the delete wins
    a.merge(tb, T0 + 3)
    b.merge(ta, T0 + 3)
    assert a.collect_garbage(T0 + 10**9, 0) == []
    assert a.get("k") is None and b.get("k") is None
    c = new_doc()
    c.merge(write(c, "j", {"v": 1}, "c", T0), T0)
    tc = write(c, "j", None, "c", T0 + 1)
    write(c, "j", {"v": 3}, "c", T0 + 2)  # a later write replaces the tombstone anyway
    assert tc.entries and c.collect_garbage(T0 + 10**9, 0) == []


def test_a_writer_whose_counters_ran_out_must_start_a_new_id() -> None:
    a = new_doc()
    a.restore_known({"k": {"a": MAX_COUNTER}})
    with pytest.raises(WriterExhaustedError):
        a.prepare([("k", {"v": 1})], "a", T0)
    assert write(a, "k", {"v": 1}, "a2", T0).entries


# ---------------------------------------------------------------------------------------------
# Merge laws, on states built by random histories of writes, deletes and partial merges.

KEYS = ["route/a", "route/b", "service/c"]
ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # replica
        st.sampled_from(["write", "delete", "merge"]),
        st.sampled_from(KEYS),
        st.integers(0, 3),  # value, or merge source
        st.integers(0, 2_000),  # wall-clock advance, ms
    ),
    max_size=25,
)


def build(history: list[tuple[int, str, str, int, int]]) -> tuple[list[Document], list[Delta]]:
    docs = [new_doc() for _ in range(3)]  # replica i writes as operator i % 2
    deltas: list[Delta] = []
    wall = T0
    for replica, op, key, arg, advance in history:
        wall += advance
        doc = docs[replica]
        if op == "write":
            body = {"v": arg, "by": replica}
            deltas.append(write(doc, key, body, f"n{replica}", wall, replica % 2))
        elif op == "delete":
            deltas.append(write(doc, key, None, f"n{replica}", wall, replica % 2))
        else:
            doc.merge(docs[arg % 3].full_state(), wall)
    return docs, deltas


@settings(max_examples=120, deadline=None)
@given(ops)
def test_merge_is_commutative_associative_idempotent(history: Any) -> None:
    (a, b, c), _ = build(history)
    assert snapshot(merged(a, b)) == snapshot(merged(b, a))
    assert snapshot(merged(merged(a, b), c)) == snapshot(merged(a, merged(b, c)))
    assert snapshot(merged(a, a)) == snapshot(merged(a)) == snapshot(a)
    for x in (a, b, c):  # merging into itself changes nothing
        before = snapshot(x)
        x.merge(x.full_state(), T0)
        assert snapshot(x) == before


@settings(max_examples=120, deadline=None)
@given(ops, st.randoms(use_true_random=False))
def test_deltas_in_any_order_with_duplicates_equal_full_states(
    history: Any, rnd: random.Random
) -> None:
    docs, deltas = build(history)
    shuffled = deltas + rnd.sample(deltas, k=len(deltas) // 2)  # duplicates
    rnd.shuffle(shuffled)
    via_deltas = new_doc()
    for d in shuffled:
        via_deltas.merge(d, T0 + 10**8)
    assert snapshot(via_deltas) == snapshot(merged(*docs))
    # Every replica ends up alike once each has everything; the winner is the same everywhere.
    for doc in docs:
        for other in docs:
            doc.merge(other.full_state(), T0 + 10**8)
    assert len({snapshot(d) for d in docs}) == 1
    assert all(list(d.items()) == list(docs[0].items()) for d in docs)


def test_forward_carries_only_what_was_new() -> None:
    a, b, c = new_doc(), new_doc(), new_doc()
    d1 = write(a, "k1", {"v": 1}, "a", 1000 + T0)
    write(a, "k2", {"v": 2}, "a", 1001 + T0)
    b.merge(d1, T0 + 1000)
    result = b.merge(a.full_state(), T0 + 1002)
    assert result.forward is not None and [e.key for e in result.forward.entries] == ["k2"]
    c.merge(result.forward, T0 + 1003)
    assert not c.has_seen("k1", ("a", 1))
    c.merge(Delta(tuple(a.missing_for(a.keys(), c.known_maps()))), T0 + 1004)
    assert c.get("k1") == {"v": 1} and c.root_hash == a.root_hash


def test_known_maps_decide_what_was_seen_per_key() -> None:
    a, b = new_doc(), new_doc()
    d1 = write(a, "k", {"v": 1}, "a", T0)
    d2 = write(a, "k", {"v": 2}, "a", T0 + 1)
    b.merge(d2, T0 + 1)  # the later write first: it covers the earlier one
    assert b.merge(d1, T0 + 1).duplicates == 1 and b.get("k") == {"v": 2}
    assert b.has_seen("k", ("a", 1)) and not b.has_seen("other", ("a", 1))
    assert snapshot(a) == snapshot(b)
    assert isinstance(b.max_hlc(), Timestamp)
