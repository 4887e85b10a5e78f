"""HTTP/2 client connections: detected on an HTTP listener (or chosen by ALPN on the mesh hop),
then served by one task with a task per stream.

Theory of operation
-------------------
A plaintext connection whose first read is the HTTP/2 preface, or could still become it
(detect.py), leaves the event engine and the HTTP/1 parser at once (``detected``: the first
exchange a handed-over connection runs, tasks.py): its bytes so far are fed to an ``H2Link``
(h2link.py) and the connection is HTTP/2 from then on. A first read that is only a prefix of the
preface is completed within ``detect_timeout_ms`` and at most the preface's 24 bytes; if it
stops matching, the bytes go to the HTTP/1 parser and the connection goes on as HTTP/1.1. An
inbound mTLS connection whose ALPN is ``h2`` comes straight here (handshakes.py).

``serve`` runs the link and starts one task per request stream (``H2Exchange.serve``,
h2exchange.py); the HTTP/2 core (h2core.py) bounds how many there are
(SETTINGS_MAX_CONCURRENT_STREAMS).
With no stream open the connection idles at most ``keepalive_idle_ms`` (its socket's deadline,
which the watchdog enforces), as an HTTP/1.1 keep-alive connection does.
"""

from __future__ import annotations

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, Clock
from gossipmesh.proxy.detect import H2, HTTP1, sniff
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.h2exchange import H2Exchange
from gossipmesh.proxy.h2link import H2Link, Stream
from gossipmesh.proxy.http1 import HeaderLimitError, ParseError
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.sockio import ConnLost


def may_be_h2(conn: Downstream, first: memoryview) -> bool:
    """For the HTTP/1 readers: the connection's first read (``first``) may begin HTTP/2."""
    return first[:1] == b"P" and sniff(first) != HTTP1


class H2Front:
    __slots__ = ("exchange", "downstreams", "limits", "metrics", "clock")

    def __init__(
        self,
        exchange: H2Exchange,
        downstreams: Downstreams,
        limits: ProxyLimits,
        metrics: ProxyMetrics,
        clock: Clock,
    ) -> None:
        self.exchange = exchange
        self.downstreams = downstreams
        self.limits = limits
        self.metrics = metrics
        self.clock = clock

    async def detected(self, conn: Downstream, first: bytes) -> bool:
        """Serve ``conn`` whose first bytes (``first``, already read and counted) may begin the
        HTTP/2 preface. True: it is HTTP/1.1 after all (its bytes are in ``conn.reader``, the
        caller goes on serving it); False: it was served as HTTP/2 (or ended)."""
        data = bytearray(first)
        io = conn.io
        if sniff(data) != H2:
            io.deadline_ns = self.clock.now_ns() + self.limits.detect_timeout_ms * NS_PER_MS
            mv = memoryview(bytearray(64))
            try:
                while sniff(data) not in (H2, HTTP1):
                    n = await io.recv_into(mv)
                    if n == 0:
                        return False
                    conn.bytes_in += n
                    data += mv[:n]
            except ConnLost:
                return False  # not even the preface in time
            if sniff(data) == HTTP1:
                try:
                    conn.reader.feed(memoryview(data))
                except HeaderLimitError:
                    await self.downstreams.reply_error(conn, None, "headers_too_large", keep=False)
                    return False
                except ParseError as e:
                    reply = self.downstreams.reply_error
                    await reply(conn, None, "bad_request", "", str(e), keep=False)
                    return False
                return True
        await self.serve(conn, bytes(data))
        return False

    async def serve(self, conn: Downstream, prefix: bytes = b"") -> None:
        """Serve ``conn`` as an HTTP/2 server connection until it ends (the caller closes it)."""
        m = self.metrics
        direction = conn.direction
        m.h2_connections[direction] = m.h2_connections.get(direction, 0) + 1
        Downstreams.started(conn)
        idle_ns = self.limits.keepalive_idle_ms * NS_PER_MS
        io = conn.io
        io.deadline_ns = self.clock.now_ns() + idle_ns
        async with trio.open_nursery() as nursery:

            def on_request(s: Stream, ended: bool) -> None:
                io.deadline_ns = NEVER_NS
                nursery.start_soon(self.stream, conn, link, s)

            link = H2Link(io, False, self.limits, on_request)
            await link.serve(prefix)
            nursery.cancel_scope.cancel()
        if link.errors:
            m.h2_protocol_errors[direction] = m.h2_protocol_errors.get(direction, 0) + 1
        if link.flood:
            key = (direction, link.flood)
            m.h2_floods[key] = m.h2_floods.get(key, 0) + 1

    async def stream(self, conn: Downstream, link: H2Link, s: Stream) -> None:
        try:
            await self.exchange.serve(conn, link, s)
        finally:
            link.done(s)
            if not link.streams and not conn.io.closed:
                if link.goaway:
                    link.end_when_sent()  # after a GOAWAY either way: no stream will come
                else:
                    conn.io.deadline_ns = self.clock.now_ns() + (
                        self.limits.keepalive_idle_ms * NS_PER_MS
                    )


__all__ = ["H2Front", "may_be_h2"]
