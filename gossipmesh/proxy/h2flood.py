"""Bounds on the HTTP/2 floods: frames that cost the proxy work (or an answer) and move no
request forward.

Theory of operation
-------------------
The known HTTP/2 denial-of-service patterns all send cheap frames that each make the receiver
work: the rapid reset (CVE-2023-44487: open a stream, reset it at once, repeat, so every stream
starts work upstream and none is ever counted as open), SETTINGS and PING floods (each answered
with an ACK), empty DATA frames and WINDOW_UPDATEs (each processed for nothing), frames on
streams already reset (each answered with a RST_STREAM), PRIORITY and unknown frame types. The
CONTINUATION flood (a header block that never ends) is bounded where blocks are assembled
(h2core.py: bytes and frames per block).

A clock would make these rates, but the core is sans-IO; so each kind is held to the *useful
work* the connection does instead: a leaky bucket per kind fills by one per such frame and
drains by one per unit of work (a stream that completed, a DATA frame with content received or
sent). A burst is allowed (``BURST``), after it at most one such frame per unit of work: a
client that cancels streams whose answers flowed, or pings while it downloads, never notices; a
connection that only resets, or only pings, is ended after its burst, with a GOAWAY
ENHANCE_YOUR_CALM naming the flood (``ConnError``), counted by the link (h2link.py) in
``ProxyMetrics.h2_floods``. Opening a stream is not work: a rapid reset would refill its own
bucket. The buckets only ever cost something when such a frame arrives (``spend``); work is one
integer increment.
"""

from __future__ import annotations

from gossipmesh.proxy.h2frames import ConnError, ErrorCodes

RESET, SETTINGS, PING, EMPTY, WINDOW, CLOSED, OTHER = range(7)
NAMES = ("rapid_reset", "settings", "ping", "empty_data", "window_update", "closed_stream", "other")
BURST = (200, 100, 1000, 1000, 1000, 200, 1000)
# Header blocks: CONTINUATION frames one block may take (a block within our 64 KiB header list
# limit needs 4 at the default 16 KiB frame size).
MAX_CONTINUATIONS = 32


class FloodGuard:
    __slots__ = ("work", "level", "seen", "tripped")

    def __init__(self) -> None:
        self.work = 0  # units of useful work so far
        self.level = [0] * len(NAMES)
        self.seen = [0] * len(NAMES)  # ``work`` when each bucket last changed
        self.tripped = ""  # the flood that ended the connection, if any

    def spend(self, kind: int) -> None:
        """One frame of ``kind``: raise ``ConnError`` ENHANCE_YOUR_CALM past its bound."""
        work = self.work
        level = self.level[kind] - (work - self.seen[kind])
        if level < 0:
            level = 0
        level += 1
        self.level[kind] = level
        self.seen[kind] = work
        if level > BURST[kind]:
            self.trip(kind)

    def trip(self, kind: int) -> None:
        self.tripped = NAMES[kind]
        raise ConnError(ErrorCodes.ENHANCE_YOUR_CALM, f"HTTP/2 {NAMES[kind]} flood")


__all__ = ["BURST", "CLOSED", "EMPTY", "MAX_CONTINUATIONS", "NAMES", "OTHER", "PING", "RESET",
           "SETTINGS", "WINDOW", "FloodGuard"]  # fmt: skip
