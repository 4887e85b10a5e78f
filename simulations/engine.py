"""The discrete-event engine: a virtual millisecond clock, one event heap and the seed tree.

Theory of operation
-------------------
Everything the simulator does is an *event*: a packet arriving, a core's timer firing, a TCP-like
push-pull leg completing, a scheduled fault, a metrics sample. Events live in one binary heap keyed
by ``(at_ms, seq)``: the virtual time in integer milliseconds (the unit the sans-IO cores speak) and
a global insertion counter. Two events due at the same millisecond therefore run in the order they
were scheduled, never in an order that depends on the payload's comparison or on hash
randomisation, which is what makes a run replayable bit for bit.

The heap holds one int per event, its *key* ``at_ms << 40 | seq``: ordering keys is ordering by
``(at_ms, seq)`` (``seq`` stays far below 2**40), and a sift step compares two ints where a tuple
would compare its first items for equality and then again for order (4 % of the steady state's
instructions at 300 hosts, more in a bigger heap). The event itself, a plain tuple ``(kind, a, b,
c)``, waits in a dict under its key; ``kind`` indexes a list of handler functions, so dispatch is
one list lookup and one call.

Randomness comes from one master seed. ``derive_seed(master, "network")`` or
``derive_seed(master, "node", name)`` hashes the master seed with a path of names into a child seed,
so adding a consumer (a new fault, a new node) never shifts the random stream of any other: the
network's losses stay the same when a scenario draws one more victim. Python's ``hash`` is never
used (it is salted per process); blake2b is.

The trace hash folds ``(time, kind, src, dst, size)`` of every dispatched packet, timer and
push-pull leg into a blake2b digest. Two runs with the same seed and options must print the same
digest; a test holds us to it. What is hashed is the ints as native 64-bit integers, five per event
(the bytes of an ``array("q")`` of them). They are batched in a list and packed and hashed in
chunks, because one ``blake2b.update`` per event would cost as much as the event itself, and
storing each int into an array on the spot costs a parse of it (``array``'s item setter goes
through ``PyArg_Parse``) where ``struct`` packs a whole chunk at once. The hot handlers (a packet,
a timer) append their five ints through ``record``, the list's own bound ``extend``, and
``run_until`` hashes the batch when it returns: one C call per event instead of a Python method.
blake2b digests a stream the same however it is cut into updates, so when the chunks are hashed
never shows in the digest.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from array import array
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any, Any, Any], None]

# An event's heap key is its time shifted above this many bits of its insertion number.
_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1

# Trace chunk: hash every 32k ints (~6.5k events) or more so memory stays flat on long runs.
_TRACE_FLUSH_INTS = 32_768

# The trace's ints are packed this many at a time by one compiled format. A batch packed whole
# (``struct.pack(f"{n}q", *batch)``) needs all its ints as one argument tuple and all its bytes
# at once: megabytes on top of the run's peak at thousands of hosts (5 MB of max RSS at 5,000).
_PACK_INTS = 4_096
_PACK_CHUNK = struct.Struct(f"{_PACK_INTS}q")  # native-order int64s, as array("q") holds them


def derive_seed(master: int, *path: object) -> int:
    """A 64-bit child seed for ``path`` under ``master``; stable across processes and versions."""
    text = "/".join([str(master), *(str(p) for p in path)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def derive_rng(master: int, *path: object) -> random.Random:
    """A ``random.Random`` seeded from ``derive_seed(master, *path)``."""
    return random.Random(derive_seed(master, *path))


class EventFailed(Exception):
    """An event's handler raised: a bug in a core or in the simulator, never a simulated fault.

    The run cannot go on (the world is half-updated), so it stops; ``at_ms`` and ``handler`` say
    where, and the original exception is the ``__cause__``.
    """

    def __init__(self, at_ms: int, handler: str, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error} (in {handler} at t={at_ms} ms)")
        self.at_ms = at_ms
        self.handler = handler
        self.error = error


class Engine:
    """Virtual clock plus event heap. Handlers are registered per integer ``kind``."""

    __slots__ = (
        "now_ms", "events_run", "record", "_heap", "_events", "_seq", "_handlers", "_trace",
        "_trace_buf",
    )  # fmt: skip

    def __init__(self) -> None:
        self.now_ms = 0
        self.events_run = 0
        self._heap: list[int] = []  # event keys (the module docstring)
        self._events: dict[int, tuple[Any, ...]] = {}  # key -> (kind, a, b, c)
        self._seq = 0
        self._handlers: list[Handler | None] = []
        self._trace = hashlib.blake2b(digest_size=16)
        self._trace_buf: list[int] = []
        # ``record((now_ms, kind, src, dst, size))`` folds one event into the trace, as ``trace``
        # does, for the handlers that run hundreds of thousands of times a simulated second's
        # worth: no Python call, and no flush check (``run_until`` flushes when it returns).
        self.record: Callable[[tuple[int, int, int, int, int]], None] = self._trace_buf.extend

    def register(self, kind: int, handler: Handler) -> None:
        while len(self._handlers) <= kind:
            self._handlers.append(None)
        self._handlers[kind] = handler

    def schedule(self, at_ms: int, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        # Never schedule into the past: a late event would silently reorder history.
        if at_ms < self.now_ms:
            at_ms = self.now_ms
        self._seq += 1
        key = at_ms << _SEQ_BITS | self._seq
        self._events[key] = (kind, a, b, c)
        heapq.heappush(self._heap, key)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> int | None:
        return self._heap[0] >> _SEQ_BITS if self._heap else None

    def queued(self) -> list[tuple[Any, ...]]:
        """Every pending event as ``(at_ms, seq, kind, a, b, c)``, in the order they will run."""
        events = self._events
        return [(k >> _SEQ_BITS, k & _SEQ_MASK, *events[k]) for k in sorted(self._heap)]

    def run_until(self, end_ms: int) -> None:
        """Run every event due at or before ``end_ms``; the clock then reads ``end_ms``."""
        heap = self._heap
        pop = heapq.heappop
        take = self._events.pop
        handlers = self._handlers
        # The keys of the events due at or before end_ms are exactly those below this one.
        limit = (end_ms + 1) << _SEQ_BITS
        n = 0
        try:
            while heap and heap[0] < limit:
                key = pop(heap)
                kind, a, b, c = take(key)
                self.now_ms = key >> _SEQ_BITS
                handlers[kind](a, b, c)
                n += 1
        except Exception as exc:
            self.events_run += n
            raise EventFailed(
                self.now_ms, getattr(handlers[kind], "__name__", str(kind)), exc
            ) from exc
        self.events_run += n
        if end_ms > self.now_ms:
            self.now_ms = end_ms
        # Events ``record``ed meanwhile wait in the buffer until here; the callers step the
        # clock a second at a time (``Cluster.run_until``), so it holds a second's events at most.
        if len(self._trace_buf) >= _TRACE_FLUSH_INTS:
            self._flush_trace()

    # -- trace -------------------------------------------------------------------------------

    def trace(self, kind: int, src: int, dst: int, size: int) -> None:
        """Fold one event into the trace hash (time is taken from the clock)."""
        buf = self._trace_buf
        buf.extend((self.now_ms, kind, src, dst, size))
        if len(buf) >= _TRACE_FLUSH_INTS:
            self._flush_trace()

    def _flush_trace(self) -> None:
        # Whole chunks only; the rest waits for the next flush. ``del`` edits the list in place,
        # so the bound ``record`` stays valid.
        buf = self._trace_buf
        whole = len(buf) - len(buf) % _PACK_INTS
        update = self._trace.update
        pack = _PACK_CHUNK.pack
        for i in range(0, whole, _PACK_INTS):
            update(pack(*buf[i : i + _PACK_INTS]))
        del buf[:whole]

    def trace_hash(self) -> str:
        """Hex digest of everything traced so far (does not disturb further tracing)."""
        h = self._trace.copy()
        h.update(array("q", self._trace_buf).tobytes())
        return h.hexdigest()
