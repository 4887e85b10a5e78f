"""The proxy's clock (clock.py) and its watchdog (deadlines.py), on trio's MockClock."""

from __future__ import annotations

import socket

import trio
import trio.testing

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, NS_PER_S, MonotonicClock, TrioClock
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.sockio import SockIO


async def test_trio_clock_follows_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioClock()
    start_ns = clock.now_ns()
    assert start_ns == round(trio.current_time() * NS_PER_S)
    await trio.sleep(3600)  # an hour, in no real time
    assert clock.now_ns() - start_ns == 3600 * NS_PER_S


def test_trio_clock_reads_the_clock_of_the_run_it_was_bound_in() -> None:
    clock = TrioClock()

    async def agree() -> int:
        clock.bind()
        drift_ns = abs(clock.now_ns() - trio.current_time() * NS_PER_S)
        assert drift_ns < NS_PER_MS  # the same clock (SystemClock: a random offset per run)
        return clock.now_ns()

    trio.run(agree)
    trio.run(agree)
    mock = trio.testing.MockClock()
    mock.jump(1234.5)
    assert trio.run(agree, clock=mock) == 1234_500_000_000


def test_monotonic_clock_for_code_outside_trio() -> None:
    clock = MonotonicClock()
    a = clock.now_ns()
    assert clock.now_ns() >= a > 0


class Owner:
    def __init__(self) -> None:
        self.told: list[SockIO] = []

    def on_timeout(self, io: SockIO) -> None:
        self.told.append(io)


async def test_watchdog_closes_what_is_past_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioClock()
    deadlines = Deadlines(clock)
    a, b = socket.socketpair()
    late, spare = SockIO(a), SockIO(b)
    late.owner = owner = Owner()
    late.deadline_ns = clock.now_ns() + 120 * NS_PER_MS
    spare.deadline_ns = NEVER_NS
    deadlines.add(late)
    deadlines.add(spare)
    ticks: list[int] = []
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.watch, 50, ticks.append)
        while not late.closed:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # The first tick at or past the deadline: 150 ms (ticks at 50, 100, 150).
    assert abs(trio.current_time() - start - 0.15) < 0.011
    assert late.timed_out and owner.told == [late] and late.owner is None
    assert late not in deadlines.timed
    assert not spare.closed and spare in deadlines.timed
    assert len(ticks) == 3 and ticks[1] - ticks[0] == 50 * NS_PER_MS
    spare.close()
