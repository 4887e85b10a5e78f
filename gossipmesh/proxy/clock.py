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
the time twice per request. For trio's default ``SystemClock`` (``offset + perf_counter()``) it
reads ``perf_counter_ns() + offset`` itself, after checking at ``bind`` that the two agree: on the
benchmark machine that costs what ``time.monotonic()`` costs (about 50 ns), against about 250 ns
through ``trio.current_time()``.

``MonotonicClock`` is for code that runs outside any trio loop (the worker supervisor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from time import perf_counter_ns
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

    __slots__ = ("_offset_ns", "_current_time")

    def __init__(self) -> None:
        self._offset_ns: int | None = None
        self._current_time: Callable[[], float] | None = None

    def bind(self) -> None:
        """Read the clock of the trio run this is called in from now on."""
        clock = trio.lowlevel.current_clock()
        self._current_time = clock.current_time
        self._offset_ns = None
        # trio's default SystemClock is ``offset + time.perf_counter()``: read it as
        # perf_counter_ns() + offset without two Python frames per read. Checked, not assumed:
        # any other clock (MockClock) or formula is read through current_time().
        offset_s = getattr(clock, "offset", None)
        if type(clock).__name__ == "SystemClock" and isinstance(offset_s, float):
            offset_ns = round(offset_s * NS_PER_S)
            if (
                abs(time.perf_counter_ns() + offset_ns - clock.current_time() * NS_PER_S)
                < NS_PER_MS
            ):
                self._offset_ns = offset_ns

    def now_ns(self) -> int:
        offset_ns = self._offset_ns
        if offset_ns is not None:
            return perf_counter_ns() + offset_ns
        read = self._current_time
        if read is None:
            self.bind()
            return self.now_ns()
        return int(read() * NS_PER_S)


class MonotonicClock:
    """``time.monotonic_ns``: for code that runs before or outside a trio loop."""

    __slots__ = ()

    def now_ns(self) -> int:
        return time.monotonic_ns()


__all__ = ["NEVER_NS", "NS_PER_MS", "NS_PER_S", "Clock", "MonotonicClock", "TrioClock"]
