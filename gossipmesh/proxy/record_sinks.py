"""The request log's two plain sinks: the access log (a file, written in batches off the event
loop) and a tap (one live subscriber's filtered, rate-capped, bounded channel).

Both take ``RequestRecord``s from ``RequestLog`` (request_log.py, which says when and why) and
never block the proxy: what does not fit is dropped and counted. ``TokenBucket`` is their rate
cap, on the proxy's clock.
"""

from __future__ import annotations

import os
from random import Random

import trio

from gossipmesh.proxy.clock import NS_PER_S
from gossipmesh.proxy.request_log import Probe, RequestRecord

ACCESS_BUFFER_LINES = 8192  # lines waiting for the writer; more are dropped (``dropped_buffer``)
ACCESS_FLUSH_S = 0.1  # the writer's period: a batch per period, written on a worker thread
DEFAULT_MAX_LINES_PER_S = 1000
FINAL_FLUSH_S = 1.0  # at exit, what is left may take this long to be written, no more

# -- the access log ---------------------------------------------------------------------------


class TokenBucket:
    """At most ``per_s`` a second, ``per_s`` in a burst; time from the proxy's clock (ns)."""

    __slots__ = ("per_s", "tokens", "last_ns")

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.tokens = per_s
        self.last_ns = -1

    def take(self, now_ns: int) -> bool:
        if self.last_ns >= 0:
            self.tokens = min(
                self.per_s, self.tokens + (now_ns - self.last_ns) * self.per_s / NS_PER_S
            )
        self.last_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AccessLog:
    """A sink: sampled (``sample_ratio``), rate-limited (``max_lines_per_s``, excess counted in
    ``dropped_rate``), buffered (``buffer_lines``, excess in ``dropped_buffer``); ``run`` writes
    the buffer to ``fd`` in batches on a worker thread."""

    def __init__(
        self,
        fd: int,
        sample_ratio: float = 1.0,
        max_lines_per_s: float = DEFAULT_MAX_LINES_PER_S,
        *,
        rng: Random | None = None,
        buffer_lines: int = ACCESS_BUFFER_LINES,
    ) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError("sample_ratio must be in 0..1")
        self.fd = fd
        self.sample_ratio = sample_ratio
        self.bucket = TokenBucket(max_lines_per_s)
        self.rng = rng or Random()
        self.buffer_lines = buffer_lines
        self.pending: list[RequestRecord] = []
        self.counters = {
            "written": 0,
            "dropped_rate": 0,
            "dropped_buffer": 0,
            "write_errors": 0,
        }

    def wants(self, p: Probe) -> bool:
        ratio = self.sample_ratio
        if ratio < 1.0 and self.rng.random() >= ratio:
            return False
        if not self.bucket.take(p.now_ns):
            self.counters["dropped_rate"] += 1
            return False
        if len(self.pending) >= self.buffer_lines:
            self.counters["dropped_buffer"] += 1
            return False
        return True

    def take(self, rec: RequestRecord) -> None:
        self.pending.append(rec)

    def take_batch(self) -> list[RequestRecord]:
        batch, self.pending = self.pending, []
        return batch

    def write_batch(self, batch: list[RequestRecord]) -> None:
        """Serialise and write (on a worker thread): one ``write`` per batch, O_APPEND whole."""
        data = "".join([r.json_line() for r in batch]).encode()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            self.counters["write_errors"] += 1
            return
        self.counters["written"] += len(batch)

    async def run(self, flush_s: float = ACCESS_FLUSH_S) -> None:
        """Write what accumulates, every ``flush_s``, until cancelled. A write that blocks (a
        pipe nobody reads) holds only its worker thread: the buffer fills and drops, counted,
        and cancelling abandons the thread, so the agent still stops. What is left at
        cancellation gets ``FINAL_FLUSH_S`` more to be written."""
        try:
            while True:
                await trio.sleep(flush_s)
                batch = self.take_batch()
                if batch:
                    await trio.to_thread.run_sync(self.write_batch, batch, abandon_on_cancel=True)
        finally:
            batch = self.take_batch()
            if batch:
                with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_S):
                    await trio.to_thread.run_sync(self.write_batch, batch, abandon_on_cancel=True)


# -- taps ------------------------------------------------------------------------------------

TAP_BUFFER = 256  # records a tap subscriber may have waiting; more are dropped (counted)


class TapFilter:
    """Which requests a tap wants: ``service`` (exact; "" any), ``path`` (a prefix), ``method``
    (exact, upper-case), ``status`` (an exact code, or a class ``"5xx"``), ``max_rps`` (records a
    second at most; the excess is counted in ``Tap.skipped``)."""

    __slots__ = ("service", "path", "method", "status", "max_rps")

    def __init__(
        self,
        service: str = "",
        path: str = "",
        method: str = "",
        status: str = "",
        max_rps: float = 100.0,
    ) -> None:
        self.service = service
        self.path = path.encode("latin-1")
        self.method = method.upper().encode("latin-1")
        self.status = status
        self.max_rps = max_rps

    def matches(self, p: Probe) -> bool:
        if self.service and p.service != self.service:
            return False
        if self.method and p.method != self.method:
            return False
        if self.path and not p.path.startswith(self.path):
            return False
        st = self.status
        if st:
            if st[1:] == "xx":
                return p.status // 100 == int(st[0])
            return p.status == int(st)
        return True


def parse_status_filter(text: str) -> str:
    """``"503"`` or ``"5xx"``; ValueError otherwise."""
    if (len(text) == 3 and text.isdigit()) or (
        len(text) == 3 and text[0] in "12345" and text[1:] == "xx"
    ):
        return text
    raise ValueError(f"status must be a code like 503 or a class like 5xx, not {text!r}")


class Tap:
    """A sink for one tap subscriber: matching records into a bounded channel; a slow reader
    loses records (``dropped``), a fast stream is capped at ``max_rps`` (``skipped``)."""

    def __init__(self, flt: TapFilter, buffer: int = TAP_BUFFER) -> None:
        self.filter = flt
        self.bucket = TokenBucket(flt.max_rps)
        self.send, self.receive = trio.open_memory_channel[RequestRecord](buffer)
        self.dropped = 0
        self.skipped = 0
        self.matched = 0

    def wants(self, p: Probe) -> bool:
        if not self.filter.matches(p):
            return False
        self.matched += 1
        if not self.bucket.take(p.now_ns):
            self.skipped += 1
            return False
        return True

    def take(self, rec: RequestRecord) -> None:
        try:
            self.send.send_nowait(rec)
        except trio.WouldBlock:
            self.dropped += 1


__all__ = [
    "ACCESS_BUFFER_LINES",
    "TAP_BUFFER",
    "AccessLog",
    "Tap",
    "TapFilter",
    "TokenBucket",
    "parse_status_filter",
]
