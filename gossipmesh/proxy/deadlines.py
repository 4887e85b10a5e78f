"""Timeouts without a cancel scope per request: one watchdog for every open raw socket.

Theory of operation
-------------------
Each ``SockIO`` carries ``deadline_ns`` on the proxy's clock (``NEVER_NS`` when nothing is
awaited of it). ``Deadlines`` holds every open raw socket; its watchdog wakes every tick, closes
each socket past its deadline and marks it ``timed_out``. Closing wakes the task parked on the
socket with an error, which that task reports as a timeout; a socket the event engine owns has no
task parked on it, so its ``owner`` is told instead (``on_timeout``). Resolution is one tick.
A cancel scope per request costs about 6 µs here; a field write costs nothing.

The watchdog sleeps with ``trio.sleep`` and compares with the same clock trio sleeps on (the
default ``TrioClock``), so under ``MockClock`` autojump a timeout fires in virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from gossipmesh.proxy.clock import NS_PER_MS, NS_PER_S, Clock
from gossipmesh.proxy.sockio import SockIO

log = logging.getLogger("gossipmesh.proxy")


class Deadlines:
    __slots__ = ("clock", "timed")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.timed: set[SockIO] = set()  # every open raw socket the proxy made or accepted

    def add(self, io: SockIO) -> None:
        self.timed.add(io)

    def discard(self, io: SockIO) -> None:
        self.timed.discard(io)

    def expire(self, now_ns: int) -> int:
        """Close every socket past its deadline; returns how many."""
        expired = [io for io in self.timed if io.deadline_ns <= now_ns]
        for io in expired:
            io.timed_out = True
            io.close()
            self.timed.discard(io)
            owner = io.owner
            if owner is not None:
                io.owner = None
                try:
                    owner.on_timeout(io)
                except Exception:
                    log.exception("proxy engine: timeout handling failed")
        return len(expired)

    async def watch(self, tick_ms: int, on_tick: Callable[[int], None]) -> None:
        """The watchdog: every ``tick_ms``, expire deadlines, then ``on_tick(now_ns)``."""
        tick_s = max(1, tick_ms) * NS_PER_MS / NS_PER_S
        while True:
            await trio.sleep(tick_s)
            now_ns = self.clock.now_ns()
            self.expire(now_ns)
            on_tick(now_ns)


__all__ = ["Deadlines"]
