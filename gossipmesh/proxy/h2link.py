"""One HTTP/2 connection, either side: the h2 state machine fed by a reader task, drained by a
writer task, and the flow-control waits of the streams that use it.

Theory of operation
-------------------
``h2`` (python-hyper) is sans-IO: bytes in, events out, frames to send. ``H2Link`` is its thin
shell. One reader task feeds it what the socket gives and files each event with its stream
(``Stream``: headers, body chunks, trailers, end, reset); one writer task sends what it queued.
Every other task (one per proxied stream) only calls its synchronous methods and awaits its own
stream or a window, so the state machine has one owner at a time (trio never switches tasks
without an await) and needs no lock. A stream's task and the idle writer park themselves and are
rescheduled directly (no ``trio.Event`` per wait: one waiter each). The connection's HPACK coders
and its checks of received header blocks are h2codec.py's (h2's, for the same results, cost
several times more per request).

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
``h2_max_concurrent_streams`` streams (h2 refuses more), a header list of at most
``max_header_bytes``; no server push. A GOAWAY ends the link (h2 takes no frame after it):
streams above the peer's last stream id were never processed (``Stream.refused``), the others
are reset.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn

import trio
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from gossipmesh.proxy.h2codec import (
    REQUEST,
    RESPONSE,
    TRAILERS,
    PlainDecoder,
    PlainEncoder,
    check_block,
)
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.sockio import IO, ConnLost

Headers = list[tuple[bytes, bytes]]
DEFAULT_WINDOW = 65_535
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
        "h2",
        "limits",
        "streams",
        "on_request",
        "out",
        "idle_writer",
        "drained",
        "window",
        "closed",
        "goaway",
        "errors",
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
        # What a peer sends is validated (``check_block``, in ``feed``: h2's own pass costs
        # several times more); what we send is built from validated blocks minus the fields RFC
        # 9113 forbids (h2heads.py), so h2 need not check it again on the way out. Our blocks
        # are HPACK-encoded without Huffman or dynamic table (h2codec.py: CPU over bytes).
        config = H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        h2 = self.h2 = H2Connection(config)
        h2.encoder = PlainEncoder()  # type: ignore[assignment]
        h2.decoder = PlainDecoder()  # type: ignore[assignment]
        initial = {
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.h2_max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.h2_stream_window_bytes,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
        }
        if client_side:
            initial[SettingCodes.ENABLE_PUSH] = 0
        h2.local_settings = Settings(client=client_side, initial_values=initial)
        h2.decoder.max_header_list_size = limits.max_header_bytes
        h2.initiate_connection()
        extra = limits.h2_connection_window_bytes - DEFAULT_WINDOW
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self.streams: dict[int, Stream] = {}
        # Server side: a new request stream (its Stream with headers, and whether it ended).
        self.on_request = on_request
        self.out = bytearray()
        self.idle_writer: trio.lowlevel.Task | None = (
            None  # the writer, parked with nothing to send
        )
        self.drained = trio.Event()
        self.window = trio.Event()  # set (and replaced) whenever a send window may have grown
        self.closed = False
        self.goaway = False  # no new stream on this link
        self.errors = 0  # protocol errors (the peer's)
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
                sock = getattr(self.io, "sock", None)
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sock.send(bytes(self.out))  # type: ignore[union-attr]
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
            events = self.h2.receive_data(data)
        except (ProtocolError, FlowControlError) as e:
            self.fail(str(e))  # h2 queued the GOAWAY naming the error
        for ev in events:
            try:
                if isinstance(ev, RequestReceived):
                    check_block(ev.headers, REQUEST)
                elif isinstance(ev, ResponseReceived):
                    check_block(ev.headers, RESPONSE)
                elif isinstance(ev, TrailersReceived):
                    check_block(ev.headers, TRAILERS)
            except ProtocolError as e:
                with contextlib.suppress(H2Error):
                    self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
                self.fail(str(e))
        streams = self.streams
        for ev in events:
            if isinstance(ev, DataReceived):
                s = streams.get(ev.stream_id)
                if s is None:
                    self.ack(ev.stream_id, ev.flow_controlled_length)  # abandoned stream
                    continue
                s.chunks.append((ev.data, ev.flow_controlled_length))
                if ev.stream_ended is not None:
                    s.ended = True
                s.wake()
            elif isinstance(ev, RequestReceived):
                s = Stream(self, ev.stream_id, ev.headers)
                ended = ev.stream_ended is not None
                s.ended = ended
                streams[ev.stream_id] = s
                if self.on_request is not None:
                    self.on_request(s, ended)
            elif isinstance(ev, ResponseReceived):
                s = streams.get(ev.stream_id)
                if s is not None:
                    s.headers = ev.headers
                    if ev.stream_ended is not None:
                        s.ended = True
                    s.wake()
            elif isinstance(ev, TrailersReceived):
                s = streams.get(ev.stream_id)
                if s is not None:
                    s.trailers = ev.headers
                    s.ended = True
                    s.wake()
            elif isinstance(ev, StreamEnded):
                s = streams.get(ev.stream_id)
                if s is not None:
                    s.ended = True
                    s.wake()
            elif isinstance(ev, StreamReset):
                s = streams.pop(ev.stream_id, None)
                if s is not None:
                    s.reset = ev.error_code
                    s.refused = ev.error_code == ErrorCodes.REFUSED_STREAM
                    self.give_back(s)
                    s.wake()
                    if s.partner is not None:
                        s.partner.wake()
            elif isinstance(ev, WindowUpdated | RemoteSettingsChanged):
                self.window.set()
                self.window = trio.Event()
            elif isinstance(ev, ConnectionTerminated):
                last = ev.last_stream_id or 0
                for sid, s in streams.items():
                    if sid > last and sid % 2 == 1:
                        s.refused = True  # our request the peer says it never processed
                self.goaway = True
                raise LinkGone("GOAWAY")
        self.flush()

    def fail(self, why: str) -> NoReturn:
        """The peer broke the protocol: send the GOAWAY queued, then end."""
        self.errors += 1
        self.flush()
        self.goaway = True
        raise LinkGone(why) from None

    # -- output ----------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.out += data
            if self.idle_writer is not None:
                self.wake_writer()
            if len(self.out) > self.limits.h2_max_send_buffer_bytes:
                self.die()  # a peer that provokes frames and never reads them

    def open_stream(self, headers: Headers, end: bool) -> Stream:
        """Client side: a new request stream (raises ``LinkGone`` if the link cannot take it)."""
        if self.closed or self.goaway:
            raise LinkGone("closed")
        sid = 0
        try:
            sid = self.h2.get_next_available_stream_id()
            s = self.streams[sid] = Stream(self, sid)
            self.h2.send_headers(sid, headers, end_stream=end)
        except H2Error as e:
            self.streams.pop(sid, None)
            self.goaway = True
            raise LinkGone(str(e)) from None
        self.flush()
        return s

    def send_headers(self, sid: int, headers: Sequence[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed:
            raise LinkGone("closed")
        try:
            self.h2.send_headers(sid, headers, end_stream=end)
        except H2Error as e:
            raise LinkGone(str(e)) from None
        self.flush()

    async def send_data(self, sid: int, data: bytes, end: bool) -> None:
        """Send ``data`` on ``sid`` as the peer's windows allow (END_STREAM with the last byte if
        ``end``). Raises ``LinkGone`` if the stream or the connection ends first."""
        h2 = self.h2
        view = memoryview(data)
        while True:
            if self.closed:
                raise LinkGone("closed")
            try:
                window = h2.local_flow_control_window(sid)
                if not view:
                    if end:
                        h2.end_stream(sid)
                        self.flush()
                    return
                n = min(window, len(view), h2.max_outbound_frame_size)
                if n > 0:
                    last = n == len(view)
                    chunk = data if n == len(data) else view[:n].tobytes()
                    h2.send_data(sid, chunk, end_stream=end and last)
                    view = view[n:]
                    self.flush()
                    if last:
                        end = False  # sent with the data
                    if len(self.out) > self.limits.h2_max_send_buffer_bytes // 8:
                        await self.not_too_full()
                    if not view:
                        return
                    continue
            except (StreamClosedError, H2Error) as e:
                raise LinkGone(str(e)) from None
            event = self.window
            await event.wait()

    async def not_too_full(self) -> None:
        while len(self.out) > self.limits.h2_max_send_buffer_bytes // 8 and not self.closed:
            self.drained = trio.Event()
            await self.drained.wait()

    def end_stream(self, sid: int) -> None:
        with contextlib.suppress(H2Error):
            self.h2.end_stream(sid)
        self.flush()

    def ack(self, sid: int, n: int) -> None:
        """``n`` flow-controlled bytes of ``sid`` were passed on: the peer may send more."""
        if n and not self.closed:
            try:  # noqa: SIM105 (contextlib.suppress costs an object per chunk)
                self.h2.acknowledge_received_data(n, sid)
            except H2Error:
                pass
            self.flush()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM ``sid`` (if still open) and forget it."""
        s = self.streams.pop(sid, None)
        h2s = self.h2.streams.get(sid)
        if not self.closed and h2s is not None and not h2s.closed:  # else closed already
            with contextlib.suppress(H2Error):
                self.h2.reset_stream(sid, code)
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
            with contextlib.suppress(H2Error):
                self.h2.close_connection(code)
            self.flush()

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
        # Our own count: h2's walks its whole stream table. Ours holds each stream we opened
        # until it is reset or done, so it never counts fewer than h2's open ones.
        return self.h2.remote_settings.max_concurrent_streams - len(self.streams)


__all__ = ["GONE", "Headers", "H2Link", "LinkGone", "Stream"]
