"""Downstream connections: the per-connection state, its opening and closing, and the answers
the proxy makes itself (errors).

Theory of operation
-------------------
A ``Downstream`` is allocated once per client connection and reused by every request on it: the
request parser, one receive buffer for the client and, on first use, one for the upstream
response. It is served either by the event engine (engine.py) or by a task (tasks.py), and can
move between them; ``Downstreams.close`` is its one end either way, where its byte counts are
added to the metrics. ``reply_error`` is the single place a proxy-generated answer (400, 431,
502, 503, 504 ...) is sent and counted.
"""

from __future__ import annotations

import socket

from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.errors import error_response
from gossipmesh.proxy.http1 import END, RequestHead, RequestReader
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.sockio import ConnLost, SockIO


class Downstream:
    """Per-downstream-connection scratch: buffers allocated once, reused by every request."""

    __slots__ = (
        "io",
        "reader",
        "mv",
        "upbuf",
        "upmv",
        "client_ip",
        "direction",
        "bytes_out",
        "bytes_in",
        "addr",
    )

    def __init__(
        self, io: SockIO, reader: RequestReader, mv: memoryview, addr: object, direction: str
    ) -> None:
        self.io = io
        self.reader = reader
        self.mv = mv  # the client receive buffer
        self.upbuf = bytearray()  # the upstream receive buffer, allocated on first use
        self.upmv: memoryview | None = None
        self.client_ip = str(addr[0]).encode() if isinstance(addr, tuple) else b""
        self.direction = direction
        self.bytes_out = 0
        self.bytes_in = 0
        self.addr = addr

    def upstream_buffer(self, size: int) -> memoryview:
        """The upstream receive buffer (``size`` bytes, allocated once)."""
        upmv = self.upmv
        if upmv is None:
            self.upbuf = bytearray(size)
            upmv = self.upmv = memoryview(self.upbuf)
        return upmv

    def __repr__(self) -> str:
        return f"<Downstream {self.direction} from {self.addr} closed={self.io.closed}>"


def drain_buffered_body(reader: RequestReader, req: RequestHead) -> bool:
    """Consume the current request's body events if END is already queued; False if the body
    is still coming (then the connection cannot carry another request)."""
    if req.body_done:
        return True
    if not reader.body_complete_buffered():
        return False
    while reader.pop() is not END:
        pass
    req.body_done = True
    return True


class Downstreams:
    __slots__ = ("limits", "metrics", "deadlines")

    def __init__(self, limits: ProxyLimits, metrics: ProxyMetrics, deadlines: Deadlines) -> None:
        self.limits = limits
        self.metrics = metrics
        self.deadlines = deadlines

    def open(self, sock: socket.socket, addr: object, direction: str) -> Downstream:
        """An accepted connection (already non-blocking) as a ``Downstream``, counted."""
        m = self.metrics
        m.open_connections[direction] += 1
        m.connections_total[direction] += 1
        limits = self.limits
        io = SockIO(sock)
        self.deadlines.add(io)
        reader = RequestReader(limits.max_header_bytes, limits.max_header_count)
        mv = memoryview(bytearray(limits.recv_buffer_bytes))
        return Downstream(io, reader, mv, addr, direction)

    def close(self, conn: Downstream) -> None:
        """The connection's end, wherever it was served (engine or task)."""
        io = conn.io
        self.deadlines.discard(io)
        io.owner = None
        io.close()
        m = self.metrics
        direction = conn.direction
        m.open_connections[direction] -= 1
        m.bytes_in[direction] += conn.bytes_in
        m.bytes_out[direction] += conn.bytes_out

    async def reply_error(
        self,
        conn: Downstream,
        req: RequestHead | None,
        reason: str,
        service: str = "",
        detail: str = "",
        *,
        keep: bool = True,
        route: str = "",
        start_ns: int | None = None,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> bool:
        """Send a proxy-generated error; True if the connection may carry another request.
        ``start_ns``: when the request started, for its latency (None: not measured)."""
        if req is not None:
            # The rest of an unread body is still in the stream: we cannot continue after it
            # unless it is already fully parsed.
            keep = keep and req.keep_alive and drain_buffered_body(conn.reader, req)
        status, data = error_response(
            reason,
            service,
            detail,
            keep_alive=keep,
            request_id=req.request_id if req is not None else b"",
            extra_headers=extra,
            head_only=req is not None and req.method == b"HEAD",
        )
        m = self.metrics
        m.error(service, reason)
        if req is not None:
            elapsed_ns = 0 if start_ns is None else self.deadlines.clock.now_ns() - start_ns
            m.observe(service, route, status, conn.direction, elapsed_ns)
        try:
            await conn.io.send_all(data)
            conn.bytes_out += len(data)
        except ConnLost:
            return False
        return keep


__all__ = ["Downstream", "Downstreams", "drain_buffered_body"]
