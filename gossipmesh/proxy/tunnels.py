"""Tunnels: bytes spliced both ways, after a 101 Upgrade, an inbound CONNECT, or for TCP services.

Theory of operation
-------------------
Once a tunnel is open the proxy no longer parses anything: two pumps copy bytes, one per
direction, each with its own buffer. A side that ends (EOF) half-closes the other, so a client
that shuts down its writing side still gets the rest; a side that fails tears down both, so the
other direction does not hang. A tunnel idle for ``tunnel_idle_ms`` in a direction is closed by
the watchdog (each read sets its deadline).

TCP services cross the mesh as ``CONNECT ADDRESS:PORT`` to the peer agent's inbound listener,
which splices to the local instance only if its registry lists it (``inbound_instance``).
"""

from __future__ import annotations

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, Clock
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.heads import (
    CONNECT_ESTABLISHED,
    connect_refusal,
    connect_request,
    upgrade_reply_head,
)
from gossipmesh.proxy.http1 import RequestHead, ResponseHead
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.sockio import IO, ConnectFailed, ConnLost
from gossipmesh.proxy.table import Endpoint, ServiceSettings
from gossipmesh.proxy.upstream import Overloaded, Upstream, Upstreams


class Tunnels:
    __slots__ = ("limits", "clock", "upstreams", "downstreams")

    def __init__(
        self, limits: ProxyLimits, clock: Clock, upstreams: Upstreams, downstreams: Downstreams
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.upstreams = upstreams
        self.downstreams = downstreams

    async def after_upgrade(self, conn: Downstream, up: Upstream, rh: ResponseHead) -> None:
        """The upstream accepted an Upgrade (101): relay its head, then splice until either
        side ends. The client connection ends with the tunnel."""
        tail = up.reader.upgrade_tail or b""
        try:
            await conn.io.send_all(upgrade_reply_head(rh) + tail)
        except ConnLost:
            self.upstreams.close(up)
            return
        await self.splice(conn.io, up.io, conn.reader.upgrade_tail or b"")
        self.upstreams.close(up)

    async def inbound_connect(
        self, conn: Downstream, req: RequestHead, settings: ServiceSettings, ep: Endpoint
    ) -> bool:
        """Inbound CONNECT (a TCP service crossing the mesh): splice to the local instance.
        Returns False: the client connection ends with the tunnel."""
        try:
            io = await self.upstreams.open(ep.address, ep.port, settings.connect_ms, False)
        except ConnectFailed as e:
            return await self.downstreams.reply_error(
                conn, req, "upstream_connect_failure", settings.name, str(e), keep=False
            )
        except Overloaded as e:
            return await self.downstreams.reply_error(
                conn, req, "overloaded", settings.name, e.limit, keep=False
            )
        try:
            await conn.io.send_all(CONNECT_ESTABLISHED)
            await self.splice(conn.io, io, conn.reader.upgrade_tail or b"")
        finally:
            self.upstreams.discard(io)
        return False

    async def mesh_connect(self, io: IO, ep: Endpoint, settings: ServiceSettings) -> bytes:
        """Ask the peer's inbound side for a tunnel to ``ep``; returns bytes read past its head.
        Raises ``ConnLost`` or ``ConnectFailed``."""
        await io.send_all(connect_request(ep.dest.encode(), settings.name.encode()))
        io.deadline_ns = self.clock.now_ns() + settings.per_try_ms * NS_PER_MS
        buf = bytearray()
        mv = memoryview(bytearray(4096))
        while b"\r\n\r\n" not in buf:
            if len(buf) > self.limits.max_connect_response_bytes:
                raise ConnLost("CONNECT response head too large")
            n = await io.recv_into(mv, not buf)
            if n == 0:
                raise ConnLost("peer closed during CONNECT")
            buf += mv[:n]
        io.deadline_ns = NEVER_NS
        end = buf.index(b"\r\n\r\n") + 4
        refused = connect_refusal(bytes(buf[:end]))
        if refused is not None:
            raise ConnectFailed(f"peer refused tunnel: {refused!r}")
        return bytes(buf[end:])

    async def splice(self, a: IO, b: IO, a_to_b_first: bytes = b"") -> None:
        a.deadline_ns = b.deadline_ns = NEVER_NS
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.pump, a, b, a_to_b_first)
            nursery.start_soon(self.pump, b, a, b"")

    async def pump(self, src: IO, dst: IO, first: bytes) -> None:
        mv = memoryview(bytearray(self.limits.recv_buffer_bytes))
        idle_ns = self.limits.tunnel_idle_ms * NS_PER_MS
        clock = self.clock
        try:
            if first:
                await dst.send_all(first)
            while True:
                src.deadline_ns = clock.now_ns() + idle_ns
                n = await src.recv_into(mv)
                if n == 0:
                    dst.shutdown_write()
                    return
                await dst.send_all(mv[:n])
        except ConnLost:
            # One side failed: tear down both so the other direction does not hang.
            src.close()
            dst.close()


__all__ = ["Tunnels"]
