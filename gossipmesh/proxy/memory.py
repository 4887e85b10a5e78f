"""Memory given back after a connection storm.

Theory of operation
-------------------
Python frees a closed connection's objects at once (readers break their parser's reference
cycle, http1.py), but not the memory around them: the tables of the dicts and sets that held
10,000 connections keep their size, CPython's free lists keep thousands of small objects, and
glibc's malloc keeps freed pages in its arenas. ``Trimmer`` watches the number of open client
connections from the watchdog's sweep and, when a storm has passed (at least ``MIN_DROP``
connections gone since the peak, at most half of the peak left, and ``MIN_INTERVAL_NS`` since
the last time), compacts those tables in place (``compact``: the caller's), runs a full garbage
collection (which also empties the free lists; some 40 ms with an agent's heap) and asks glibc
to return free pages to the kernel (``malloc_trim(0)``, a no-op where glibc is not the
allocator). The decision is pure (``due``); the effects are the three calls.

What stays is fragmentation of CPython's own small-object arenas, which it frees only when
wholly empty: BENCHMARKS.md has the figures (an agent 10,000 idle connections later).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, MutableMapping, MutableSet
from typing import Any

MIN_DROP = 1000  # connections closed since the peak before a trim is worth it
MIN_INTERVAL_NS = 10_000_000_000  # a storm every second must not cost a collection each time


def _libc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def malloc_trim() -> None:
        trim(0)

    return malloc_trim


def compact(container: MutableMapping[Any, Any] | MutableSet[Any]) -> None:
    """Shrink ``container``'s table to its contents, keeping its identity (loops hold it)."""
    if isinstance(container, MutableMapping):
        items = dict(container)
        container.clear()  # frees the table
        container.update(items)
    else:
        members = set(container)
        container.clear()
        container |= members


class Trimmer:
    __slots__ = ("peak", "last_ns", "trims", "trim", "compact")

    def __init__(
        self, compact: Callable[[], None] | None = None, trim: Callable[[], None] | None = None
    ) -> None:
        self.peak = 0  # open connections at most since the last trim
        self.last_ns: int | None = None  # when the last trim ran
        self.trims = 0
        self.compact = compact
        self.trim = trim if trim is not None else _libc_trim()

    def due(self, open_now: int, now_ns: int) -> bool:
        """Note ``open_now``; True when a storm has passed since the last trim."""
        if open_now > self.peak:
            self.peak = open_now
            return False
        if self.last_ns is not None and now_ns - self.last_ns < MIN_INTERVAL_NS:
            return False
        return self.peak - open_now >= MIN_DROP and open_now * 2 <= self.peak

    def tick(self, open_now: int, now_ns: int) -> None:
        if self.due(open_now, now_ns):
            if self.compact is not None:
                self.compact()
            gc.collect()
            self.trim()
            self.trims += 1
            self.peak = open_now
            self.last_ns = now_ns


__all__ = ["MIN_DROP", "MIN_INTERVAL_NS", "Trimmer", "compact"]
