"""The proxy's one clock: every instant is an int of nanoseconds, read from an injected object.

Theory of operation
-------------------
Deadlines, the watchdog, pool expiry, ejection, the retry budget's window and latency samples all
take "now" from one ``Clock`` and hold it as ``*_ns`` integers, so no instant exists in two units
and tests can drive time. Durations configured in milliseconds (``per_try_ms`` ...) are turned
into nanoseconds where they are added to an instant (``NS_PER_MS``).

The default, ``TrioClock``, reads trio's own clock (what ``trio.current_time()`` returns): under
``trio.testing.MockClock`` with autojump the proxy's timeouts pass in virtual time, and its
watchdog (a ``trio.sleep`` loop) ticks on the same clock it compares deadlines with. It binds the
run's clock object once (``bind``, called by ``Proxy.serve``) instead of going through
``trio.current_time()`` on every read: that is three Python frames, and the event engine reads
the time twice per request (about 80 ns a read bound, 250 ns unbound, on the benchmark machine).

``MonotonicClock`` is for code that runs outside any trio loop (the worker supervisor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import trio

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NEVER_NS = 1 << 62  # a deadline that never comes (about 146 years)


class Clock(Protocol):
    def now_ns(self) -> int:
        """Now, in integer nanoseconds on this clock's own (arbitrary) epoch."""
        ...


class TrioClock:
    """trio's clock, read in nanoseconds. Use inside one trio run (the one ``bind`` saw)."""

    __slots__ = ("_current_time",)

    def __init__(self) -> None:
        self._current_time: Callable[[], float] | None = None

    def bind(self) -> None:
        """Read the clock of the trio run this is called in from now on."""
        self._current_time = trio.lowlevel.current_clock().current_time

    def now_ns(self) -> int:
        read = self._current_time
        if read is None:
            self.bind()
            read = self._current_time
            assert read is not None
        return int(read() * NS_PER_S)


class MonotonicClock:
    """``time.monotonic_ns``: for code that runs before or outside a trio loop."""

    __slots__ = ()

    def now_ns(self) -> int:
        return time.monotonic_ns()


__all__ = ["NEVER_NS", "NS_PER_MS", "NS_PER_S", "Clock", "MonotonicClock", "TrioClock"]
