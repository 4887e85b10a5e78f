"""One HTTP/2 connection, either side: the proxy's HTTP/2 core fed by a reader task, drained by
a writer task, and the flow-control waits of the streams that use it.

Theory of operation
-------------------
``H2Core`` (h2core.py) is sans-IO: bytes in, events out, frames to send. ``H2Link`` is its thin
shell. One reader task feeds it what the socket gives and files each event with its stream
(``Stream``: headers, body chunks, trailers, end, reset); one writer task sends what it queued
(the core's ``out`` buffer, shared: no copy between them). Every other task (one per proxied
stream) only calls its synchronous methods and awaits its own stream or a window, so the state
machine has one owner at a time (trio never switches tasks without an await) and needs no lock.
A stream's task and the idle writer park themselves and are rescheduled directly (no
``trio.Event`` per wait: one waiter each). The core checks every received header block
(h2codec.check_block) and bounds the HTTP/2 floods (h2flood.py); this module only turns a
connection error into the end of the link, counted (``errors``, ``flood``).

Flow control is the memory bound. A peer may send us at most our window per stream
(``h2_stream_window_bytes``) and per connection (``h2_connection_window_bytes``); a chunk
received is acknowledged (``ack``: the WINDOW_UPDATE that lets the peer send more) only once the
other side of the proxy took it (``send_data`` returned). A slow reader on one side therefore
stops the writer on the other side after one window, instead of making the proxy buffer. What
``send_data`` queues is bounded too: past ``h2_max_send_buffer_bytes // 8`` queued the sender
waits for the writer; control frames a peer provokes without reading (PING answers, SETTINGS
acks) past ``h2_max_send_buffer_bytes`` end the connection.

A stream that is abandoned (reset, its task gone) gives back the window its unread chunks held,
or the connection's window would shrink for good. SETTINGS limits we announce: at most
``h2_max_concurrent_streams`` streams (the core refuses more), a header list of at most
``max_header_bytes``; no server push. A GOAWAY takes the link out of use: streams above the
peer's last stream id were never processed (``Stream.refused``); after a graceful one (NO_ERROR)
the others run to their end and the link closes when idle, after an error one they are reset.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn

import trio
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from gossipmesh.proxy.h2core import H2Core, H2Settings
from gossipmesh.proxy.h2events import (
    REQUEST,
    RESPONSE,
    TRAILERS,
    DataIn,
    GoAwayIn,
    HeadersIn,
    ResetIn,
    StreamGone,
    WindowIn,
)
from gossipmesh.proxy.h2frames import ConnError, ErrorCodes
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.sockio import IO, ConnLost

Headers = list[tuple[bytes, bytes]]
GONE = -1  # Stream.reset when the connection itself ended


class LinkGone(Exception):
    """The connection ended (or the stream was reset) while a sender waited on it."""


class Stream:
    """What one stream received, for the task serving it. ``reset``: the peer's RST_STREAM error
    code, ``GONE`` when the connection ended, None while open."""

    __slots__ = (
        "link",
        "sid",
        "headers",
        "chunks",
        "trailers",
        "ended",
        "reset",
        "refused",
        "waiter",
        "partner",
    )

    def __init__(self, link: H2Link, sid: int, headers: Headers | None = None) -> None:
        self.link = link
        self.sid = sid
        self.headers = headers
        self.chunks: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled length)
        self.trailers: Headers | None = None
        self.ended = False
        self.reset: int | None = None
        self.refused = False  # never processed by the peer: safe to send elsewhere
        self.waiter: trio.lowlevel.Task | None = None  # the one task in ``changed``, if any
        # The stream on the other side of the proxy (client <-> upstream): woken too when this
        # one is reset, so a task waiting on either hears of it.
        self.partner: Stream | None = None

    def wake(self) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            reschedule(task)

    async def changed(self) -> None:
        """Wait for the next event of this stream (callers check the state first). One task
        at a time waits on a stream (its exchange, or its request pump), so a bare park and
        reschedule does what a ``trio.Event`` per wait did, for less."""
        self.waiter = current_task()
        await wait_task_rescheduled(self.abort)

    def abort(self, _: object) -> Abort:
        self.waiter = None
        return Abort.SUCCEEDED

    def __repr__(self) -> str:
        return f"<Stream {self.sid} ended={self.ended} reset={self.reset}>"


class H2Link:
    __slots__ = (
        "io",
        "core",
        "limits",
        "streams",
        "on_request",
        "out",
        "idle_writer",
        "drained",
        "window",
        "closed",
        "goaway",
        "ending",
        "errors",
        "flood",
        "recv_size",
    )

    def __init__(
        self,
        io: IO,
        client_side: bool,
        limits: ProxyLimits,
        on_request: Callable[[Stream, bool], None] | None = None,
    ) -> None:
        self.io = io
        self.limits = limits
        settings = H2Settings(
            limits.h2_max_concurrent_streams,
            limits.h2_stream_window_bytes,
            limits.max_header_bytes,
            limits.h2_connection_window_bytes,
        )
        core = self.core = H2Core(client_side, settings)
        self.streams: dict[int, Stream] = {}
        # Server side: a new request stream (its Stream with headers, and whether it ended).
        self.on_request = on_request
        self.out = core.out  # the core appends, the writer takes (one buffer)
        self.idle_writer: trio.lowlevel.Task | None = (
            None  # the writer, parked with nothing to send
        )
        self.drained = trio.Event()
        self.window = trio.Event()  # set (and replaced) whenever a send window may have grown
        self.closed = False
        self.goaway = False  # no new stream on this link
        self.ending = False  # close the connection once what is queued is sent
        self.errors = 0  # protocol errors (the peer's)
        self.flood = ""  # the flood (h2flood.NAMES) that ended the link, if one did
        self.recv_size = limits.recv_buffer_bytes
        self.flush()

    # -- the two tasks ---------------------------------------------------------------------

    async def serve(self, prefix: bytes = b"") -> None:
        """Run the reader and the writer until the connection ends (then the writer gets one
        last non-blocking try at what is queued: a GOAWAY naming the error)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.writer)
            await self.run(prefix)
            if self.out:
                send_last = getattr(self.io, "send_last", None)  # not on a StreamIO
                if send_last is not None:
                    send_last(bytes(self.out))
            nursery.cancel_scope.cancel()

    async def run(self, prefix: bytes = b"") -> None:
        """The reader: feed the state machine until the connection ends. ``prefix``: bytes
        already read off the socket (protocol detection)."""
        buf = bytearray(self.recv_size)
        mv = memoryview(buf)
        try:
            if prefix:
                self.feed(prefix)
            while not self.closed:
                n = await self.io.recv_into(mv)
                if n == 0:
                    break
                self.feed(bytes(mv[:n]))
        except (ConnLost, LinkGone):
            pass
        finally:
            self.die()

    async def writer(self) -> None:
        """Send what the state machine queued, in order; the only task that writes."""
        try:
            while True:
                if not self.out:
                    if self.closed:
                        return
                    if self.ending:
                        self.io.close()  # the reader hears it and ends the link
                        return
                    self.drained.set()
                    self.idle_writer = current_task()
                    await wait_task_rescheduled(self.abort_writer)
                    continue
                data = bytes(self.out)
                self.out.clear()
                await self.io.send_all(data)
        except ConnLost:
            self.die()

    def abort_writer(self, _: object) -> Abort:
        self.idle_writer = None
        return Abort.SUCCEEDED

    def wake_writer(self) -> None:
        task = self.idle_writer
        if task is not None:
            self.idle_writer = None
            reschedule(task)

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            events = self.core.receive(data)
        except ConnError as e:
            self.flood = self.core.guard.tripped
            self.fail(str(e))  # the core queued the GOAWAY naming the error
        streams = self.streams
        window = False
        for ev in events:
            t = type(ev)
            if t is DataIn:
                assert isinstance(ev, DataIn)
                s = streams.get(ev.sid)
                if s is None:
                    self.ack(ev.sid, ev.flow)  # abandoned stream
                    continue
                s.chunks.append((ev.data, ev.flow))
                if ev.ended:
                    s.ended = True
                s.wake()
            elif t is HeadersIn:
                assert isinstance(ev, HeadersIn)
                kind = ev.kind
                if kind == REQUEST:
                    s = Stream(self, ev.sid, ev.headers)
                    s.ended = ev.ended
                    streams[ev.sid] = s
                    if self.on_request is not None:
                        self.on_request(s, ev.ended)
                    continue
                s = streams.get(ev.sid)
                if s is None:
                    continue
                if kind == RESPONSE:
                    s.headers = ev.headers
                    if ev.ended:
                        s.ended = True
                    s.wake()
                elif kind == TRAILERS:
                    s.trailers = ev.headers
                    s.ended = True
                    s.wake()
            elif t is ResetIn:
                assert isinstance(ev, ResetIn)
                self.ended_by_peer(ev.sid, ev.code)
            elif t is WindowIn:
                window = True
            elif t is GoAwayIn:
                assert isinstance(ev, GoAwayIn)
                self.on_goaway(ev.last_sid, ev.code)
        if window:
            self.window.set()
            self.window = trio.Event()
        self.flush()

    def ended_by_peer(self, sid: int, code: int) -> None:
        """The peer (or the core, for a stream error) ended ``sid`` with ``code``: its waiters
        hear it, its unread window goes back. REFUSED_STREAM means never processed."""
        s = self.streams.pop(sid, None)
        if s is not None:
            s.reset = code
            s.refused = code == ErrorCodes.REFUSED_STREAM
            self.give_back(s)
            s.wake()
            if s.partner is not None:
                s.partner.wake()

    def on_goaway(self, last: int, code: int) -> None:
        """The peer takes no new stream. Ours above ``last`` it never processed (refused: safe
        to retry elsewhere); after a graceful GOAWAY (NO_ERROR) the others run to their end
        (RFC 9113 §6.8) and the link closes when idle; after an error GOAWAY the link ends."""
        self.goaway = True
        mine = 1 if self.core.client else 0
        for sid in [sid for sid in self.streams if sid > last and sid % 2 == mine]:
            self.ended_by_peer(sid, ErrorCodes.REFUSED_STREAM)
        if code != ErrorCodes.NO_ERROR or not self.streams:
            raise LinkGone("GOAWAY")

    def fail(self, why: str) -> NoReturn:
        """The peer broke the protocol: send the GOAWAY queued, then end."""
        self.errors += 1
        self.flush()
        self.goaway = True
        raise LinkGone(why) from None

    # -- output ----------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.out
        if out:
            if self.idle_writer is not None:
                self.wake_writer()
            if len(out) > self.limits.h2_max_send_buffer_bytes:
                self.die()  # a peer that provokes frames and never reads them

    def open_stream(self, headers: Headers, end: bool) -> Stream:
        """Client side: a new request stream (raises ``LinkGone`` if the link cannot take it)."""
        if self.closed or self.goaway:
            raise LinkGone("closed")
        sid = 0
        try:
            sid = self.core.open_stream()
            s = self.streams[sid] = Stream(self, sid)
            self.core.send_headers(sid, headers, end)
        except StreamGone as e:
            self.streams.pop(sid, None)
            self.goaway = True
            raise LinkGone(str(e)) from None
        self.flush()
        return s

    def send_headers(self, sid: int, headers: Sequence[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed:
            raise LinkGone("closed")
        try:
            self.core.send_headers(sid, headers, end)
        except StreamGone as e:
            raise LinkGone(str(e)) from None
        self.flush()

    async def send_data(self, sid: int, data: bytes, end: bool) -> None:
        """Send ``data`` on ``sid`` as the peer's windows allow (END_STREAM with the last byte if
        ``end``). Raises ``LinkGone`` if the stream or the connection ends first."""
        core = self.core
        view = memoryview(data)
        while True:
            if self.closed:
                raise LinkGone("closed")
            try:
                n = core.window(sid)  # within the peer's frame size too
                if not view:
                    if end:
                        core.end_stream(sid)
                        self.flush()
                    return
                if n > 0:
                    if n > len(view):
                        n = len(view)
                    last = n == len(view)
                    chunk = data if n == len(data) else view[:n].tobytes()
                    core.send_data(sid, chunk, end and last)
                    view = view[n:]
                    self.flush()
                    if last:
                        end = False  # sent with the data
                    if len(self.out) > self.limits.h2_max_send_buffer_bytes // 8:
                        await self.not_too_full()
                    if not view:
                        return
                    continue
            except StreamGone as e:
                raise LinkGone(str(e)) from None
            event = self.window
            await event.wait()

    async def not_too_full(self) -> None:
        while len(self.out) > self.limits.h2_max_send_buffer_bytes // 8 and not self.closed:
            self.drained = trio.Event()
            await self.drained.wait()

    def end_stream(self, sid: int) -> None:
        with contextlib.suppress(StreamGone):
            self.core.end_stream(sid)
        self.flush()

    def ack(self, sid: int, n: int) -> None:
        """``n`` flow-controlled bytes of ``sid`` were passed on: the peer may send more."""
        if n and not self.closed:
            self.core.ack(sid, n)
            self.flush()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM ``sid`` (if still open) and forget it."""
        s = self.streams.pop(sid, None)
        if not self.closed:
            self.core.reset(sid, code)  # nothing if the stream is closed already
        if s is not None:
            self.give_back(s)
        self.flush()

    def done(self, s: Stream) -> None:
        """The task serving ``s`` is finished with it."""
        if self.streams.get(s.sid) is s:
            del self.streams[s.sid]
        self.give_back(s)

    def give_back(self, s: Stream) -> None:
        """The window the unread chunks of an abandoned stream hold goes back to the link."""
        if s.chunks:
            n = sum(flow for _, flow in s.chunks)
            s.chunks.clear()
            self.ack(s.sid, n)

    def goaway_now(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """Tell the peer no new stream will be taken (the link closes when idle)."""
        self.goaway = True
        if not self.closed:
            self.core.close(code)
            self.flush()

    def end_when_sent(self) -> None:
        """Close the connection as soon as the writer has sent what is queued (a link with no
        stream left after a GOAWAY: its last answer must not be cut off)."""
        self.ending = True
        self.wake_writer()

    def die(self) -> None:
        """The connection ended: every stream still open hears it, every waiter wakes."""
        if self.closed:
            return
        self.closed = True
        self.goaway = True
        for s in self.streams.values():
            if s.reset is None and not s.ended:
                s.reset = GONE
            s.wake()
            if s.partner is not None:
                s.partner.wake()
        self.streams.clear()
        self.window.set()
        self.drained.set()
        self.wake_writer()

    @property
    def capacity(self) -> int:
        """Streams this (client) link may still open."""
        if self.closed or self.goaway or self.io.closed:
            return 0
        # Our own count: it holds each stream we opened until it is reset or done, so it never
        # counts fewer than the core's open ones.
        return self.core.peer_max_streams - len(self.streams)


__all__ = ["GONE", "Headers", "H2Link", "LinkGone", "Stream"]
