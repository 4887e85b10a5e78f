"""The hybrid logical clock: monotonic, follows peers, refuses to be dragged by a fast one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.crdt.hlc import DriftExceeded, HybridClock, Observed, Timestamp


def test_ticks_within_a_millisecond_and_follows_the_wall_clock() -> None:
    c = HybridClock()
    assert c.now(1000) == Timestamp(1000, 0)
    assert c.now(1000) == Timestamp(1000, 1)
    assert c.now(999) == Timestamp(1000, 2)  # wall clock stepped back: still monotonic
    assert c.now(1005) == Timestamp(1005, 0)


def test_observe_within_bound_moves_the_clock() -> None:
    c = HybridClock(max_drift_ms=500)
    c.now(1000)
    assert c.observe(Timestamp(1400, 7), 1000) == Observed(Timestamp(1400, 7))
    assert c.now(1000) == Timestamp(1400, 8)


def test_remote_too_far_ahead_is_flagged_and_does_not_drag_us() -> None:
    c = HybridClock(max_drift_ms=500)
    c.now(1000)
    out = c.observe(Timestamp(1501, 0), 1000)
    assert out == DriftExceeded(Timestamp(1501, 0), 501)
    assert c.now(1000) == Timestamp(1000, 1)
    assert isinstance(c.observe(Timestamp(1500, 0), 1000), Observed)  # exactly at the bound is ok


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 10_000)), max_size=50)
)
def test_now_is_strictly_increasing(steps: list[tuple[bool, int, int]]) -> None:
    c = HybridClock(max_drift_ms=500)
    last = c.now(0)
    for local, wall, remote_wall in steps:
        if not local:
            c.observe(Timestamp(remote_wall, 3), wall)
        ts = c.now(wall)
        assert ts > last
        assert ts.wall_ms <= max(wall, remote_wall, last.wall_ms)
        last = ts


def test_logical_counter_never_leaves_its_range() -> None:
    clock = HybridClock(500)
    clock.observe(Timestamp(1000, 2**32 - 1), 1000)
    assert clock.now(1000) == Timestamp(1001, 0)
