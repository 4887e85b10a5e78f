"""The proxy's I/O shell: listeners, the per-connection request loop, forwarding, tunnels.

Theory of operation
-------------------
One trio task per downstream connection serves its requests strictly in order (so pipelining
needs no extra machinery) and does all upstream I/O for them itself: no task is spawned per
request. Everything that decides something — route, destination, endpoint, retry, ejection,
breaker, pool — is a call into the pure modules; this file only moves bytes and keeps counters.

Speed comes from doing less per request, as measured in issue 5:

- Sockets are plain non-blocking ``socket.socket`` objects driven by ``trio.lowlevel``
  ``wait_readable``/``wait_writable``. Each read or write tries the syscall first and only parks
  on ``BlockingIOError``; where a reply is certainly not there yet (the response right after
  sending a request, the next request right after answering one) it parks *first* instead of
  making a syscall that will fail. ``recv_into`` fills a buffer allocated once per connection.
- A response head and whatever body arrived with it leave in one ``send``.
- Timeouts do not use a cancel scope per request (about 6 µs each here). Every open socket carries
  a ``deadline`` float; one watchdog task wakes every ``watchdog_tick_ms``, and closes any socket
  past its deadline (marking it ``timed_out``), which wakes the task parked on it with an error.
  Timeout resolution is therefore one tick.
- A connection that never has to wait (pipelined requests, all buffered) yields to the scheduler
  every ``fairness_every`` requests so it cannot starve the others.
- Counters are plain dict bumps (metrics.py) and the routing state is precomputed per table.

Mesh hop. The outbound side sends a request for a remote endpoint to the peer agent's inbound
listener with ``x-gossipmesh-dest: ADDRESS:PORT`` (and ``x-gossipmesh-service``). The inbound side
forwards only to destinations listed in its local service registry: it is never an open proxy.
TCP services cross the hop as ``CONNECT ADDRESS:PORT`` to the inbound listener. The hop to a peer
goes through ``Connector`` when one is given (``connect(host, port) -> trio.abc.Stream``; the seam
where mTLS drops in); without one, the raw-socket fast path is used.

Retries. A request may be retried only if it can be replayed: no body, or the whole body had
already arrived with the head (then it is held, at most one receive buffer). A body still
streaming is forwarded as it arrives and is never held, so such a request is not retried once it
was sent; connect failures are retried regardless of method or body, because nothing was sent.
Status and timeout retries need an idempotent method, a try left and the service's retry budget.
Each try goes to an endpoint this request has not tried yet when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from gossipmesh.proxy import http1
from gossipmesh.proxy.balancer import Balancer, EndpointState
from gossipmesh.proxy.errors import error_response
from gossipmesh.proxy.http1 import (
    CONTINUE_100,
    END,
    LAST_CHUNK,
    RESP_FIELDS_RE,
    RESP_HOP_RE,
    HeaderLimitError,
    ParseError,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    build_request_head,
    build_response_head,
    chunk,
    new_request_id,
    next_traceparent,
)
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pool import PoolDecisions
from gossipmesh.proxy.resilience import BreakerCounters, RetryBudget, record_outcome
from gossipmesh.proxy.router import CompiledRoute, choose_destination, match, normalise_host
from gossipmesh.proxy.sockio import (
    INF,
    IO,
    ConnectFailed,
    Connector,
    ConnLost,
    SockIO,
    StreamIO,
    TcpConnector,
    _connect_raw,
    _listen,
    _now,
    _wait_readable,
)
from gossipmesh.proxy.table import Endpoint, RouteTable, ServiceSettings
from gossipmesh.proxy.workers import serve_workers

log = logging.getLogger("gossipmesh.proxy")

OUTBOUND, INBOUND, TCP = "outbound", "inbound", "tcp"
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    max_header_bytes: int = 65536
    max_header_count: int = 100
    recv_buffer_bytes: int = 32768  # per direction per connection; bounds body memory too
    client_idle_ms: int = 60000  # downstream keep-alive idle and header-read timeout
    tunnel_idle_ms: int = 3_600_000  # WebSocket / TCP splice with no bytes either way
    max_idle_per_upstream: int = 64
    fairness_every: int = 16
    watchdog_tick_ms: int = 50
    pool_sweep_ms: int = 1000
    max_connect_response_bytes: int = 16384


@dataclass(frozen=True, slots=True)
class ProxyAddresses:
    """Where ``serve`` actually bound (ports resolved when 0 was asked)."""

    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    tcp: Mapping[str, tuple[str, int]] = field(default_factory=dict)


class Overloaded(Exception):
    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


class Upstream:
    """One upstream connection and its response parser."""

    __slots__ = ("io", "reader", "key", "service", "reused", "reg")

    def __init__(self, io: IO, key: tuple[str, str, int], service: str, limits: ProxyLimits):
        self.io = io
        self.reader = ResponseReader(limits.max_header_bytes, limits.max_header_count)
        self.key = key
        self.service = service
        self.reused = False
        self.reg: Any = None  # its registration in the event engine's epoll, if any


class _Dest:
    """Everything ``_forward`` needs about one cluster, gathered once per table (or per local
    instance on the inbound side) so a request does one dict lookup instead of a dozen."""

    __slots__ = (
        "service",
        "settings",
        "endpoints",
        "states",
        "balancer",
        "peers",
        "budget",
        "breaker",
        "mesh_lines",
        "host_line",
        "pool_keys",
        "fast",
    )

    def __init__(
        self,
        settings: ServiceSettings,
        endpoints: Sequence[Endpoint],
        states: Sequence[EndpointState],
        balancer: Balancer | None,
        peers: Sequence[EndpointState],
        budget: RetryBudget,
        breaker: BreakerCounters,
    ) -> None:
        self.service = settings.name
        self.settings = settings
        self.endpoints = endpoints
        self.states = states
        self.balancer = balancer
        self.peers = peers
        self.budget = budget
        self.breaker = breaker
        svc = b"x-gossipmesh-service: " + settings.name.encode() + b"\r\n"
        # The mesh fields a hop to each endpoint adds (empty for a local instance).
        self.mesh_lines = tuple(
            b"" if ep.inbound is None else b"x-gossipmesh-dest: " + ep.dest.encode() + b"\r\n" + svc
            for ep in endpoints
        )
        self.host_line = b"host: " + endpoints[0].dest.encode() + b"\r\n" if endpoints else b""
        # The pool key of each endpoint (what ``_acquire`` computes), for the fast path.
        self.pool_keys = tuple(
            (settings.name, *(ep.inbound if ep.inbound is not None else (ep.address, ep.port)))
            for ep in endpoints
        )
        # The fast path picks and forwards inline; ring hash needs the request's hash key.
        self.fast = bool(endpoints) and (balancer is None or balancer.policy != "ring_hash")


_Routed = tuple[CompiledRoute | None, tuple[str, tuple[str, ...]]]
_Resume = tuple[int, "Upstream", memoryview | None, float]
MAX_ROUTE_CACHE = 4096


class _View:
    """Per-table derived state: the table plus balancers and endpoint-state lists per cluster."""

    __slots__ = ("table", "balancers", "states", "peers", "dests", "route_cache")

    def __init__(
        self,
        table: RouteTable,
        states_by_key: dict[tuple[str, str, int], EndpointState],
        proxy: Proxy | None = None,
    ):
        self.table = table
        self.balancers: dict[tuple[str, tuple[str, ...]], Balancer] = {}
        self.states: dict[tuple[str, tuple[str, ...]], list[EndpointState]] = {}
        self.peers: dict[str, list[EndpointState]] = {}
        self.dests: dict[tuple[str, tuple[str, ...]], _Dest] = {}
        # (Host, path, method) -> (route or None, cluster key when no route): the fast path's
        # routing memo. Only when no route matches on headers (then those three decide alone).
        self.route_cache: dict[tuple[bytes, bytes, bytes], _Routed] | None = (
            None if any(r.headers for r in table.routes) else {}
        )
        for key, cluster in table.clusters.items():
            sts = []
            for ep in cluster.endpoints:
                st = states_by_key.get(ep.key)
                if st is None:
                    st = states_by_key[ep.key] = EndpointState(ep.key, ep.weight)
                st.weight = max(1, ep.weight)
                sts.append(st)
            self.states[key] = sts
            self.balancers[key] = Balancer(
                cluster.settings.policy, [e.weight for e in cluster.endpoints], cluster.ring
            )
            if key[1] == ():
                self.peers[key[0]] = sts
        if proxy is not None:
            for key, cluster in table.clusters.items():
                s = cluster.settings
                self.dests[key] = _Dest(
                    s,
                    cluster.endpoints,
                    self.states[key],
                    self.balancers[key],
                    self.peers.get(cluster.service, ()),
                    proxy._budget(s),
                    proxy._breaker(cluster.service),
                )


class _Plan:
    """The fast path's decisions for one request (see ``Proxy._fast_plan``)."""

    __slots__ = ("t0", "now_ms", "route_name", "d", "idx", "body", "end_pos", "up", "st", "rid")

    def __init__(
        self, t0: float, now_ms: int, route_name: str, d: _Dest, idx: int, body: bytes, end_pos: int
    ) -> None:
        self.t0 = t0
        self.now_ms = now_ms
        self.route_name = route_name
        self.d = d
        self.idx = idx
        self.body = body
        self.end_pos = end_pos
        self.up: Upstream | None = None
        self.st: EndpointState = d.states[idx]
        self.rid = b""


class _Ctx:
    """Per-downstream-connection scratch: buffers allocated once, reused by every request."""

    __slots__ = (
        "down",
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
        self, down: SockIO, reader: RequestReader, mv: memoryview, client_ip: bytes, direction: str
    ):
        self.down = down
        self.reader = reader
        self.mv = mv
        self.upbuf = bytearray()
        self.upmv: memoryview | None = None
        self.client_ip = client_ip
        self.direction = direction
        self.bytes_out = 0
        self.bytes_in = 0
        self.addr: object = None


# ---------------------------------------------------------------------------------------------


class Proxy:
    """The sidecar data plane.

    ``local_services``: service name → ``(address, port)`` of each instance on this node; the
    inbound listener forwards only to these. ``tcp_listeners``: service name → ``(host, port)`` to
    listen on, raw TCP spliced to a balanced endpoint. ``None`` for ``outbound``/``inbound``
    disables that listener; port 0 picks a free port (see ``ProxyAddresses``).
    ``reuse_port``: bind with SO_REUSEPORT so several processes (see ``serve_workers``) can each
    run a proxy on the same fixed ports, the kernel spreading new connections across them.
    """

    def __init__(
        self,
        table: RouteTable | None = None,
        *,
        outbound: tuple[str, int] | None = ("127.0.0.1", 4140),
        inbound: tuple[str, int] | None = ("0.0.0.0", 4143),
        local_services: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        tcp_listeners: Mapping[str, tuple[str, int]] | None = None,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        limits: ProxyLimits | None = None,
        metrics: ProxyMetrics | None = None,
        reuse_port: bool = False,
        engine: str = "epoll",
    ) -> None:
        if engine not in ("epoll", "tasks"):
            raise ValueError(f"engine must be 'epoll' or 'tasks', not {engine!r}")
        self.engine = engine
        self._engine: Any = None  # the running engine.Engine, when there is one
        self.outbound_addr = outbound
        self.reuse_port = reuse_port
        self.inbound_addr = inbound
        self.tcp_listeners = dict(tcp_listeners or {})
        self.connector = connector
        self.rng = rng or random.Random()
        self.limits = limits or ProxyLimits()
        self.metrics = metrics or ProxyMetrics()
        self._states: dict[tuple[str, str, int], EndpointState] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._breakers: dict[str, BreakerCounters] = {}
        self._view = _View(table or RouteTable(), self._states, self)
        self._local: dict[bytes, tuple[str, str, int]] = {}
        self._local_dests: dict[tuple[str, str, int], _Dest] = {}
        self.update_local_services(local_services or {})
        self._pool: PoolDecisions[Upstream] = PoolDecisions(self.limits.max_idle_per_upstream)
        self._timed: set[SockIO] = set()  # every open raw socket: the watchdog scans these
        self._eject_horizon_ms = 0
        self.addresses: ProxyAddresses | None = None
        # Exchanges the fast path completed by itself (tests use it to see which path ran).
        self.fast_served = 0

    # -- control ---------------------------------------------------------------------------

    def update_table(self, table: RouteTable) -> None:
        """Atomic swap: requests already running keep the view they started with."""
        self._view = _View(table, self._states, self)
        self._local_dests = {}
        live = {ep.key for c in table.clusters.values() for ep in c.endpoints}
        for key in [k for k in self._states if k not in live]:
            st = self._states[key]
            if st.inflight == 0:
                del self._states[key]

    @property
    def table(self) -> RouteTable:
        return self._view.table

    def update_local_services(self, services: Mapping[str, Sequence[tuple[str, int]]]) -> None:
        local: dict[bytes, tuple[str, str, int]] = {}
        for name, instances in services.items():
            for host, port in instances:
                local[f"{host}:{port}".encode()] = (name, host, port)
        self._local = local
        self._local_dests = {}

    def endpoint_states(self) -> dict[tuple[str, str, int], dict[str, float]]:
        """For ``gossipmesh services``: in-flight, latency estimate and ejection per endpoint."""
        now_ms = int(_now() * 1000) if _in_trio() else 0
        return {
            key: {
                "inflight": st.inflight,
                "ewma_ms": st.ewma_ns / 1e6,
                "ejected": float(st.ejected_until_ms > now_ms),
                "ejected_until_ms": st.ejected_until_ms,
                "times_ejected": st.times_ejected,
                "consecutive_failures": st.consecutive_failures,
            }
            for key, st in self._states.items()
        }

    def _budget(self, s: ServiceSettings) -> RetryBudget:
        b = self._budgets.get(s.name)
        if b is None or b.percent != s.budget_percent or b.min_per_s != s.budget_min_per_s:
            b = self._budgets[s.name] = RetryBudget(s.budget_percent, s.budget_min_per_s)
        return b

    def _breaker(self, service: str) -> BreakerCounters:
        b = self._breakers.get(service)
        if b is None:
            b = self._breakers[service] = BreakerCounters()
        return b

    # -- serving ---------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[ProxyAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners: list[tuple[socket.socket, str, str]] = []
        try:
            out_addr = in_addr = None
            if self.outbound_addr is not None:
                s = _listen(*self.outbound_addr, self.reuse_port)
                listeners.append((s, OUTBOUND, ""))
                out_addr = s.getsockname()[:2]
            if self.inbound_addr is not None:
                s = _listen(*self.inbound_addr, self.reuse_port)
                listeners.append((s, INBOUND, ""))
                in_addr = s.getsockname()[:2]
            tcp_bound: dict[str, tuple[str, int]] = {}
            for service, (host, port) in self.tcp_listeners.items():
                s = _listen(host, port, self.reuse_port)
                listeners.append((s, TCP, service))
                tcp_bound[service] = s.getsockname()[:2]
            self.addresses = ProxyAddresses(out_addr, in_addr, tcp_bound)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog)
                eng = None
                if self.engine == "epoll":
                    from gossipmesh.proxy.engine import HAVE_EPOLL, Engine

                    if HAVE_EPOLL:
                        eng = self._engine = Engine(self, nursery)
                        nursery.start_soon(eng.run)
                for lsock, direction, service in listeners:
                    if eng is not None and direction != TCP:
                        eng.add_listener(lsock, direction)
                    else:
                        nursery.start_soon(self._accept_loop, lsock, direction, service, nursery)
                task_status.started(self.addresses)
        finally:
            self._engine = None
            for lsock, _, _ in listeners:
                trio.lowlevel.notify_closing(lsock)
                lsock.close()
            for up in self._pool.drain():
                self._close_upstream(up)

    async def _accept_loop(
        self, lsock: socket.socket, direction: str, service: str, nursery: trio.Nursery
    ) -> None:
        handler = self._tcp_conn if direction == TCP else self._http_conn
        while True:
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                await _wait_readable(lsock)
                continue
            except OSError as e:
                # EMFILE and friends: back off instead of spinning; counted in the log.
                log.warning("accept on %s failed: %s", direction, e)
                await trio.sleep(0.05)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handler, sock, addr, direction if direction != TCP else service)

    async def _watchdog(self) -> None:
        tick_s = self.limits.watchdog_tick_ms / 1000
        sweep_every = max(1, self.limits.pool_sweep_ms // max(1, self.limits.watchdog_tick_ms))
        n = 0
        while True:
            await trio.sleep(tick_s)
            now = _now()
            for io in list(self._timed):
                if io.deadline <= now:
                    io.timed_out = True
                    io.close()
                    self._timed.discard(io)
                    owner = io.owner
                    if owner is not None:
                        io.owner = None
                        try:
                            owner.on_timeout(io)
                        except Exception:
                            log.exception("proxy engine: timeout handling failed")
            n += 1
            if n % sweep_every == 0:
                for up in self._pool.sweep(int(now * 1000)):
                    self._close_upstream(up)

    # -- HTTP connection loop --------------------------------------------------------------

    def _new_ctx(self, sock: socket.socket, addr: tuple[str, int], direction: str) -> _Ctx:
        m = self.metrics
        m.open_connections[direction] += 1
        m.connections_total[direction] += 1
        limits = self.limits
        down = SockIO(sock)
        self._timed.add(down)
        reader = RequestReader(limits.max_header_bytes, limits.max_header_count)
        mv = memoryview(bytearray(limits.recv_buffer_bytes))
        ctx = _Ctx(down, reader, mv, str(addr[0]).encode(), direction)
        ctx.addr = addr
        return ctx

    def _close_down(self, ctx: _Ctx) -> None:
        """The downstream connection's end, wherever it was served (engine or task)."""
        down = ctx.down
        self._timed.discard(down)
        down.owner = None
        down.close()
        m = self.metrics
        direction = ctx.direction
        m.open_connections[direction] -= 1
        m.bytes_in[direction] += ctx.bytes_in
        m.bytes_out[direction] += ctx.bytes_out

    def _engine_accept(self, sock: socket.socket, addr: tuple[str, int], direction: str) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self._new_ctx(sock, addr, direction)
        try:
            self._engine.adopt(ctx)
        except (OSError, ValueError):
            self._close_down(ctx)

    def _engine_handover(self, ctx: _Ctx, first: Callable[[], Awaitable[bool]]) -> None:
        self._engine.nursery.start_soon(self._http_task, ctx, first)

    async def _http_conn(self, sock: socket.socket, addr: tuple[str, int], direction: str) -> None:
        await self._http_task(self._new_ctx(sock, addr, direction))

    async def _http_task(
        self, ctx: _Ctx, first: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Serve a downstream connection as a task: the whole connection (engine "tasks"), or
        from the exchange ``first()`` on for one the event engine handed over. In the latter
        case the connection goes back to the engine once nothing is buffered."""
        limits = self.limits
        down = ctx.down
        reader = ctx.reader
        mv = ctx.mv
        idle_s = limits.client_idle_ms / 1000
        fairness = limits.fairness_every
        served = 0
        wait_first = False
        handed_back = False
        try:
            if first is not None:
                if not await first():
                    return
                wait_first = True
                eng = self._engine
                if eng is not None and not reader.pending() and not down.closed:
                    eng.adopt(ctx)
                    handed_back = True
                    return
            while True:
                if not reader.pending():
                    down.deadline = _now() + idle_s
                    n = await down.recv_into(mv, wait_first)
                    if n == 0:
                        break
                    ctx.bytes_in += n
                    try:
                        reader.feed(mv[:n])
                    except HeaderLimitError:
                        await self._reply_error(ctx, None, "headers_too_large", "", keep=False)
                        break
                    except ParseError as e:
                        await self._reply_error(ctx, None, "bad_request", "", str(e), keep=False)
                        break
                    continue
                ev = reader.pop()
                if type(ev) is not RequestHead:
                    continue  # leftovers of a message whose exchange already gave up on it
                down.deadline = INF
                keep = await self._fast(ctx, ev)
                if keep is None:
                    keep = await self._exchange(ctx, ev)
                if not keep:
                    break
                served += 1
                wait_first = True
                eng = self._engine
                if first is not None and eng is not None and not reader.pending():
                    eng.adopt(ctx)
                    handed_back = True
                    return
                if served % fairness == 0:
                    await trio.lowlevel.checkpoint()
        except ConnLost:
            pass
        except Exception:
            log.exception("proxy %s connection from %s failed", ctx.direction, ctx.addr)
        finally:
            if not handed_back:
                self._close_down(ctx)

    async def _reply_error(
        self,
        ctx: _Ctx,
        req: RequestHead | None,
        reason: str,
        service: str,
        detail: str = "",
        *,
        keep: bool = True,
        route: str = "",
        t0: float = 0.0,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> bool:
        """Send a proxy-generated error; True if the connection may carry another request."""
        if req is not None:
            # The rest of an unread body is still in the stream: we cannot continue after it
            # unless it is already fully parsed.
            keep = keep and req.keep_alive and self._drain_buffered_body(ctx.reader, req)
        status, data = error_response(
            reason,
            service,
            detail,
            keep_alive=keep,
            request_id=req.request_id if req is not None else b"",
            extra_headers=extra,
            head_only=req is not None and req.method == b"HEAD",
        )
        self.metrics.error(service, reason)
        if req is not None:
            self.metrics.observe(service, route, status, ctx.direction, _now() - t0 if t0 else 0.0)
        try:
            await ctx.down.send_all(data)
            ctx.bytes_out += len(data)
        except ConnLost:
            return False
        return keep

    @staticmethod
    def _drain_buffered_body(reader: RequestReader, req: RequestHead) -> bool:
        """Consume the current request's body events if END is already queued."""
        if req.body_done:
            return True
        if not reader.body_complete_buffered():
            return False
        while reader.pop() is not END:
            pass
        req.body_done = True
        return True

    # -- the fast path ---------------------------------------------------------------------

    async def _fast(self, ctx: _Ctx, req: RequestHead) -> bool | None:
        """The common exchange, inline: None if it is not one (then ``_exchange`` serves it).

        Covers a keep-alive HTTP/1.1 request in origin form, with no body or a Content-Length
        body already fully parsed, no Expect/Upgrade, routed by (Host, path, method) through the
        view's memo, to an endpoint with an idle pooled raw-socket connection; and an upstream
        response that arrives whole in one receive: HTTP/1.1, keep-alive, Content-Length, a
        status that is neither 1xx/204/304 nor one the service retries on. Anything else is
        decided before a byte moves (None) or, once the request was sent, handed to
        ``_forward(resume=...)`` with the bytes received so far, so error statuses, timeouts,
        retries and outlier accounting stay in one place.

        The decisions are the plain methods ``_fast_plan`` (before a byte moves),
        ``_fast_commit`` (the request head) and ``_fast_finish`` (the response); the event
        engine (engine.py) drives the same three without a task per connection.
        """
        plan = self._fast_plan(ctx, req)
        if plan is None:
            return None
        if plan.up is None:
            return await self._fast_general(ctx, req, plan)
        head = self._fast_commit(ctx, req, plan)
        up = plan.up
        io = up.io
        usock = io.sock  # type: ignore[union-attr]
        try:
            try:
                sent = usock.send(head)
            except BlockingIOError:
                sent = 0
            if sent != len(head):
                await io.send_all(memoryview(head)[sent:])
        except (OSError, ConnLost):
            return await self._fast_send_failed(ctx, req, plan)
        upmv = ctx.upmv
        if upmv is None:
            ctx.upbuf = bytearray(self.limits.recv_buffer_bytes)
            upmv = ctx.upmv = memoryview(ctx.upbuf)
        try:
            await _wait_readable(usock)
            n = usock.recv_into(upmv)
        except (OSError, trio.ClosedResourceError, ValueError):
            n = -1  # BlockingIOError included: _try waits again
        if n > 0:
            out = self._fast_finish(ctx, req, plan, n)
            if type(out) is int:
                # The body is still coming (the upstream sent head and body apart): wait for
                # the rest while it fits the buffer. A failure resumes with what arrived.
                try:
                    while n < out:
                        await _wait_readable(usock)
                        got = usock.recv_into(upmv[n:])
                        if got == 0:
                            break
                        n += got
                except (OSError, trio.ClosedResourceError, ValueError):
                    pass
                out = self._fast_finish(ctx, req, plan, n)
            if type(out) is bytes:
                down = ctx.down
                try:
                    try:
                        k = down.sock.send(out)
                    except BlockingIOError:
                        k = 0
                    if k != len(out):
                        await down.send_all(memoryview(out)[k:])
                except (OSError, ConnLost):
                    return False
                ctx.bytes_out += len(out)
                return True
        return await self._fast_resume(ctx, req, plan, n)

    def _fast_general(self, ctx: _Ctx, req: RequestHead, plan: _Plan) -> Awaitable[bool]:
        """The general path with the fast path's pick (it connects, or uses a Connector)."""
        return self._forward(
            ctx, req, plan.t0, plan.route_name, plan.d, req.url, b"", picked=plan.idx
        )

    def _fast_send_failed(self, ctx: _Ctx, req: RequestHead, plan: _Plan) -> Awaitable[bool]:
        """A pooled connection the peer had closed: the general path retries it (stale)."""
        plan.d.breaker.inflight -= 1
        plan.st.inflight -= 1
        assert plan.up is not None
        self._close_upstream(plan.up)
        return self._forward(
            ctx, req, plan.t0, plan.route_name, plan.d, req.url, b"", plan.body, plan.rid
        )

    def _fast_resume(self, ctx: _Ctx, req: RequestHead, plan: _Plan, n: int) -> Awaitable[bool]:
        """The sent try continues in ``_try`` with the ``n`` response bytes received so far."""
        plan.d.breaker.inflight -= 1
        plan.st.inflight -= 1
        upmv = ctx.upmv
        assert plan.up is not None
        return self._forward(
            ctx,
            req,
            plan.t0,
            plan.route_name,
            plan.d,
            req.url,
            b"",
            plan.body,
            plan.rid,
            (plan.idx, plan.up, upmv[:n] if n > 0 and upmv is not None else None, plan.t0),
        )

    def _fast_plan(self, ctx: _Ctx, req: RequestHead) -> _Plan | None:
        """Everything decided before a byte moves: None if the request is not the fast shape
        (``_exchange`` serves it). ``plan.up`` None: picked, but the general path must connect
        (``_fast_general``)."""
        if (
            req.upgrade
            or req.expect_continue
            or req.chunked
            or not req.keep_alive
            or req.version != "1.1"
        ):
            return None
        url = req.url
        if url[:1] != b"/":
            return None
        reader = ctx.reader
        events = reader.events
        pos = reader.pos
        if pos >= len(events):
            return None
        body = b""
        if events[pos] is END:
            end_pos = pos + 1
        else:
            # A body entirely parsed already (at most one receive buffer): replayable.
            end_pos = pos
            n_ev = len(events)
            while end_pos < n_ev and type(events[end_pos]) is bytes:
                end_pos += 1
            if end_pos >= n_ev or events[end_pos] is not END:
                return None
            body = b"".join(events[pos:end_pos])  # type: ignore[arg-type]
            end_pos += 1
        t0 = _now()
        view = self._view
        rng = self.rng
        method = req.method
        if ctx.direction == INBOUND:
            dest = req.dest
            local = self._local.get(dest.strip()) if dest else None
            if local is None:
                return None
            d = self._local_dests.get(local)
            if d is None:
                d = self._local_dest(local)
            route_name = ""
        else:
            host = req.host
            cache = view.route_cache
            if not host or cache is None:
                return None
            q = url.find(b"?")
            ck = (host, url if q < 0 else url[:q], method)
            hit = cache.get(ck)
            if hit is None:
                h = normalise_host(host.decode("latin-1"))
                index = view.table.index
                found = None
                if not index.empty:
                    found = match(index, h, ck[1].decode("latin-1"), method.decode("latin-1"), ())
                if len(cache) >= MAX_ROUTE_CACHE:
                    cache.clear()
                hit = cache[ck] = (found, (h, ()))
            route, ckey = hit
            if route is not None:
                ckey = choose_destination(route, rng)
                route_name = route.name
            else:
                route_name = ""
            dd = view.dests.get(ckey)
            if dd is None:
                return None
            d = dd
        if not d.fast:
            return None
        settings = d.settings
        if d.breaker.inflight >= settings.max_requests:
            return None
        balancer = d.balancer
        now_ms = int(t0 * 1000)
        if balancer is None:
            idx = 0
        else:
            idx = balancer.pick(
                d.states, rng, now_ms, now_ms < self._eject_horizon_ms, None, None, int(t0 * 1e9)
            )
            if idx < 0:
                return None
        plan = _Plan(t0, now_ms, route_name, d, idx, body, end_pos)
        if self.connector is not None and d.endpoints[idx].inbound is not None:
            return plan
        up, expired = self._pool.checkout(d.pool_keys[idx], now_ms)
        for old in expired:
            self._close_upstream(old)
        if up is None:
            return plan  # connecting is the general path's business (with this very pick)
        io = up.io
        if type(io) is not SockIO or (method not in IDEMPOTENT and io.is_stale()):
            if type(io) is SockIO:
                self._close_upstream(up)  # the peer closed it while idle
            else:
                self._release(up, True, settings)
            return plan
        plan.up = up
        return plan

    def _fast_commit(self, ctx: _Ctx, req: RequestHead, plan: _Plan) -> bytes:
        """Take the request off the reader and build the head (and body) for ``plan.up``."""
        ctx.reader.pos = plan.end_pos
        req.body_done = True
        d = plan.d
        idx = plan.idx
        rng = self.rng
        rid = req.request_id
        xff = req.xff + b", " + ctx.client_ip if req.xff else ctx.client_ip
        if rid:
            lines = b"traceparent: %s\r\nx-forwarded-for: %s\r\n" % (
                next_traceparent(req.traceparent, rng),
                xff,
            )
        else:
            plan.rid = new_request_id(rng)
            lines = b"traceparent: %s\r\nx-forwarded-for: %s\r\nx-request-id: %s\r\n" % (
                next_traceparent(req.traceparent, rng),
                xff,
                plan.rid,
            )
        extra = [lines]
        if not req.host:
            extra.append(d.host_line)
        mesh = d.mesh_lines[idx]
        if mesh:
            extra.append(mesh)
        head = build_request_head(req, req.url, extra)
        if plan.body:
            head += plan.body
        st = plan.st
        d.breaker.inflight += 1
        st.inflight += 1
        settings = d.settings
        assert plan.up is not None
        plan.up.io.deadline = plan.t0 + min(settings.per_try_ms, settings.request_ms) / 1000
        return head

    def _fast_finish(self, ctx: _Ctx, req: RequestHead, plan: _Plan, n: int) -> bytes | int | None:
        """The downstream bytes for the ``n`` response bytes in ``ctx.upbuf``, with the upstream
        released and the exchange counted; None if the response is not the fast shape (then
        ``_fast_resume``); an int: a Content-Length body that fits the buffer is still coming,
        call again once that many bytes are in."""
        upbuf = ctx.upbuf
        he = upbuf.find(b"\r\n\r\n", 0, n)
        if he <= 0 or not upbuf.startswith(b"HTTP/1.1 "):
            return None
        raw = bytes(upbuf[:he])
        status = int(raw[9:12]) if raw[9:12].isdigit() else 0
        d = plan.d
        settings = d.settings
        if (
            status < 200
            or status == 204
            or status == 304
            or status in settings.retry_on_status
            or req.method == b"HEAD"
        ):
            return None
        cl = -1
        hop = False
        for name, value in RESP_FIELDS_RE.findall(raw):
            name = name.lower()
            if name == b"content-length":
                value = value.rstrip(b" \t")
                if cl >= 0 or not value.isdigit():
                    return None
                cl = int(value)
            elif (name == b"connection" and value.rstrip(b" \t").lower() == b"keep-alive") or (
                name == b"keep-alive"
            ):
                hop = True
            else:
                return None  # framing or hop-by-hop fields the general path must judge
        if cl < 0:
            return None
        total = he + 4 + cl
        if total != n:
            # Body still coming and it fits the buffer: the caller reads up to ``total``.
            return total if n < total <= len(upbuf) else None
        if hop:
            raw = RESP_HOP_RE.sub(b"", raw)
        upmv = ctx.upmv
        assert upmv is not None and plan.up is not None
        out = b"".join((raw, b"\r\n\r\n", upmv[he + 4 : n]))
        self._release(plan.up, True, settings)
        now = _now()
        st = plan.st
        if settings.policy == "peak_ewma":
            st.observe_rtt(int((now - plan.t0) * 1e9), int(now * 1e9))
        d.breaker.inflight -= 1
        st.inflight -= 1
        if (d.peers or d.balancer is None) and (
            status >= 500 or st.consecutive_failures or st.times_ejected
        ):
            self._outcome(st, status >= 500, settings, d.peers, d.service)
        d.budget.record_request(plan.now_ms)
        self.metrics.observe(d.service, plan.route_name, status, ctx.direction, now - plan.t0)
        self.fast_served += 1
        return out

    # -- one exchange ----------------------------------------------------------------------

    async def _exchange(self, ctx: _Ctx, req: RequestHead) -> bool:
        """Serve one request; True if the downstream connection stays open."""
        t0 = _now()
        view = self._view
        if ctx.direction == INBOUND:
            return await self._exchange_inbound(ctx, req, t0)
        url = req.url
        if url[:1] == b"/":
            target = url
            authority = req.host
            add_host = b""
        elif url[:7].lower() == b"http://":
            rest = url[7:]
            slash = rest.find(b"/")
            authority = rest if slash < 0 else rest[:slash]
            target = b"/" if slash < 0 else rest[slash:]
            # RFC 9112 §3.2.2: the absolute-form authority wins over Host.
            add_host = b"" if req.host == authority else authority
            if add_host and req.host:
                req.headers = [(n, v) for n, v in req.headers if n != b"host"]
        else:
            reason = "unsupported" if req.method == b"CONNECT" else "bad_request"
            return await self._reply_error(
                ctx,
                req,
                reason,
                "",
                "request target must be origin-form or http:// absolute-form",
                t0=t0,
            )
        if not authority:
            return await self._reply_error(ctx, req, "bad_request", "", "no Host", t0=t0)
        host = normalise_host(authority.decode("latin-1"))
        table = view.table
        route = None
        if not table.index.empty:
            q = target.find(b"?")
            path = (target if q < 0 else target[:q]).decode("latin-1")
            route = match(table.index, host, path, req.method.decode("latin-1"), req.headers)
        if route is not None:
            ckey = choose_destination(route, self.rng)
            route_name = route.name
        else:
            ckey = (host, ())
            route_name = ""
        cluster = table.clusters.get(ckey)
        if cluster is None:
            return await self._reply_error(ctx, req, "no_route", host, t0=t0)
        return await self._forward(ctx, req, t0, route_name, view.dests[ckey], target, add_host)

    async def _exchange_inbound(self, ctx: _Ctx, req: RequestHead, t0: float) -> bool:
        dest = req.dest.strip()
        local = self._local.get(dest) if dest else None
        if local is None:
            if not dest and req.host:
                # A request aimed at the inbound port without a mesh destination: only allowed if
                # the Host names exactly one local instance's service.
                name = normalise_host(req.host.decode("latin-1"))
                matches = [v for v in self._local.values() if v[0] == name]
                if len(matches) == 1:
                    local = matches[0]
            if local is None:
                return await self._reply_error(
                    ctx,
                    req,
                    "forbidden_destination",
                    req.service.decode("latin-1"),
                    dest.decode("latin-1") or "no x-gossipmesh-dest",
                    t0=t0,
                )
        d = self._local_dests.get(local)
        if d is None:
            d = self._local_dest(local)
        if req.method == b"CONNECT":
            return await self._connect_tunnel(ctx, req, d.service, d.settings, d.endpoints[0])
        url = req.url
        return await self._forward(ctx, req, t0, "", d, url if url[:1] == b"/" else b"/", b"")

    def _local_dest(self, local: tuple[str, str, int]) -> _Dest:
        service, host, port = local
        settings = self._view.table.services.get(service) or ServiceSettings(name=service)
        # The inbound hop does not retry (no balancer): the caller's outbound side owns retries.
        ep = Endpoint("local", host, port)
        st = self._states.get(ep.key)
        if st is None:
            st = self._states[ep.key] = EndpointState(ep.key)
        d = _Dest(settings, (ep,), [st], None, (), self._budget(settings), self._breaker(service))
        if len(self._local_dests) < 4096:
            self._local_dests[local] = d
        return d

    async def _forward(
        self,
        ctx: _Ctx,
        req: RequestHead,
        t0: float,
        route_name: str,
        d: _Dest,
        target: bytes,
        add_host: bytes,
        fast_body: bytes | None = None,
        fast_rid: bytes = b"",
        resume: _Resume | None = None,
        picked: int = -1,
    ) -> bool:
        """Serve one request through ``d`` with retries.

        The fast path hands a request over here when it meets anything it does not handle:
        ``fast_body`` is the request body it already took off the reader, ``fast_rid`` the
        request id it generated, and ``resume`` (endpoint index, upstream, response bytes
        already received, send time) says its first try was already sent: that try continues
        here exactly as if ``_try`` had sent it, so outcomes and retries are decided in one place.
        ``picked``: the endpoint the fast path already chose (the balancer is not asked twice,
        which would skew round robin toward endpoints with pooled connections).
        """
        service = d.service
        settings = d.settings
        endpoints = d.endpoints
        states = d.states
        balancer = d.balancer
        peers = d.peers
        reader = ctx.reader
        direction = ctx.direction
        rng = self.rng
        now_ms = int(t0 * 1000)
        if not endpoints:
            return await self._reply_error(
                ctx, req, "no_healthy_endpoint", service, route=route_name, t0=t0
            )
        counters = d.breaker
        limit = counters.admit_request(settings) if resume is None else None
        if limit is not None:
            self.metrics.breaker_trip(service, limit)
            return await self._reply_error(
                ctx,
                req,
                "overloaded",
                service,
                limit,
                route=route_name,
                t0=t0,
                extra=((b"x-gossipmesh-overloaded", limit.encode()),),
            )

        # Replayable body: nothing, or all of it already parsed (<= one receive buffer).
        body = b""
        replayable = True
        if fast_body is not None:
            body = fast_body
        elif req.has_body:
            if reader.body_complete_buffered():
                parts = []
                while True:
                    ev = reader.pop()
                    if ev is END:
                        break
                    parts.append(ev)
                body = b"".join(parts)  # type: ignore[arg-type]
                req.body_done = True
            else:
                replayable = False
        elif reader.pending() and reader.events[reader.pos] is END:
            reader.pos += 1
            req.body_done = True
        if req.upgrade:
            replayable = False

        # Headers this hop adds.
        rid = req.request_id
        xff = req.xff + b", " + ctx.client_ip if req.xff else ctx.client_ip
        if rid:
            lines = b"traceparent: %s\r\nx-forwarded-for: %s\r\n" % (
                next_traceparent(req.traceparent, rng),
                xff,
            )
        else:
            rid = fast_rid or new_request_id(rng)
            lines = b"traceparent: %s\r\nx-forwarded-for: %s\r\nx-request-id: %s\r\n" % (
                next_traceparent(req.traceparent, rng),
                xff,
                rid,
            )
        extra = [lines]
        if add_host:
            extra.append(b"host: " + add_host + b"\r\n")
        elif not req.host:
            extra.append(d.host_line)
        if req.upgrade:
            upg = _header(req.headers, b"upgrade")
            extra.append(b"connection: upgrade\r\n")
            if upg:
                extra.append(b"upgrade: " + upg + b"\r\n")
        if req.has_body:
            if replayable:
                if req.chunked:
                    extra.append(b"content-length: %d\r\n" % len(body))
            elif req.chunked:
                extra.append(b"transfer-encoding: chunked\r\n")

        idempotent = req.method in IDEMPOTENT
        budget = d.budget
        budget.record_request(now_ms)
        attempts_left = settings.retry_attempts if balancer is not None else 0
        tried: list[int] = []
        request_deadline = t0 + settings.request_ms / 1000
        per_try_s = settings.per_try_ms / 1000
        status = 0
        counters.inflight += 1
        try:
            while True:
                now = _now()
                now_ms = int(now * 1000)
                if resume is not None:
                    # The fast path's try, already sent: read its response.
                    idx, up, prefed, sent_at = resume
                    resume = None
                    st = states[idx]
                    tried.append(idx)
                    st.inflight += 1
                    try:
                        outcome, status, keep = await self._try(
                            ctx,
                            req,
                            up,
                            b"",
                            body,
                            replayable,
                            idempotent and replayable and attempts_left > 0,
                            settings,
                            min(now + per_try_s, request_deadline),
                            st,
                            sent_at,
                            prefed,
                        )
                    finally:
                        st.inflight -= 1
                else:
                    if balancer is None:
                        idx = 0
                    elif picked >= 0:
                        idx = picked
                        picked = -1
                    else:
                        idx = balancer.pick(
                            states,
                            rng,
                            now_ms,
                            now_ms < self._eject_horizon_ms,
                            tried,
                            _hash_key(req, settings, rid)
                            if balancer.policy == "ring_hash"
                            else None,
                            int(now * 1e9),
                        )
                    if idx < 0:
                        return await self._reply_error(
                            ctx, req, "no_healthy_endpoint", service, route=route_name, t0=t0
                        )
                    ep = endpoints[idx]
                    st = states[idx]
                    tried.append(idx)
                    mesh = d.mesh_lines[idx]
                    head = build_request_head(req, target, [*extra, mesh] if mesh else extra)
                    try:
                        up = await self._acquire(
                            service, ep, settings, counters, now_ms, not (replayable and idempotent)
                        )
                    except Overloaded as e:
                        self.metrics.breaker_trip(service, e.limit)
                        return await self._reply_error(
                            ctx,
                            req,
                            "overloaded",
                            service,
                            e.limit,
                            route=route_name,
                            t0=t0,
                            extra=((b"x-gossipmesh-overloaded", e.limit.encode()),),
                        )
                    except ConnectFailed as e:
                        self._outcome(st, True, settings, peers, service)
                        if (
                            settings.retry_on_connect_failure
                            and attempts_left > 0
                            and self._may_retry(budget, service)
                        ):
                            attempts_left -= 1
                            continue
                        return await self._reply_error(
                            ctx,
                            req,
                            "upstream_connect_failure",
                            service,
                            str(e),
                            route=route_name,
                            t0=t0,
                        )

                    st.inflight += 1
                    try:
                        outcome, status, keep = await self._try(
                            ctx,
                            req,
                            up,
                            head,
                            body,
                            replayable,
                            idempotent and replayable and attempts_left > 0,
                            settings,
                            min(_now() + per_try_s, request_deadline),
                            st,
                        )
                    finally:
                        st.inflight -= 1
                if outcome == _DONE:
                    if peers or balancer is None:
                        self._outcome(st, status >= 500, settings, peers, service)
                    self.metrics.observe(service, route_name, status, direction, _now() - t0)
                    return keep
                # Failed before anything reached the client.
                failed_hard = outcome != _STALE
                if failed_hard:
                    self._outcome(st, True, settings, peers, service)
                if outcome == _STALE and idempotent and replayable:
                    continue  # a pooled connection the peer had closed: free retry, fresh socket
                if outcome == _RETRY_STATUS or (
                    idempotent
                    and replayable
                    and attempts_left > 0
                    and outcome in (_TIMEOUT, _RESET)
                ):
                    if attempts_left > 0 and self._may_retry(budget, service):
                        attempts_left -= 1
                        continue
                    if outcome == _RETRY_STATUS:
                        # No retry left: the upstream's answer was consumed; report it as ours.
                        return await self._reply_error(
                            ctx,
                            req,
                            "upstream_reset",
                            service,
                            f"upstream answered {status}",
                            route=route_name,
                            t0=t0,
                        )
                if outcome == _TIMEOUT:
                    return await self._reply_error(
                        ctx, req, "upstream_timeout", service, route=route_name, t0=t0
                    )
                if outcome == _ABORT:
                    self.metrics.observe(service, route_name, 0, direction, _now() - t0)
                    return False
                return await self._reply_error(
                    ctx, req, "upstream_reset", service, route=route_name, t0=t0
                )
        finally:
            counters.inflight -= 1

    def _may_retry(self, budget: RetryBudget, service: str) -> bool:
        if budget.try_withdraw(int(_now() * 1000)):
            self.metrics.bump(self.metrics.retries, service)
            return True
        self.metrics.bump(self.metrics.budget_exhausted, service)
        return False

    def _outcome(
        self,
        st: EndpointState,
        failed: bool,
        settings: ServiceSettings,
        peers: Sequence[EndpointState],
        service: str,
    ) -> None:
        if not failed and st.consecutive_failures == 0 and not st.times_ejected:
            return
        if record_outcome(st, failed, int(_now() * 1000), settings, peers or (st,)):
            self.metrics.bump(self.metrics.ejections, service)
            log.info("ejected %s from %s until %d", st.key, service, st.ejected_until_ms)
            self._eject_horizon_ms = max(self._eject_horizon_ms, st.ejected_until_ms)

    async def _acquire(
        self,
        service: str,
        ep: Endpoint,
        settings: ServiceSettings,
        counters: BreakerCounters,
        now_ms: int,
        check_stale: bool,
    ) -> Upstream:
        host, port = ep.inbound if ep.inbound is not None else (ep.address, ep.port)
        key = (service, host, port)
        pool = self._pool
        while True:
            up, expired = pool.checkout(key, now_ms)
            for old in expired:
                self._close_upstream(old)
            if up is None:
                break
            if check_stale and up.io.is_stale():
                self._close_upstream(up)
                continue
            return up
        limit = counters.admit_connection(settings) or counters.admit_pending(settings)
        if limit is not None:
            raise Overloaded(limit)
        counters.pending += 1
        try:
            io = await self._open(
                host, port, settings.connect_ms, use_connector=ep.inbound is not None
            )
        finally:
            counters.pending -= 1
        counters.connections += 1
        m = self.metrics
        m.upstream_connections[service] = m.upstream_connections.get(service, 0) + 1
        return Upstream(io, key, service, self.limits)

    async def _open(self, host: str, port: int, connect_ms: int, use_connector: bool) -> IO:
        if use_connector and self.connector is not None:
            with trio.move_on_after(connect_ms / 1000) as cs:
                try:
                    stream = await self.connector.connect(host, port)
                except (OSError, trio.BrokenResourceError) as e:
                    raise ConnectFailed(f"{host}:{port}: {e}") from None
            if cs.cancelled_caught:
                raise ConnectFailed(f"{host}:{port}: connect timed out after {connect_ms} ms")
            return StreamIO(stream)
        sock = await _connect_raw(host, port, connect_ms, self._timed)
        io = SockIO(sock)
        self._timed.add(io)
        return io

    def _release(self, up: Upstream, reusable: bool, settings: ServiceSettings) -> None:
        if reusable and not up.io.closed:
            up.io.deadline = INF
            up.reused = True
            for old in self._pool.checkin(up.key, up, int(_now() * 1000), settings.idle_ms):
                self._close_upstream(old)
        else:
            self._close_upstream(up)

    def _close_upstream(self, up: Upstream) -> None:
        if up.reg is not None:
            up.reg.forget()
            up.reg = None
        if isinstance(up.io, SockIO):
            self._timed.discard(up.io)
            up.io.owner = None
        if not up.io.closed:
            up.io.close()
            b = self._breakers.get(up.service)
            if b is not None:
                b.connections -= 1
            m = self.metrics.upstream_connections
            m[up.service] = m.get(up.service, 1) - 1

    async def _try(
        self,
        ctx: _Ctx,
        req: RequestHead,
        up: Upstream,
        head: bytes,
        body: bytes,
        replayable: bool,
        can_retry: bool,
        settings: ServiceSettings,
        deadline: float,
        st: EndpointState,
        sent_at: float = 0.0,
        prefed: memoryview | None = None,
    ) -> tuple[int, int, bool]:
        """One try. Returns (outcome, status, downstream keep-alive).

        ``sent_at`` non-zero: the request was already sent (by the fast path) at that time, and
        ``prefed`` holds the response bytes already received for it, if any."""
        down = ctx.down
        io = up.io
        upmv = ctx.upmv
        if upmv is None:
            ctx.upbuf = bytearray(self.limits.recv_buffer_bytes)
            upmv = ctx.upmv = memoryview(ctx.upbuf)
        io.deadline = deadline
        try:
            if sent_at:
                pass
            elif replayable:
                sent_at = _now()
                await io.send_all(head + body if body else head)
            else:
                sent_at = _now()
                await io.send_all(head)
                if req.expect_continue:
                    await down.send_all(CONTINUE_100)
                if req.has_body:
                    ok = await self._stream_request_body(ctx, req, io)
                    req.body_done = ok
                    if not ok:
                        self._close_upstream(up)
                        return _ABORT, 0, False
        except ConnLost:
            timed_out = io.timed_out
            self._close_upstream(up)
            if down.closed:
                return _ABORT, 0, False
            if timed_out:
                return _TIMEOUT, 0, False
            return (_STALE if up.reused else _RESET), 0, False

        rr = up.reader
        rh: ResponseHead | None = None
        wait_first = True
        # Read until the final response head (1xx other than 101 are dropped).
        try:
            if prefed is not None:
                rr.feed(prefed)
            while rh is None:
                if not rr.pending():
                    n = await io.recv_into(upmv, wait_first)
                    wait_first = False
                    if n == 0:
                        raise ConnLost("upstream closed before the response head")
                    rr.feed(upmv[:n])
                    continue
                ev = rr.pop()
                if type(ev) is ResponseHead:
                    if 100 <= ev.status < 200 and ev.status != 101:
                        continue
                    rh = ev
        except (ConnLost, ParseError):
            timed_out = io.timed_out
            seen_bytes = rr.mid_message()
            self._close_upstream(up)
            if timed_out:
                return _TIMEOUT, 0, True
            return (_STALE if up.reused and not seen_bytes else _RESET), 0, True

        status = rh.status
        if settings.policy == "peak_ewma":
            st.observe_rtt(int((_now() - sent_at) * 1e9), int(_now() * 1e9))
        if can_retry and status in settings.retry_on_status:
            self._close_upstream(up)
            return _RETRY_STATUS, status, True

        if rh.upgrade and req.upgrade:
            return await self._tunnel_after_101(ctx, req, up, rh)

        # Relay the response.
        is_head = req.method == b"HEAD"
        no_body = is_head or status == 204 or status == 304 or status < 200
        # After a refused upgrade the request parser is in tunnel mode: end the connection.
        close_after = not req.keep_alive or req.upgrade
        down_chunked = False
        close_delimited = False
        resp_extra: list[bytes] = []
        if not no_body and (rh.chunked or rh.content_length is None):
            close_delimited = not rh.chunked
            if req.version == "1.1":
                down_chunked = True
                resp_extra.append(b"transfer-encoding: chunked\r\n")
            else:
                close_after = True
        if close_after:
            resp_extra.append(b"connection: close\r\n")
        elif req.version == "1.0":
            resp_extra.append(b"connection: keep-alive\r\n")
        out = [build_response_head(rh, resp_extra)]
        if is_head:
            rr.reset()  # llhttp cannot be told a HEAD response has no body
            done = True
        else:
            done = False
        idle_s = settings.idle_ms / 1000
        reusable = rh.keep_alive
        try:
            while True:
                if _drain_body(rr, down_chunked, out):
                    done = True  # (a HEAD answer is done before any body event)
                if out:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    out = []
                    await down.send_all(data)
                    ctx.bytes_out += len(data)
                if done:
                    break
                io.deadline = _now() + idle_s
                try:
                    n = await io.recv_into(upmv)
                except ConnLost:
                    n = -1
                if n <= 0:
                    if n == 0 and close_delimited:
                        reusable = False
                        done = True
                        if down_chunked:
                            out.append(LAST_CHUNK)
                        continue
                    # Upstream died mid-body: the client has a partial response; only closing
                    # the downstream connection tells it so.
                    self._close_upstream(up)
                    return _DONE, status, False
                rr.feed(upmv[:n])
        except ConnLost:
            self._close_upstream(up)
            return _DONE, status, False
        except ParseError:
            self._close_upstream(up)
            return _DONE, status, False
        self._release(up, reusable and not rr.pending(), settings)
        return _DONE, status, not close_after

    async def _stream_request_body(self, ctx: _Ctx, req: RequestHead, io: IO) -> bool:
        """Forward the rest of the request body as it arrives; False if the client vanished."""
        reader = ctx.reader
        down = ctx.down
        mv = ctx.mv
        chunked = req.chunked
        idle_s = self.limits.client_idle_ms / 1000
        while True:
            out: list[bytes] = []
            done = _drain_body(reader, chunked, out)
            if out:
                await io.send_all(b"".join(out))
            if done:
                return True
            down.deadline = _now() + idle_s
            n = await down.recv_into(mv)
            down.deadline = INF
            if n == 0:
                return False
            try:
                reader.feed(mv[:n])
            except ParseError:
                return False

    # -- tunnels ---------------------------------------------------------------------------

    async def _tunnel_after_101(
        self, ctx: _Ctx, req: RequestHead, up: Upstream, rh: ResponseHead
    ) -> tuple[int, int, bool]:
        head = build_response_head(
            rh,
            [b"connection: upgrade\r\n"]
            + ([b"upgrade: " + v + b"\r\n" for v in [_header(rh.headers, b"upgrade")] if v]),
        )
        tail = up.reader.upgrade_tail or b""
        try:
            await ctx.down.send_all(head + tail)
        except ConnLost:
            self._close_upstream(up)
            return _DONE, 101, False
        client_tail = ctx.reader.upgrade_tail or b""
        await self._splice(ctx.down, up.io, client_tail)
        self._close_upstream(up)
        return _DONE, 101, False

    async def _splice(self, a: IO, b: IO, a_to_b_first: bytes = b"") -> None:
        a.deadline = b.deadline = INF
        # A tunnel idle for tunnel_idle_ms either way is closed by the watchdog.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, a, b, a_to_b_first)
            nursery.start_soon(self._pump, b, a, b"")

    async def _pump(self, src: IO, dst: IO, first: bytes) -> None:
        mv = memoryview(bytearray(self.limits.recv_buffer_bytes))
        idle_s = self.limits.tunnel_idle_ms / 1000
        try:
            if first:
                await dst.send_all(first)
            while True:
                src.deadline = _now() + idle_s
                n = await src.recv_into(mv)
                if n == 0:
                    dst.shutdown_write()
                    return
                await dst.send_all(mv[:n])
        except ConnLost:
            # One side failed: tear down both so the other direction does not hang.
            src.close()
            dst.close()

    async def _connect_tunnel(
        self, ctx: _Ctx, req: RequestHead, service: str, settings: ServiceSettings, ep: Endpoint
    ) -> bool:
        """Inbound CONNECT (a TCP service crossing the mesh): splice to the local instance."""
        try:
            io = await self._open(ep.address, ep.port, settings.connect_ms, use_connector=False)
        except ConnectFailed as e:
            return await self._reply_error(
                ctx, req, "upstream_connect_failure", service, str(e), keep=False
            )
        try:
            await ctx.down.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await self._splice(ctx.down, io, ctx.reader.upgrade_tail or b"")
        finally:
            if isinstance(io, SockIO):
                self._timed.discard(io)
            io.close()
        return False

    # -- TCP listeners ---------------------------------------------------------------------

    async def _tcp_conn(self, sock: socket.socket, addr: tuple[str, int], service: str) -> None:
        m = self.metrics
        m.open_connections[TCP] += 1
        m.connections_total[TCP] += 1
        down = SockIO(sock)
        self._timed.add(down)
        up_io: IO | None = None
        try:
            view = self._view
            ckey = (service, ())
            cluster = view.table.clusters.get(ckey)
            if cluster is None or not cluster.endpoints:
                m.error(service, "no_healthy_endpoint")
                return
            settings = cluster.settings
            states = view.states[ckey]
            balancer = view.balancers[ckey]
            peers = view.peers.get(service, ())
            tried: list[int] = []
            tail = b""
            for _ in range(1 + settings.retry_attempts):
                now_ms = int(_now() * 1000)
                idx = balancer.pick(
                    states,
                    self.rng,
                    now_ms,
                    now_ms < self._eject_horizon_ms,
                    tried,
                    None,
                    int(_now() * 1e9),
                )
                if idx < 0:
                    break
                tried.append(idx)
                ep = cluster.endpoints[idx]
                try:
                    if ep.inbound is None:
                        up_io = await self._open(ep.address, ep.port, settings.connect_ms, False)
                    else:
                        up_io = await self._open(*ep.inbound, settings.connect_ms, True)
                        tail = await self._mesh_connect(up_io, ep, service, settings)
                except (ConnectFailed, ConnLost) as e:
                    if up_io is not None:
                        self._discard(up_io)
                        up_io = None
                    self._outcome(states[idx], True, settings, peers, service)
                    log.debug("tcp %s: %s failed: %s", service, ep.key, e)
                    continue
                self._outcome(states[idx], False, settings, peers, service)
                break
            if up_io is None:
                m.error(service, "upstream_connect_failure")
                return
            if tail:
                await down.send_all(tail)
            await self._splice(down, up_io)
        except ConnLost:
            pass
        except Exception:
            log.exception("tcp connection for %s failed", service)
        finally:
            self._timed.discard(down)
            down.close()
            if up_io is not None:
                self._discard(up_io)
            m.open_connections[TCP] -= 1

    def _discard(self, io: IO) -> None:
        if isinstance(io, SockIO):
            self._timed.discard(io)
        io.close()

    async def _mesh_connect(
        self, io: IO, ep: Endpoint, service: str, settings: ServiceSettings
    ) -> bytes:
        """Ask the peer's inbound side for a tunnel to ``ep``; returns bytes read past its head."""
        dest = ep.dest.encode()
        await io.send_all(
            b"CONNECT "
            + dest
            + b" HTTP/1.1\r\nhost: "
            + dest
            + b"\r\nx-gossipmesh-dest: "
            + dest
            + b"\r\nx-gossipmesh-service: "
            + service.encode()
            + b"\r\n\r\n"
        )
        io.deadline = _now() + settings.per_try_ms / 1000
        buf = bytearray()
        mv = memoryview(bytearray(4096))
        while b"\r\n\r\n" not in buf:
            if len(buf) > self.limits.max_connect_response_bytes:
                raise ConnLost("CONNECT response head too large")
            n = await io.recv_into(mv, not buf)
            if n == 0:
                raise ConnLost("peer closed during CONNECT")
            buf += mv[:n]
        io.deadline = INF
        end = buf.index(b"\r\n\r\n") + 4
        status_line = bytes(buf[: buf.find(b"\r\n")])
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[1] != b"200":
            raise ConnectFailed(f"peer refused tunnel: {status_line!r}")
        return bytes(buf[end:])


_DONE, _RETRY_STATUS, _TIMEOUT, _RESET, _STALE, _ABORT = range(6)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    for n, v in headers:
        if n == name:
            return v
    return b""


def _hash_key(req: RequestHead, settings: ServiceSettings, rid: bytes) -> bytes | None:
    if settings.policy != "ring_hash":
        return None
    name = settings.hash_header.encode("latin-1")
    if name == b"x-request-id":
        return rid
    return _header(req.headers, name) or None


def _next_is_head(reader: RequestReader) -> bool:
    return reader.pending() and type(reader.events[reader.pos]) is RequestHead


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


__all__ = [
    "Connector",
    "Proxy",
    "ProxyAddresses",
    "ProxyLimits",
    "TcpConnector",
    "http1",
    "serve_workers",
]


def _drain_body(reader: Any, chunked: bool, out: list[bytes]) -> bool:
    """Move the body bytes parsed so far into ``out``, framed for the other side (re-chunked when
    it is chunked); True once the message ended. Both directions relay bodies through this."""
    while reader.pending():
        ev = reader.pop()
        if ev is END:
            if chunked:
                out.append(LAST_CHUNK)
            return True
        if type(ev) is bytes:
            out.append(chunk(ev) if chunked else ev)
    return False
