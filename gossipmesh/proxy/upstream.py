"""Upstream connections: the keep-alive pool's decisions carried out, connects, and the counters.

Theory of operation
-------------------
``PoolDecisions`` (pool.py) decides which idle connection to reuse and which to close; this file
only carries that out: it closes what a decision evicted, opens a connection when none is idle
(after the service's breaker admits one more connection and one more pending connect) and keeps
the per-service connection counts that the breaker and the metrics read. A connection to a peer
agent's inbound listener goes through the ``Connector`` when there is one (the mTLS seam);
everything else is a raw non-blocking socket whose deadline the watchdog enforces.

A connection is pooled only when its exchange ended exactly at a message boundary on both sides
(the request fully sent, nothing received past the response: ``ResponseReader.at_boundary``).
Bytes that arrive on it while it idles (a late second response) make it unusable too: the event
engine watches the connections it registered (``Engine`` closes one that becomes readable while
idle), and any other is checked with a peek when it is taken out of the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, Clock
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.descriptors import DescriptorBudget
from gossipmesh.proxy.http1_response import ResponseReader
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pool import PoolDecisions
from gossipmesh.proxy.resilience import BreakerCounters
from gossipmesh.proxy.routing import Dest
from gossipmesh.proxy.sockio import IO, ConnectFailed, Connector, SockIO, StreamIO, connect_raw
from gossipmesh.proxy.table import Endpoint
from gossipmesh.proxy.tls import TlsIO

if TYPE_CHECKING:
    from gossipmesh.proxy.handshakes import Handshakes

MeshHop = tuple[str, str, str, bool]  # (service, node, caller, tunnel) of a hop to a peer agent

# (service, host, port) a connection goes to; a fourth item names the local service whose
# identity it presents when that is not the default (Downstream.caller).
PoolKey = tuple[str, str, int] | tuple[str, str, int, str]


def pool_key(d: Dest, idx: int, caller: str) -> PoolKey:
    key = d.pool_keys[idx]
    return (*key, caller) if caller else key


class Overloaded(Exception):
    """The service's breaker refused a new upstream connection (``limit`` names which)."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


class Registration(Protocol):
    """An upstream's registration in the event engine's epoll."""

    owner: Any  # the engine's connection waiting on this upstream, if any

    def forget(self) -> None: ...


class Upstream:
    """One upstream connection and its response parser."""

    __slots__ = ("io", "reader", "key", "service", "breaker", "reused", "reg", "idle", "counted")

    def __init__(
        self,
        io: IO,
        key: PoolKey,
        service: str,
        breaker: BreakerCounters,
        limits: ProxyLimits,
    ) -> None:
        self.io = io
        self.reader = ResponseReader(limits.max_header_bytes, limits.max_header_count)
        self.key = key
        self.service = service
        self.breaker = breaker
        self.reused = False
        self.reg: Registration | None = None
        self.idle = False  # in the pool now
        # In the breaker's and the metrics' connection counts until ``Upstreams.close``: the
        # watchdog may have closed the socket itself first (a timeout), so ``io.closed`` cannot say.
        self.counted = True

    def __repr__(self) -> str:
        return f"<Upstream {self.key} reused={self.reused} closed={self.io.closed}>"


class Upstreams:
    __slots__ = (
        "limits",
        "metrics",
        "deadlines",
        "connector",
        "clock",
        "pool",
        "budget",
        "handshakes",
    )

    def __init__(
        self,
        limits: ProxyLimits,
        metrics: ProxyMetrics,
        deadlines: Deadlines,
        connector: Connector | None,
        budget: DescriptorBudget | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.deadlines = deadlines
        self.connector = connector
        self.budget = budget  # counts upstream sockets; none opens past its cap
        self.clock: Clock = deadlines.clock
        self.pool: PoolDecisions[Upstream] = PoolDecisions(limits.max_idle_per_upstream)
        # mTLS on the mesh hop (handshakes.py); None: plaintext (or the Connector) between agents.
        self.handshakes: Handshakes | None = None

    def take_idle_socket(
        self, key: PoolKey, now_ns: int, check_stale: bool, idle_ms: int
    ) -> Upstream | None:
        """An idle raw-socket connection to ``key`` for the fast path, or None (then the general
        path connects). ``check_stale``: make sure the peer has not closed it (a request that
        must not be sent twice)."""
        up, expired = self.pool.checkout(key, now_ns)
        for old in expired:
            self.close(old)
        if up is None:
            return None
        up.idle = False
        io = up.io
        if type(io) is not SockIO:
            if type(io) is not TlsIO:
                self.release(up, True, idle_ms, now_ns)
                return None
            if io.retire_ns <= now_ns:
                self.close(up)  # a certificate on it is past the middle of its life (peers.py)
                return None
        if (check_stale or up.reg is None) and io.is_stale():
            self.close(up)  # the peer closed it while idle
            return None
        return up

    async def acquire(
        self, d: Dest, idx: int, now_ns: int, check_stale: bool, caller: str = ""
    ) -> Upstream:
        """A connection to endpoint ``idx`` of ``d``: an idle one, else a new one.
        Raises ``Overloaded`` or ``ConnectFailed``."""
        key = pool_key(d, idx, caller)
        pool = self.pool
        while True:
            up, expired = pool.checkout(key, now_ns)
            for old in expired:
                self.close(old)
            if up is None:
                break
            up.idle = False
            io = up.io
            if (type(io) is TlsIO and io.retire_ns <= now_ns) or (
                (check_stale or up.reg is None) and io.is_stale()
            ):
                self.close(up)
                continue
            return up
        settings = d.settings
        breaker = d.breaker
        limit = breaker.admit_connection(settings) or breaker.admit_pending(settings)
        if limit is not None:
            raise Overloaded(limit)
        ep = d.endpoints[idx]
        breaker.pending += 1
        try:
            hop = None if ep.inbound is None else (d.service, ep.node, caller, False)
            io = await self.open(key[1], key[2], settings.connect_ms, hop is not None, hop)
        finally:
            breaker.pending -= 1
        breaker.connections += 1
        m = self.metrics.upstream_connections
        m[d.service] = m.get(d.service, 0) + 1
        return Upstream(io, key, d.service, breaker, self.limits)

    async def open(
        self,
        host: str,
        port: int,
        connect_ms: int,
        use_connector: bool,
        hop: MeshHop | None = None,
        h2: bool = False,
    ) -> IO:
        """A new connection; to a peer agent's inbound (``hop``: service, node, caller, tunnel)
        with mTLS when the proxy has it, else through the ``Connector`` when ``use_connector``
        and there is one. ``h2``: the connection will carry HTTP/2 (ALPN ``h2`` on the mesh
        hop; h2c prior knowledge elsewhere). Raises ``Overloaded("descriptors")`` when the descriptor budget is
        spent (a local limit, not the endpoint's failure) and ``ConnectFailed``."""
        budget = self.budget
        if budget is not None and not budget.may_connect():
            raise Overloaded("descriptors")
        if hop is not None and self.handshakes is not None:
            return await self.handshakes.connect(host, port, connect_ms, budget, *hop, h2=h2)
        if use_connector and self.connector is not None:
            with trio.move_on_after(connect_ms / 1000) as cs:
                try:
                    stream = await self.connector.connect(host, port)
                except (OSError, trio.BrokenResourceError) as e:
                    raise ConnectFailed(f"{host}:{port}: {e}") from None
            if cs.cancelled_caught:
                raise ConnectFailed(f"{host}:{port}: connect timed out after {connect_ms} ms")
            return StreamIO(stream, self.clock, budget)
        sock = await connect_raw(host, port, connect_ms, self.deadlines)
        io = SockIO(sock, budget)
        self.deadlines.add(io)
        return io

    async def open_endpoint(
        self, ep: Endpoint, connect_ms: int, service: str = "", caller: str = ""
    ) -> IO:
        """A new connection to ``ep`` of ``service``: its agent's inbound listener (a TCP
        tunnel), or the instance itself."""
        if ep.inbound is None:
            return await self.open(ep.address, ep.port, connect_ms, False)
        return await self.open(*ep.inbound, connect_ms, True, (service, ep.node, caller, True))

    def release(self, up: Upstream, reusable: bool, idle_ms: int, now_ns: int) -> None:
        """The exchange on ``up`` ended: pool it if ``reusable`` and it ended at a message
        boundary, else close it."""
        reader = up.reader
        if reusable and not up.io.closed and reader.at_boundary():
            reader.next_exchange()
            up.io.deadline_ns = NEVER_NS
            up.reused = True
            up.idle = True
            for old in self.pool.checkin(up.key, up, now_ns, idle_ms * NS_PER_MS):
                self.close(old)
        else:
            self.close(up)

    def close(self, up: Upstream) -> None:
        if up.idle:
            up.idle = False
            self.pool.discard(up.key, up)
        if up.reg is not None:
            up.reg.forget()
            up.reg = None
        io = up.io
        if isinstance(io, SockIO):
            self.deadlines.discard(io)
            io.owner = None
        up.reader.close()
        io.close()
        if up.counted:
            up.counted = False
            up.breaker.connections -= 1
            m = self.metrics.upstream_connections
            m[up.service] = m.get(up.service, 1) - 1

    def discard(self, io: IO) -> None:
        """Close a connection that never became an ``Upstream`` (tunnels)."""
        if isinstance(io, SockIO):
            self.deadlines.discard(io)
        io.close()

    def sweep(self, now_ns: int) -> None:
        """Close every idle connection past its expiry."""
        for up in self.pool.sweep(now_ns):
            self.close(up)

    def drain(self) -> None:
        for up in self.pool.drain():
            self.close(up)


__all__ = ["Overloaded", "PoolKey", "Registration", "Upstream", "Upstreams"]
