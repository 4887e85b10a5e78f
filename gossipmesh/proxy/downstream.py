"""Downstream connections: the per-connection state, its opening and closing, and the answers
the proxy makes itself (errors).

Theory of operation
-------------------
A ``Downstream`` is allocated once per client connection and reused by every request on it: its
socket and request parser. It is served either by the event engine (engine.py) or by a task
(tasks.py), and can move between them; ``Downstreams.close`` is its one end either way, where its
byte counts and the reason of a timeout are added to the metrics. ``reply_error`` is the single
place a proxy-generated answer (400, 431, 502, 503, 504 ...) is sent and counted.

Buffers (limits.py). ``mv``, the client receive buffer, is one buffer shared by every
connection: whoever reads into it feeds the parser before anything else can run (no await in
between), and the parser keeps copies. The upstream response buffer is per exchange: taken from
a free list on first use (``upstream_buffer``) and given back when the exchange ends
(``Downstreams.done``), so an idle keep-alive connection holds none.

Deadlines while no request is complete (``await_request``): the connection's first request head
must be whole within ``head_timeout_ms`` of the accept, any later one within that of its first
byte (a client dribbling header bytes is closed: ``head_timeouts``); between requests a
keep-alive connection may idle ``keepalive_idle_ms`` (then ``idle_closes``).
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.descriptors import DescriptorBudget
from gossipmesh.proxy.errors import error_response
from gossipmesh.proxy.http1 import END, RequestHead, RequestReader
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.peers import Peer
from gossipmesh.proxy.request_log import RequestLog
from gossipmesh.proxy.sockio import ConnLost, SockIO
from gossipmesh.proxy.tls import TlsIO, TlsSocket

if TYPE_CHECKING:
    from gossipmesh.proxy.pipeline import Exchange

# What a client connection is waiting for (timeouts are counted by it).
BUSY, HEAD, IDLE = range(3)
NO_HEAD = -1  # Downstream.head_since_ns when no request head has begun


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
        "buffers",
        "waiting",
        "head_since_ns",
        "peer",
        "tunnel",
        "caller",
    )

    def __init__(
        self,
        io: SockIO,
        reader: RequestReader,
        mv: memoryview,
        addr: object,
        direction: str,
        buffers: BufferPool,
        now_ns: int = 0,
    ) -> None:
        self.io = io
        self.reader = reader
        self.mv = mv  # the client receive buffer (shared: see the module's docstring)
        self.upbuf = EMPTY  # the upstream receive buffer, taken for one exchange
        self.upmv: memoryview | None = None
        self.client_ip = str(addr[0]).encode() if isinstance(addr, tuple) else b""
        self.direction = direction
        self.bytes_out = 0
        self.bytes_in = 0
        self.addr = addr
        self.buffers = buffers
        self.waiting = HEAD  # the first request's head, from the accept
        self.head_since_ns = now_ns  # when the head being waited for began (NO_HEAD: none)
        # The mesh hop (inbound, mTLS): the identity the caller proved (None: plaintext, or not
        # an inbound connection), and whether ALPN said it carries a TCP tunnel (a CONNECT).
        self.peer: Peer | None = None
        self.tunnel = False
        # Outbound: the local service whose identity this connection's requests present on the
        # mesh hop ("" = the default; the listener it came in on decides).
        self.caller = ""

    def upstream_buffer(self, size: int) -> memoryview:
        """The upstream receive buffer of this exchange (``size`` bytes)."""
        upmv = self.upmv
        if upmv is None:
            self.upbuf = self.buffers.take(size)
            upmv = self.upmv = memoryview(self.upbuf)
        return upmv

    def release_buffer(self) -> None:
        """The exchange ended: its upstream buffer goes back to the free list."""
        upmv = self.upmv
        if upmv is not None:
            self.upmv = None
            self.buffers.give(self.upbuf)
            self.upbuf = EMPTY

    def __repr__(self) -> str:
        return f"<Downstream {self.direction} from {self.addr} closed={self.io.closed}>"


EMPTY = bytearray()


class BufferPool:
    """Response buffers of one size, reused between exchanges; at most ``keep`` kept idle."""

    __slots__ = ("keep", "free")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        free = self.free
        if free:
            buf = free.pop()
            if len(buf) == size:
                return buf
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        if len(self.free) < self.keep:
            self.free.append(buf)


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
    __slots__ = (
        "limits",
        "metrics",
        "deadlines",
        "budget",
        "mv",
        "buffers",
        "head_ns",
        "keepalive_ns",
        "requests",
    )

    def __init__(
        self,
        limits: ProxyLimits,
        metrics: ProxyMetrics,
        deadlines: Deadlines,
        budget: DescriptorBudget | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.deadlines = deadlines
        self.budget = budget  # counts the client sockets (None: not counted)
        self.mv = memoryview(bytearray(limits.recv_buffer_bytes))  # every client's reads
        self.buffers = BufferPool(limits.max_pooled_buffers)
        self.head_ns = limits.head_timeout_ms * NS_PER_MS
        self.keepalive_ns = limits.keepalive_idle_ms * NS_PER_MS
        self.requests = RequestLog()  # the Proxy gives its own (access log, tap, spans)

    def admit(self, listener: str) -> str | None:
        """Before accepting a client on ``listener``: None to accept, else the reason to refuse
        (counted)."""
        reason = None
        if self.metrics.listener_connections.get(listener, 0) >= (
            self.limits.max_connections_per_listener
        ):
            reason = "listener_limit"
        elif self.budget is not None and not self.budget.may_accept():
            reason = "descriptors"
        if reason is not None:
            key = (listener, reason)
            refused = self.metrics.refused
            refused[key] = refused.get(key, 0) + 1
        return reason

    def open(self, sock: socket.socket, addr: object, direction: str) -> Downstream:
        """An accepted connection (already non-blocking) as a ``Downstream``, counted; an
        inbound mTLS one becomes TLS with ``to_tls`` once its client spoke."""
        m = self.metrics
        m.open_connections[direction] += 1
        m.connections_total[direction] += 1
        lc = m.listener_connections
        lc[direction] = lc.get(direction, 0) + 1
        limits = self.limits
        io = SockIO(sock, self.budget)
        self.deadlines.add(io)
        reader = RequestReader(limits.max_header_bytes, limits.max_header_count)
        now_ns = self.deadlines.clock.now_ns()
        conn = Downstream(io, reader, self.mv, addr, direction, self.buffers, now_ns)
        io.deadline_ns = now_ns + self.head_ns
        return conn

    def to_tls(self, conn: Downstream, tsock: TlsSocket) -> TlsIO:
        """``conn``'s socket, now wrapped by ``tsock`` (its handshake still to come), as its io:
        the same descriptor (counted once) and the same deadline."""
        old = conn.io
        self.deadlines.discard(old)
        io = TlsIO(tsock)
        io.budget = old.budget  # the descriptor is the one ``old`` counted; its close releases it
        io.deadline_ns = old.deadline_ns
        self.deadlines.add(io)
        conn.io = io
        return io

    def await_request(self, conn: Downstream, now_ns: int) -> None:
        """Arm the client's deadline while no request is complete (see the module docstring)."""
        if conn.reader.in_head():
            if conn.head_since_ns == NO_HEAD:
                conn.head_since_ns = now_ns
        elif conn.head_since_ns == NO_HEAD:
            conn.reader.idle()
            conn.waiting = IDLE
            conn.io.deadline_ns = now_ns + self.keepalive_ns
            return
        conn.waiting = HEAD
        conn.io.deadline_ns = conn.head_since_ns + self.head_ns

    @staticmethod
    def refuse(sock: socket.socket, reason: str, http: bool = True) -> None:
        """Close a client ``admit`` refused, telling an HTTP client why (best effort: one
        non-blocking send, no wait)."""
        if http:
            _, data = error_response("overloaded", "", reason, keep_alive=False)
            with contextlib.suppress(OSError):
                sock.send(data)
        sock.close()

    @staticmethod
    def started(conn: Downstream) -> None:
        """A request head is whole: nothing is awaited of the client until its exchange asks."""
        conn.waiting = BUSY
        conn.head_since_ns = NO_HEAD
        conn.io.deadline_ns = NEVER_NS

    def close(self, conn: Downstream) -> None:
        """The connection's end, wherever it was served (engine or task)."""
        io = conn.io
        self.deadlines.discard(io)
        io.owner = None
        io.close()
        conn.reader.close()
        conn.release_buffer()
        m = self.metrics
        direction = conn.direction
        if io.timed_out and conn.waiting != BUSY:
            counter = m.head_timeouts if conn.waiting == HEAD else m.idle_closes
            counter[direction] = counter.get(direction, 0) + 1
        m.open_connections[direction] -= 1
        m.listener_connections[direction] -= 1
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
        exchange: Exchange | None = None,
    ) -> bool:
        """Send a proxy-generated error; True if the connection may carry another request.
        ``start_ns``: when the request started, for its latency (None: not measured);
        ``exchange``: the request's, once routed (its destination and endpoint label the
        metrics; the request log records it)."""
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
            now_ns = self.deadlines.clock.now_ns()
            elapsed_ns = 0 if start_ns is None else now_ns - start_ns
            dest = node = ""
            if exchange is not None:
                dest = exchange.dest.label
                node = exchange.dest.nodes[exchange.idx] if exchange.idx >= 0 else ""
            m.observe(service, route, status, conn.direction, elapsed_ns, dest, node)
            if self.requests.on:
                self.requests.done(conn, req, exchange, service, route, status,
                                   now_ns - elapsed_ns, now_ns, len(data), reason)  # fmt: skip
        try:
            await conn.io.send_all(data)
            conn.bytes_out += len(data)
        except ConnLost:
            return False
        return keep


__all__ = ["BUSY", "HEAD", "IDLE", "BufferPool", "Downstream", "Downstreams", "drain_buffered_body"]
