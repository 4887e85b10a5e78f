"""The config document: registers with causal context, merge laws, limits, refusals, GC."""

from __future__ import annotations

import random
from typing import Any

import pytest
from crdt_helpers import merged, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.crdt.document import Delta, Document, stable_vector
from gossipmesh.errors import ConfigValidationError, LimitExceededError, UsageError

T0 = 1_700_000_000_000


def test_write_then_merge_elsewhere() -> None:
    a, b = Document(), Document()
    d = a.write("route/web", {"v": 1}, "a", T0)
    assert a.get("route/web") == {"v": 1}
    r = b.merge(d, T0)
    assert r.changed_keys == {"route/web"} and r.accepted == 1 and r.forward is not None
    assert b.get("route/web") == {"v": 1}
    again = b.merge(d, T0)  # duplicate: nothing changes, nothing to forward
    assert again.changed_keys == frozenset() and again.duplicates == 1 and again.forward is None
    assert snapshot(a) == snapshot(b)


def test_a_later_write_supersedes_what_it_saw() -> None:
    a, b = Document(), Document()
    b.merge(a.write("k", {"v": 1}, "a", T0), T0)
    d2 = b.write("k", {"v": 2}, "b", T0 + 1)
    a.merge(d2, T0 + 1)
    assert a.siblings("k") == b.siblings("k") and len(a.siblings("k")) == 1
    assert a.get("k") == {"v": 2} and a.conflicts() == []
    assert [v.value for v in a.history("k")] == [{"v": 2}, {"v": 1}]
    assert [v.current for v in a.history("k")] == [True, False]


def test_concurrent_writes_are_siblings_with_one_winner_everywhere() -> None:
    a, b, c = Document(), Document(), Document()
    base = a.write("k", {"v": 0}, "a", T0)
    b.merge(base, T0)
    da = a.write("k", {"v": "a"}, "a", T0 + 5)
    db = b.write("k", {"v": "b"}, "b", T0 + 9)  # later HLC: wins
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
    resolved = c.write("k", {"v": "c"}, "c", T0 + 20)
    a.merge(resolved, T0 + 20)
    assert a.conflicts() == [] and a.get("k") == {"v": "c"}


def test_equal_wall_clocks_tie_break_on_writer() -> None:
    a, b = Document(), Document()
    da = a.write("k", {"v": "a"}, "a", T0)
    db = b.write("k", {"v": "b"}, "b", T0)
    a.merge(db, T0)
    b.merge(da, T0)
    assert a.get("k") == b.get("k") == {"v": "b"}


def test_delete_is_a_tombstone_and_items_skip_it() -> None:
    a, b = Document(), Document()
    b.merge(a.write("service/x", {"p": 1}, "a", T0), T0)
    b.merge(a.write("service/y", {"p": 2}, "a", T0), T0)
    b.merge(a.write("service/x", None, "a", T0 + 1), T0 + 1)
    assert b.get("service/x") is None
    assert list(b.items("service/")) == [("service/y", {"p": 2})]
    assert a.write("service/never", None, "a", T0).entries == ()  # deleting nothing is a no-op


def test_apply_batch_is_one_atomic_delta() -> None:
    def validator(key: str, value: Any) -> None:
        if value.get("bad"):
            raise ConfigValidationError(f"{key}.bad", "no")

    a, b = Document(validator), Document(validator)
    batch = [(f"route/r{i}", {"i": i}) for i in range(50)]
    with pytest.raises(ConfigValidationError):
        a.apply_batch([*batch, ("route/z", {"bad": True})], "a", T0)
    assert list(a.items()) == [] and a.version_vector() == {}  # nothing written
    d = a.apply_batch(batch, "a", T0)
    assert len(d.entries) == 50
    b.merge(d, T0)
    assert len(list(b.items())) == 50 and snapshot(a) == snapshot(b)
    with pytest.raises(UsageError):
        a.apply_batch([("k", {}), ("k", {})], "a", T0)


def test_size_limits_name_the_limit() -> None:
    a = Document(max_entity_bytes=100, max_document_bytes=250)
    with pytest.raises(LimitExceededError, match="max_entity_bytes"):
        a.write("k", {"x": "y" * 200}, "a", T0)
    a.write("k1", {"x": "y" * 80}, "a", T0)
    a.write("k2", {"x": "y" * 80}, "a", T0)
    with pytest.raises(LimitExceededError, match="max_document_bytes"):
        a.write("k3", {"x": "y" * 80}, "a", T0)
    a.write("k2", {"x": "y" * 70}, "a", T0)  # replacing frees the old size
    big = Document()
    d = big.write("k", {"x": "y" * 200}, "b", T0)
    r = a.merge(d, T0)
    assert r.refused == 1 and r.refused_reasons == ("entity_size",) and a.get("k") is None
    assert a.stats["refused_entity_size"] == 1


def test_invalid_remote_entries_are_refused_counted_and_not_forwarded() -> None:
    def validator(key: str, value: Any) -> None:
        if "route" in value:
            raise ConfigValidationError("x", "bad")

    lax, strict = Document(), Document(validator)
    good = lax.write("k1", {"ok": 1}, "lax", T0)
    bad = lax.write("k2", {"route": 1}, "lax", T0)
    both = Delta(good.entries + bad.entries, good.context)
    r = strict.merge(both, T0)
    assert r.refused == 1 and r.refused_reasons == ("invalid",) and r.accepted == 1
    assert r.forward is not None and [e.key for e in r.forward.entries] == ["k1"]
    assert strict.get("k2") is None and strict.stats["refused_invalid"] == 1
    junk = Delta(
        (bad.entries[0].__class__("k3", "lax", 9, bad.entries[0].hlc, (), b"\xc1", False),)
    )
    assert strict.merge(junk, T0).refused_reasons == ("value_encoding",)


def test_a_write_from_a_fast_clock_is_suspect_and_does_not_win() -> None:
    fast, a, b = Document(), Document(max_drift_ms=500), Document(max_drift_ms=500)
    d_fast = fast.write("k", {"v": "fast"}, "fast", T0 + 3_600_000)  # an hour ahead
    d_a = a.write("k", {"v": "a"}, "a", T0)
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


def test_tombstones_are_collected_only_when_stable_and_old() -> None:
    a, b = Document(), Document()
    b.merge(a.write("k", {"v": 1}, "a", T0), T0)
    tomb = a.write("k", None, "a", T0 + 1)
    grace = 60_000
    late = T0 + 1 + grace
    # b has not seen the delete: not stable.
    stable = stable_vector([a.version_vector(), b.version_vector()])
    assert a.collect_garbage(stable, late, grace) == []
    b.merge(tomb, T0 + 2)
    stable = stable_vector([a.version_vector(), b.version_vector()])
    assert a.collect_garbage(stable, late - 1, grace) == []  # too young
    assert a.collect_garbage(stable, late, grace) == ["k"]
    assert b.collect_garbage(stable, late, grace) == ["k"]
    assert a.keys() == [] and a.root_hash == b.root_hash
    # A stale copy of the deleted value turns up: it is not resurrected.
    old = Document()
    old.write("k", {"v": 1}, "a", T0)
    a.merge(old.full_state(), late)
    assert a.get("k") is None


def test_tombstone_with_a_live_sibling_is_kept() -> None:
    a, b = Document(), Document()
    b.merge(a.write("k", {"v": 1}, "a", T0), T0)
    ta = a.write("k", None, "a", T0 + 1)
    tb = b.write("k", {"v": 2}, "b", T0 + 2)
    a.merge(tb, T0 + 3)
    b.merge(ta, T0 + 3)
    stable = stable_vector([a.version_vector(), b.version_vector()])
    assert a.collect_garbage(stable, T0 + 10**9, 0) == []
    assert a.get("k") == b.get("k") == {"v": 2}


def test_stable_vector_is_the_pointwise_minimum() -> None:
    assert stable_vector([{"a": 3, "b": 1}, {"a": 2}, {"a": 5, "b": 4}]) == {"a": 2}
    assert stable_vector([]) == {}


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
    docs = [Document() for _ in range(3)]
    deltas: list[Delta] = []
    wall = T0
    for replica, op, key, arg, advance in history:
        wall += advance
        doc = docs[replica]
        if op == "write":
            deltas.append(doc.write(key, {"v": arg, "by": replica}, f"n{replica}", wall))
        elif op == "delete":
            deltas.append(doc.write(key, None, f"n{replica}", wall))
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
    via_deltas = Document()
    for d in shuffled:
        via_deltas.merge(d, T0 + 10**8)
    assert snapshot(via_deltas) == snapshot(merged(*docs))
    # Every replica ends up alike once each has everything; the winner is the same everywhere.
    for doc in docs:
        for other in docs:
            doc.merge(other.full_state(), T0 + 10**8)
    assert len({snapshot(d) for d in docs}) == 1
    assert all(list(d.items()) == list(docs[0].items()) for d in docs)


def test_forward_names_only_its_own_dots_so_a_third_replica_still_asks_for_the_rest() -> None:
    # Regression: forward used to carry the incoming delta's whole context. B held k1 already, so
    # B's forward of A's full state had only k2 but named A's dot for k1 too; C joined that dot,
    # believed it had k1, and anti-entropy (which sends what the context lacks) never sent it.
    a, b, c = Document(), Document(), Document()
    d1 = a.write("k1", {"v": 1}, "a", 1000)
    a.write("k2", {"v": 2}, "a", 1001)
    b.merge(d1, 1000)
    result = b.merge(a.full_state(), 1002)
    assert result.forward is not None and [e.key for e in result.forward.entries] == ["k2"]
    assert result.forward.context.cloud == (("a", 2),) and result.forward.context.vv == ()
    c.merge(result.forward, 1003)
    assert not c.has_seen(("a", 1))
    c.merge(a.delta_for(c.context()), 1004)
    assert c.get("k1") == {"v": 1} and c.root_hash == a.root_hash
