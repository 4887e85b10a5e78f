"""The state of one HTTP/2 connection and everything the proxy sends on it; the receiving half
is h2core.py (``H2Core`` extends ``H2State``).

Theory of operation
-------------------
Per stream (``StreamState``) two flags say whether each end sent END_STREAM, which together
are RFC 9113 §5.1's open / half-closed (local) / half-closed (remote); a stream whose both ends
are done, or that either side reset, leaves the table (closed), and is counted as useful work
for the flood bounds (h2flood.py) if it completed. Streams reset are remembered (``reset_ids``,
the last ``RESET_MEMORY``, and by whom): the peer's frames sent before it saw our RST_STREAM
are expected, not an error.

Sending. ``open_stream`` (client side) keeps to the peer's SETTINGS_MAX_CONCURRENT_STREAMS and
takes no stream after either side's GOAWAY; ``send_headers`` HPACK-encodes with
h2codec.PlainEncoder and splits the block at the peer's SETTINGS_MAX_FRAME_SIZE;
``send_data`` sends one DATA frame within ``window(sid)``: the smaller of the connection's and
the stream's send windows and the peer's frame size. A send on a stream that cannot take it
raises ``StreamGone``. Everything goes to ``out``, drained by the link's writer.

Receive windows. The peer may send at most our windows (``H2Settings``); ``ack`` gives back
what the proxy passed on as WINDOW_UPDATEs, batched as the ``h2`` library batches them
(``give_back``: half the window's largest size processed, or a full window emptied), so the
two are frame-for-frame comparable in the tests that hold this core to ``h2``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossipmesh.proxy import h2flood
from gossipmesh.proxy.h2codec import PlainDecoder, PlainEncoder
from gossipmesh.proxy.h2events import StreamGone
from gossipmesh.proxy.h2frames import (
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_STREAM,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    PREFACE,
    ErrorCodes,
    goaway,
    header_frames,
    pack_head,
    rst_stream,
    settings_frame,
    window_update,
)

RESET_MEMORY = 1024  # streams we reset whose late frames are still expected


class H2Settings:
    """What we announce: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE, and the connection window we open past the default."""

    __slots__ = ("max_streams", "stream_window", "max_header_list", "connection_window")

    def __init__(
        self, max_streams: int, stream_window: int, max_header_list: int, connection_window: int
    ) -> None:
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.max_header_list = max_header_list
        self.connection_window = connection_window


class StreamState:
    """One open stream: the windows both ways and which ends are done."""

    __slots__ = ("send_window", "recv_window", "recv_max", "processed", "local_done",
                 "remote_done", "got_headers", "sent_headers")  # fmt: skip

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window  # what we may still send
        self.recv_window = recv_window  # what the peer may still send
        self.recv_max = recv_window  # the largest that window was (h2's batching rule)
        self.processed = 0  # acknowledged bytes not yet given back
        self.local_done = False  # we sent END_STREAM
        self.remote_done = False  # the peer did
        self.got_headers = False  # the peer's first header block arrived
        self.sent_headers = False  # ours went: a second block is trailers, and ends the stream


def give_back(window: int, most: int, processed: int) -> int:
    """How much of ``processed`` to give back now (0: wait), as h2's ``WindowManager``:
    half the window's largest size processed, or the window empty and a little processed."""
    if (window == 0 and processed > min(1024, most // 4)) or processed >= most // 2:
        return min(processed, most - window)
    return 0


class H2State:
    __slots__ = ("client", "streams", "out", "buf", "preface", "encoder", "decoder",
                 "settings", "got_settings", "conn_send", "conn_recv", "conn_recv_max",
                 "conn_processed", "peer_window", "peer_max_streams", "max_out_frame",
                 "next_sid", "last_remote", "last_local", "remote_open", "local_open",
                 "reset_ids", "block_sid", "block_end", "block_parts", "block_size",
                 "block_frames", "goaway_sent", "goaway_received", "dead", "guard")  # fmt: skip

    def __init__(self, client: bool, settings: H2Settings) -> None:
        self.client = client
        self.settings = settings
        self.streams: dict[int, StreamState] = {}
        self.out = bytearray()
        self.buf = b""  # an incomplete frame left over from the last ``receive``
        self.preface = b"" if client else PREFACE  # what of the client preface is still due
        self.encoder = PlainEncoder()
        self.decoder = PlainDecoder()
        self.decoder.max_header_list_size = settings.max_header_list
        self.got_settings = False
        self.conn_send = DEFAULT_WINDOW
        self.conn_recv = self.conn_recv_max = DEFAULT_WINDOW
        self.conn_processed = 0
        self.peer_window = DEFAULT_WINDOW  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_max_streams = 2**31  # unlimited until its SETTINGS say
        self.max_out_frame = DEFAULT_FRAME_SIZE
        self.next_sid = 1 if client else 2
        self.last_remote = 0  # the highest stream id the peer opened
        self.last_local = 0
        self.remote_open = 0
        self.local_open = 0
        self.reset_ids: dict[int, bool] = {}  # reset by us? oldest first
        self.block_sid = 0  # a header block being assembled on this stream (0: none)
        self.block_end = False
        self.block_parts: list[bytes] = []
        self.block_size = 0
        self.block_frames = 0
        self.goaway_sent = False
        self.goaway_received = False
        self.dead = False  # a connection error ended it
        self.guard = h2flood.FloodGuard()
        values = {
            MAX_CONCURRENT_STREAMS: settings.max_streams,
            INITIAL_WINDOW_SIZE: settings.stream_window,
            MAX_HEADER_LIST_SIZE: settings.max_header_list,
        }
        if client:
            values[ENABLE_PUSH] = 0
        self.out += (PREFACE if client else b"") + settings_frame(values)
        extra = settings.connection_window - DEFAULT_WINDOW
        if extra > 0:
            self.out += window_update(0, extra)
            self.conn_recv = self.conn_recv_max = settings.connection_window

    # -- streams leaving -------------------------------------------------------------------

    def forget(self, sid: int, s: StreamState, normal: bool = True) -> None:
        del self.streams[sid]
        if (sid & 1) == (1 if self.client else 0):
            self.local_open -= 1
        else:
            self.remote_open -= 1
        if normal:
            self.guard.work += 1

    def remember_reset(self, sid: int, ours: bool = True) -> None:
        """``sid`` was reset: by us (``ours``) or by the peer."""
        ids = self.reset_ids
        ids[sid] = ours
        if len(ids) > RESET_MEMORY:
            del ids[next(iter(ids))]

    # -- output ----------------------------------------------------------------------------

    def open_stream(self) -> int:
        """A new stream of ours (client side); raises ``StreamGone`` if the peer's limits or
        a GOAWAY do not allow one."""
        sid = self.next_sid
        if self.dead or self.goaway_received or self.goaway_sent or sid > MAX_WINDOW:
            raise StreamGone("the connection takes no new stream")
        if self.local_open >= self.peer_max_streams:
            raise StreamGone(f"the peer allows {self.peer_max_streams} streams")
        self.next_sid = sid + 2
        self.last_local = sid
        self.streams[sid] = StreamState(self.peer_window, self.settings.stream_window)
        self.local_open += 1
        return sid

    def sendable(self, sid: int) -> StreamState:
        s = self.streams.get(sid)
        if s is None or s.local_done or self.dead:
            raise StreamGone(f"stream {sid} is closed")
        return s

    def send_headers(self, sid: int, headers: Sequence[tuple[bytes, bytes]], end: bool) -> None:
        s = self.sendable(sid)
        if s.sent_headers and not end:
            raise StreamGone(f"trailers without END_STREAM on {sid}")
        s.sent_headers = True
        block = self.encoder.encode(headers)
        self.out += header_frames(sid, block, end, self.max_out_frame)
        if end:
            self.local_end(sid, s)

    def window(self, sid: int) -> int:
        """What ``send_data`` may send on ``sid`` now (``StreamGone`` if nothing ever)."""
        s = self.sendable(sid)
        w = s.send_window if s.send_window < self.conn_send else self.conn_send
        return w if w < self.max_out_frame else self.max_out_frame

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        """One DATA frame; ``data`` within ``window(sid)``."""
        s = self.sendable(sid)
        n = len(data)
        if n > s.send_window or n > self.conn_send or n > self.max_out_frame:
            raise StreamGone(f"{n} bytes over the window of {sid}")
        s.send_window -= n
        self.conn_send -= n
        out = self.out
        out += pack_head(n >> 8, n & 0xFF, DATA, END_STREAM if end else 0, sid)
        out += data
        if n:
            self.guard.work += 1
        if end:
            self.local_end(sid, s)

    def end_stream(self, sid: int) -> None:
        self.send_data(sid, b"", True)

    def local_end(self, sid: int, s: StreamState) -> None:
        s.local_done = True
        if s.remote_done:
            self.forget(sid, s)

    def reset(self, sid: int, code: int) -> None:
        """RST_STREAM ``sid`` if it is open (else nothing: it is closed already)."""
        s = self.streams.get(sid)
        if s is None or self.dead:
            return
        self.forget(sid, s, normal=False)
        self.remember_reset(sid)
        self.out += rst_stream(sid, code)

    def ack(self, sid: int, n: int) -> None:
        """``n`` flow-controlled bytes of ``sid`` were passed on: the peer may send more."""
        if self.dead:
            return
        self.ack_connection(n)
        s = self.streams.get(sid)
        if s is not None:
            s.processed += n
            inc = give_back(s.recv_window, s.recv_max, s.processed)
            if inc:
                s.processed = 0
                s.recv_window += inc
                self.out += window_update(sid, inc)

    def ack_connection(self, n: int) -> None:
        self.conn_processed += n
        inc = give_back(self.conn_recv, self.conn_recv_max, self.conn_processed)
        if inc:
            self.conn_processed = 0
            self.conn_recv += inc
            self.out += window_update(0, inc)

    def close(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY: no new stream from the peer (the last one it opened is named)."""
        if not self.dead and not self.goaway_sent:
            self.goaway_sent = True
            self.out += goaway(self.last_remote, code)

    def fail(self, code: int) -> None:
        self.out += goaway(self.last_remote, code)
        self.goaway_sent = True
        self.dead = True


__all__ = ["RESET_MEMORY", "H2Settings", "H2State", "StreamState", "give_back"]
