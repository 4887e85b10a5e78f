"""Upstream HTTP/2 connections: one shared connection per destination, many streams on it.

Theory of operation
-------------------
HTTP/2 multiplexes, so the pool is not a list of idle connections (upstream.py) but, per pool
key (service, host, port[, caller]), the links open to that endpoint; a stream goes on the first
one with room under the peer's SETTINGS_MAX_CONCURRENT_STREAMS, and a new connection is opened
only when none has (one connect at a time per key: the others wait for it and share it). To a
peer agent the connection is the mesh hop (handshakes.py with ALPN ``h2``; h2c prior knowledge
where the hop is plaintext); to a local instance it is h2c prior knowledge. Connections are
counted against the service's breaker (``max_connections``) like HTTP/1 ones.

Each link runs on a task of the proxy's nursery (reader and writer, h2link.py) and is forgotten
when it ends. A link with no stream left idles for the service's ``idle_ms`` (its socket's
deadline: the watchdog closes it), and one whose TLS certificate is past the middle of its life
(``TlsIO.retire_ns``) takes no new stream and closes once idle.
"""

from __future__ import annotations

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, Clock
from gossipmesh.proxy.h2link import H2Link
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.resilience import BreakerCounters
from gossipmesh.proxy.routing import Dest
from gossipmesh.proxy.tls import TlsIO
from gossipmesh.proxy.upstream import Overloaded, PoolKey, Upstreams, pool_key


class H2Pool:
    __slots__ = ("upstreams", "limits", "metrics", "clock", "links", "connecting", "nursery")

    def __init__(
        self, upstreams: Upstreams, limits: ProxyLimits, metrics: ProxyMetrics, clock: Clock
    ) -> None:
        self.upstreams = upstreams
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.links: dict[PoolKey, list[H2Link]] = {}
        self.connecting: dict[PoolKey, trio.Event] = {}
        self.nursery: trio.Nursery | None = None  # the proxy's, while it serves

    async def acquire(self, d: Dest, idx: int, caller: str = "") -> H2Link:
        """A link to endpoint ``idx`` of ``d`` with room for one more stream.
        Raises ``Overloaded`` or ``ConnectFailed``."""
        key = pool_key(d, idx, caller)
        while True:
            now_ns = self.clock.now_ns()
            for link in self.links.get(key, ()):
                io = link.io
                if type(io) is TlsIO and io.retire_ns <= now_ns:
                    link.goaway_now()  # both ends already present newer certificates
                    self.idle(link, d.settings.idle_ms)
                    continue
                if link.capacity > 0:
                    io.deadline_ns = NEVER_NS
                    return link
            busy = self.connecting.get(key)
            if busy is None:
                break
            await busy.wait()
        breaker = d.breaker
        settings = d.settings
        limit = breaker.admit_connection(settings) or breaker.admit_pending(settings)
        if limit is not None:
            raise Overloaded(limit)
        ep = d.endpoints[idx]
        done = self.connecting[key] = trio.Event()
        breaker.pending += 1
        try:
            hop = None if ep.inbound is None else (d.service, ep.node, caller, False)
            io = await self.upstreams.open(
                key[1], key[2], settings.connect_ms, hop is not None, hop, h2=True
            )
        finally:
            breaker.pending -= 1
            del self.connecting[key]
            done.set()
        link = H2Link(io, True, self.limits)
        breaker.connections += 1
        m = self.metrics.upstream_connections
        m[d.service] = m.get(d.service, 0) + 1
        self.links.setdefault(key, []).append(link)
        assert self.nursery is not None
        self.nursery.start_soon(self.drive, key, link, breaker, d.service)
        return link

    async def drive(self, key: PoolKey, link: H2Link, breaker: BreakerCounters, svc: str) -> None:
        """Run ``link`` until it ends, then forget it."""
        try:
            await link.serve()
        finally:
            links = self.links.get(key)
            if links is not None and link in links:
                links.remove(link)
                if not links:
                    del self.links[key]
            self.upstreams.discard(link.io)
            breaker.connections -= 1
            m = self.metrics.upstream_connections
            m[svc] = m.get(svc, 1) - 1

    def idle(self, link: H2Link, idle_ms: int) -> None:
        """A stream on ``link`` ended: with none left it may idle ``idle_ms`` (then closes)."""
        if not link.streams and not link.io.closed:
            if link.goaway:
                link.io.close()  # retired: closes as soon as it is idle
                return
            link.io.deadline_ns = self.clock.now_ns() + idle_ms * NS_PER_MS

    def drain(self) -> None:
        for links in list(self.links.values()):
            for link in links:
                link.die()
                self.upstreams.discard(link.io)


__all__ = ["H2Pool"]
