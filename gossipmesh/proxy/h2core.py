"""The proxy's HTTP/2 connection core: sans-IO, bytes in, events and bytes out, for exactly what
the proxy uses of RFC 9113. This is its receiving half; its state and sending half is h2state.py.

Theory of operation
-------------------
``H2Core`` is one end of one connection (client or server side). ``receive`` takes what the
socket gave, cuts it into frames (h2frames.py: the header, our 16 KiB SETTINGS_MAX_FRAME_SIZE
checked before the payload is awaited, each type's payload checks) and runs each through the
connection's state, returning events (h2events.py); what it must answer (SETTINGS and PING
acknowledgements, WINDOW_UPDATEs, RST_STREAMs, a GOAWAY) goes to ``out``. No clock, no I/O.
The ``h2`` library, which this replaces on the proxy's path, is the tests' oracle
(tests/proxy/test_h2_core.py feeds both the same bytes and compares).

Streams. A server's first read is the client preface; the first frame of either peer must be
SETTINGS (§3.4). Frames for an idle stream (above the highest id its side opened) are a
PROTOCOL_ERROR; for a closed one a STREAM_CLOSED connection error, except on a stream reset
lately (h2state.py ``reset_ids``): frames the peer sent before it saw our RST_STREAM are
discarded, frames after its own RST_STREAM answered with RST_STREAM STREAM_CLOSED (§5.1; DATA's
length is given back to the connection window either way). WINDOW_UPDATE, RST_STREAM and
PRIORITY on a closed stream are ignored; PRIORITY is checked, then ignored (§5.3.2). DATA beyond a window, or a window past 2^31-1, is a FLOW_CONTROL_ERROR.

Limits. At most our SETTINGS_MAX_CONCURRENT_STREAMS streams opened by the peer: more are refused
(RST_STREAM REFUSED_STREAM, after their block is decoded: HPACK's table is the connection's),
as are new streams after our GOAWAY. A header block is assembled from HEADERS and CONTINUATION
frames up to ``max_header_list`` bytes and ``MAX_CONTINUATIONS`` frames, then decoded
(h2codec.PlainDecoder, the same limit on the decoded list) and checked (h2codec.check_block,
RFC 9113 §8.2-§8.3): a request, a response (1xx ones are informational), or trailers, which
must end the stream. The other floods are bounded by h2flood.py.

Errors. A connection error queues a GOAWAY (last stream id: the highest the peer opened) with
its code and raises ``ConnError``; the core takes nothing after it.
"""

from __future__ import annotations

from h2.exceptions import ProtocolError
from hpack.exceptions import HPACKError, OversizedHeaderListError

from gossipmesh.proxy import h2flood
from gossipmesh.proxy.h2codec import check_block
from gossipmesh.proxy.h2events import (
    INFORMATIONAL,
    REQUEST,
    RESPONSE,
    TRAILERS,
    WINDOW,
    DataIn,
    Event,
    GoAwayIn,
    HeadersIn,
    ResetIn,
)
from gossipmesh.proxy.h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    WINDOW_UPDATE,
    ConnError,
    ErrorCodes,
    check_stream_zero,
    frame,
    goaway_of,
    priority_of,
    rst_stream,
    settings_of,
    strip_padding,
    u32_of,
    unpack_head,
)
from gossipmesh.proxy.h2state import H2Settings, H2State, StreamState


class H2Core(H2State):
    __slots__ = ()

    # -- input -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """The events the peer's ``data`` caused. Raises ``ConnError`` (GOAWAY queued) if the
        peer broke the protocol."""
        events: list[Event] = []
        if self.dead:
            return events
        if self.buf:
            data = self.buf + data
            self.buf = b""
        try:
            pos = 0
            if self.preface:
                pos = self.check_preface(data)
                if self.preface:
                    return events
            n = len(data)
            while n - pos >= 9:
                hi, lo, kind, flags, sid = unpack_head(data, pos)
                length = (hi << 8) | lo
                if length > DEFAULT_FRAME_SIZE:  # our SETTINGS_MAX_FRAME_SIZE
                    raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = pos + 9 + length
                if end > n:
                    break
                payload = data[pos + 9 : end]
                pos = end
                self.on_frame(kind, flags, sid & 0x7FFFFFFF, payload, events)
            if pos < n:
                self.buf = data[pos:]
        except ConnError as e:
            self.fail(e.code)
            raise
        return events

    def check_preface(self, data: bytes) -> int:
        want = self.preface
        got = data[: len(want)]
        if not want.startswith(got):
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, "not the HTTP/2 client preface")
        self.preface = want[len(got) :]
        return len(got)

    def on_frame(
        self, kind: int, flags: int, sid: int, payload: bytes, events: list[Event]
    ) -> None:
        if self.block_sid and kind != CONTINUATION:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"frame type {kind} inside a header block")
        if not self.got_settings:
            if kind != SETTINGS or flags & ACK:
                raise ConnError(ErrorCodes.PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self.got_settings = True
        if kind == DATA:
            self.on_data(flags, sid, payload, events)
        elif kind == HEADERS:
            self.on_headers(flags, sid, payload, events)
        elif kind == WINDOW_UPDATE:
            self.on_window_update(sid, payload, events)
        elif kind == RST_STREAM:
            self.on_rst(sid, payload, events)
        elif kind == SETTINGS:
            check_stream_zero(kind, sid)
            self.on_settings(flags, payload, events)
        elif kind == PING:
            check_stream_zero(kind, sid)
            if len(payload) != 8:
                raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, f"PING of {len(payload)} bytes")
            if not flags & ACK:
                self.guard.spend(h2flood.PING)
                self.out += frame(PING, ACK, 0, payload)
        elif kind == CONTINUATION:
            self.on_continuation(flags, sid, payload, events)
        elif kind == PRIORITY:
            check_stream_zero(kind, sid)
            if len(payload) != 5:
                raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, f"PRIORITY of {len(payload)} bytes")
            priority_of(payload, 0, sid)  # checked, then ignored (RFC 9113 §5.3.2)
            self.guard.spend(h2flood.OTHER)
        elif kind == GOAWAY:
            check_stream_zero(kind, sid)
            last, code = goaway_of(payload)
            self.goaway_received = True
            events.append(GoAwayIn(last, code))
        elif kind == PUSH_PROMISE:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, "PUSH_PROMISE (push is off)")
        else:
            self.guard.spend(h2flood.OTHER)  # an unknown type: ignored (§4.1)

    def closed_or_idle(self, sid: int, kind: int) -> bool:
        """A frame of ``kind`` for ``sid``, which is not open: raise for an idle stream or one
        long closed. For a stream reset lately: False if we reset it (a frame the peer sent
        before it saw our RST_STREAM: discarded, §5.1), True if the peer did (a stream error
        STREAM_CLOSED the caller answers)."""
        mine = (sid & 1) == (1 if self.client else 0)
        if sid > (self.last_local if mine else self.last_remote):
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"frame type {kind} on idle stream {sid}")
        ours = self.reset_ids.get(sid)
        if ours is not None:
            self.guard.spend(h2flood.CLOSED)
            return not ours
        raise ConnError(ErrorCodes.STREAM_CLOSED, f"frame type {kind} on closed stream {sid}")

    def closed_remote(self, sid: int, s: StreamState, events: list[Event]) -> None:
        """A frame on a stream the peer ended (half-closed remote): a stream error
        STREAM_CLOSED (§5.1). The stream is gone; whoever waits on it hears so (``ResetIn``),
        as after the peer's own reset."""
        self.guard.spend(h2flood.CLOSED)
        self.forget(sid, s, normal=False)
        self.remember_reset(sid)
        self.out += rst_stream(sid, ErrorCodes.STREAM_CLOSED)
        events.append(ResetIn(sid, ErrorCodes.STREAM_CLOSED))

    def on_data(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid == 0:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flags & PADDED:
            start, stop = strip_padding(payload, flags)
            data = payload[start:stop]
        else:
            data = payload
        self.conn_recv -= flow
        if self.conn_recv < 0:
            raise ConnError(ErrorCodes.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        s = self.streams.get(sid)
        if s is None:
            answer = self.closed_or_idle(sid, DATA)
            self.ack_connection(flow)  # its length still counted against the connection
            if answer:
                self.out += rst_stream(sid, ErrorCodes.STREAM_CLOSED)
            return
        if s.remote_done:
            self.ack_connection(flow)
            self.closed_remote(sid, s, events)
            return
        if not s.got_headers:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"DATA before HEADERS on {sid}")
        s.recv_window -= flow
        if s.recv_window < 0:
            raise ConnError(ErrorCodes.FLOW_CONTROL_ERROR, f"DATA beyond the window of {sid}")
        ended = bool(flags & END_STREAM)
        if data:
            self.guard.work += 1
        elif not ended:
            self.guard.spend(h2flood.EMPTY)
        events.append(DataIn(sid, data, flow, ended))
        if ended:
            s.remote_done = True
            if s.local_done:
                self.forget(sid, s)

    def on_headers(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid == 0:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PRIORITY_FLAG and len(payload) < (6 if flags & PADDED else 5):
            raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "HEADERS too short for its fields")
        start, stop = strip_padding(payload, flags) if flags & PADDED else (0, len(payload))
        if flags & PRIORITY_FLAG:
            priority_of(payload, start, sid)  # checked, then ignored
            start += 5
            if start > stop:
                raise ConnError(ErrorCodes.PROTOCOL_ERROR, "padding over the priority fields")
        fragment = payload[start:stop] if start or stop != len(payload) else payload
        if flags & END_HEADERS:
            self.on_block(sid, bool(flags & END_STREAM), fragment, events)
            return
        self.check_block_size(len(fragment))
        self.block_sid = sid
        self.block_end = bool(flags & END_STREAM)
        self.block_parts = [fragment]
        self.block_size = len(fragment)
        self.block_frames = 0

    def check_block_size(self, size: int) -> None:
        if size > self.settings.max_header_list:
            self.guard.tripped = "header_block"
            raise ConnError(ErrorCodes.ENHANCE_YOUR_CALM, f"a header block over {size - 1} bytes")

    def on_continuation(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not self.block_sid or sid != self.block_sid:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"CONTINUATION out of place on {sid}")
        self.block_frames += 1
        if self.block_frames > h2flood.MAX_CONTINUATIONS:
            self.guard.tripped = "continuation"
            raise ConnError(ErrorCodes.ENHANCE_YOUR_CALM, "HTTP/2 CONTINUATION flood")
        self.block_size += len(payload)
        self.check_block_size(self.block_size)
        self.block_parts.append(payload)
        if flags & END_HEADERS:
            block = b"".join(self.block_parts)
            self.block_sid = 0
            self.block_parts = []
            self.on_block(sid, self.block_end, block, events)

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self.decoder.decode(block)
        except OversizedHeaderListError as e:
            raise ConnError(ErrorCodes.ENHANCE_YOUR_CALM, str(e)) from None
        except HPACKError as e:
            raise ConnError(ErrorCodes.COMPRESSION_ERROR, str(e)) from None

    def on_block(self, sid: int, ended: bool, block: bytes, events: list[Event]) -> None:
        headers = self.decode(block)  # first: HPACK's table is the connection's state
        s = self.streams.get(sid)
        if s is None:
            if self.client or (sid & 1) == 0 or sid <= self.last_remote:
                if self.closed_or_idle(sid, HEADERS):
                    self.out += rst_stream(sid, ErrorCodes.STREAM_CLOSED)
                return
            self.last_remote = sid
            if self.goaway_sent or self.remote_open >= self.settings.max_streams:
                self.guard.spend(h2flood.RESET)
                self.out += rst_stream(sid, ErrorCodes.REFUSED_STREAM)
                self.remember_reset(sid)
                return
            self.check(headers, REQUEST)
            s = self.streams[sid] = StreamState(self.peer_window, self.settings.stream_window)
            self.remote_open += 1
            kind = REQUEST
        elif s.remote_done:
            self.closed_remote(sid, s, events)  # (the block was decoded: HPACK stays in step)
            return
        elif s.got_headers:
            if not ended:
                raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"trailers without END_STREAM on {sid}")
            self.check(headers, TRAILERS)
            kind = TRAILERS
        else:
            self.check(headers, RESPONSE)
            kind = RESPONSE
            if headers[0][1][:1] == b"1":  # :status first (checked): 1xx, more to come
                if ended:
                    raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"a 1xx ending stream {sid}")
                kind = INFORMATIONAL
        if kind != INFORMATIONAL:
            s.got_headers = True
        events.append(HeadersIn(sid, headers, ended, kind))
        if ended:
            s.remote_done = True
            if s.local_done:
                self.forget(sid, s)

    def check(self, headers: list[tuple[bytes, bytes]], kind: int) -> None:
        try:
            check_block(headers, kind)
        except ProtocolError as e:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, str(e)) from None

    def on_window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        increment = u32_of(payload, "WINDOW_UPDATE")
        if increment == 0:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"WINDOW_UPDATE of 0 on {sid}")
        self.guard.spend(h2flood.WINDOW)
        if sid == 0:
            self.conn_send += increment
            if self.conn_send > MAX_WINDOW:
                raise ConnError(ErrorCodes.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
        else:
            s = self.streams.get(sid)
            if s is None:
                if sid in self.reset_ids:
                    return
                mine = (sid & 1) == (1 if self.client else 0)
                if sid > (self.last_local if mine else self.last_remote):
                    raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle {sid}")
                return  # closed: §6.9 says it can arrive
            s.send_window += increment
            if s.send_window > MAX_WINDOW:  # a stream error (§6.9.1): that stream ends
                self.forget(sid, s, normal=False)
                self.remember_reset(sid)
                self.out += rst_stream(sid, ErrorCodes.FLOW_CONTROL_ERROR)
                events.append(ResetIn(sid, ErrorCodes.FLOW_CONTROL_ERROR))
                return
        events.append(WINDOW)

    def on_rst(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid == 0:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        code = u32_of(payload, "RST_STREAM")
        s = self.streams.get(sid)
        if s is None:
            mine = (sid & 1) == (1 if self.client else 0)
            if sid > (self.last_local if mine else self.last_remote):
                raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"RST_STREAM on idle {sid}")
            self.guard.spend(h2flood.OTHER)
            return
        self.guard.spend(h2flood.RESET)
        self.forget(sid, s, normal=False)
        self.remember_reset(sid, False)  # frames after it: a stream error STREAM_CLOSED
        events.append(ResetIn(sid, code))

    def on_settings(self, flags: int, payload: bytes, events: list[Event]) -> None:
        if flags & ACK:
            if payload:
                raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        self.guard.spend(h2flood.SETTINGS)
        for ident, value in settings_of(payload):
            if ident == INITIAL_WINDOW_SIZE:
                delta = value - self.peer_window
                self.peer_window = value
                for s in self.streams.values():
                    s.send_window += delta
                    if s.send_window > MAX_WINDOW:
                        raise ConnError(ErrorCodes.FLOW_CONTROL_ERROR, "a window over 2^31-1")
            elif ident == MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif ident == MAX_FRAME_SIZE:
                self.max_out_frame = value
            elif ident == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
            elif ident == ENABLE_PUSH and value and self.client:
                raise ConnError(ErrorCodes.PROTOCOL_ERROR, "a server enabling push")
        self.out += SETTINGS_ACK
        events.append(WINDOW)


__all__ = ["H2Core", "H2Settings"]
