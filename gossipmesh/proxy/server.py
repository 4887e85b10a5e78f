"""The sidecar data plane's front: ``Proxy`` binds the listeners and wires the parts together.

Theory of operation
-------------------
``Proxy`` decides nothing per request. It binds the outbound, inbound and TCP listeners, starts
the watchdog (deadlines.py) and the event engine (engine.py, unless ``engine="tasks"`` or there
is no epoll), and builds the parts, one job each:

- routing.py, pipeline.py: the decisions (route, destination, endpoint, outcome), pure where a
  decision is taken; fastpath.py runs them inline for the common exchange, forward.py with
  retries on a task;
- heads.py: request and response head rewriting;
- downstream.py, upstream.py, relay.py: the byte movers and the connections' bookkeeping;
- tunnels.py (Upgrade, CONNECT, TCP splices) and tcp.py (TCP listeners);
- engine.py (one edge-triggered epoll for the fast path) and tasks.py (a task per connection);
- h2serve.py, h2exchange.py, h2pool.py, h2link.py: HTTP/2 and gRPC on the same listeners (a
  connection's first bytes decide, detect.py; ALPN ``h2`` on the mesh hop), through the same
  decisions, a task per stream and one shared upstream connection per endpoint.

Mesh hop. The outbound side sends a request for a remote endpoint to the peer agent's inbound
listener with ``x-gossipmesh-dest: ADDRESS:PORT`` (and ``x-gossipmesh-service``). The inbound side
forwards only to destinations listed in its local service registry: it is never an open proxy.
TCP services cross the hop as ``CONNECT ADDRESS:PORT`` to the inbound listener.

mTLS (``mtls``: a ``MeshTls``, mtls.py): the inbound listener then speaks TLS 1.3 only and
requires a client certificate; each accepted connection is handshaken and its caller judged on a
task (handshakes.py) and only then served by the engine; the outbound side dials peers with TLS
presenting the calling service's identity (``outbound_listeners``: a listener per local service
whose requests present that service's identity; the plain outbound listener presents the
default one). ``PeerWatch`` (peers.py) closes connections whose peer is revoked or expired; the
destination's inbound authorizes every request (``update_policies``, authz.py). Without ``mtls``
the hop is plaintext: through the ``Connector`` when one is given, else raw sockets.

Time comes from one ``Clock`` (clock.py; default: trio's), in integer nanoseconds.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from gossipmesh.proxy import engine as engine_mod
from gossipmesh.proxy.audit import Audit, Sink
from gossipmesh.proxy.authz import Policies
from gossipmesh.proxy.clock import NS_PER_MS, Clock, TrioClock
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.descriptors import DescriptorBudget
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.engine import Engine
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.forward import Forwarder
from gossipmesh.proxy.h2side import H2Side
from gossipmesh.proxy.handshakes import Handshakes
from gossipmesh.proxy.limits import INBOUND, OUTBOUND, TCP, ProxyLimits
from gossipmesh.proxy.memory import Trimmer, compact
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.mtls import MeshCredentials, MeshTls
from gossipmesh.proxy.peers import PeerWatch
from gossipmesh.proxy.pipeline import Accounting
from gossipmesh.proxy.relay import Relay
from gossipmesh.proxy.request_log import RequestLog
from gossipmesh.proxy.routing import Directory
from gossipmesh.proxy.sockio import Connector, TcpConnector, listen_socket, wait_readable
from gossipmesh.proxy.table import RouteTable
from gossipmesh.proxy.tasks import TaskLoop
from gossipmesh.proxy.tcp import TcpProxy
from gossipmesh.proxy.tunnels import Tunnels
from gossipmesh.proxy.upstream import Upstreams
from gossipmesh.proxy.workers import serve_workers

if TYPE_CHECKING:
    from gossipmesh.proxy.h2pool import H2Pool
    from gossipmesh.proxy.h2serve import H2Front

log = logging.getLogger("gossipmesh.proxy")


@dataclass(frozen=True, slots=True)
class ProxyAddresses:
    """Where ``serve`` actually bound (ports resolved when 0 was asked)."""

    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    tcp: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # Per-service outbound listeners: service -> where its requests enter the mesh.
    services: Mapping[str, tuple[str, int]] = field(default_factory=dict)


class Proxy:
    """The sidecar data plane.

    ``local_services``: service name → ``(address, port)`` of each instance on this node; the
    inbound listener forwards only to these. ``tcp_listeners``: service name → ``(host, port)`` to
    listen on, raw TCP spliced to a balanced endpoint. ``None`` for ``outbound``/``inbound``
    disables that listener; port 0 picks a free port (see ``ProxyAddresses``).
    ``reuse_port``: bind with SO_REUSEPORT so several processes (see ``serve_workers``) can each
    run a proxy on the same fixed ports, the kernel spreading new connections across them.
    ``clock``: where every deadline and latency reads the time (default: trio's clock of the
    run ``serve`` runs in, so tests can use ``MockClock``). ``descriptors``: the budget client and
    upstream sockets are counted in (default: this process's, keeping
    ``limits.reserved_descriptors`` for the rest of the agent; descriptors.py).
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
        have_epoll: bool = engine_mod.HAVE_EPOLL,  # False: as where there is none (tests)
        clock: Clock | None = None,
        descriptors: DescriptorBudget | None = None,
        mtls: MeshTls | None = None,
        outbound_listeners: Mapping[str, tuple[str, int]] | None = None,
        audit: Sink | None = None,
    ) -> None:
        if engine not in ("epoll", "tasks"):
            raise ValueError(f"engine must be 'epoll' or 'tasks', not {engine!r}")
        self.engine = engine
        self.have_epoll = have_epoll
        self.outbound_addr = outbound
        self.inbound_addr = inbound
        self.tcp_listeners = dict(tcp_listeners or {})
        self.outbound_listeners = dict(outbound_listeners or {})
        self.reuse_port = reuse_port
        self.connector = connector
        self.rng = rng or random.Random()
        self.limits = limits = limits or ProxyLimits()
        self.metrics = metrics = metrics or ProxyMetrics()
        self.descriptors = budget = descriptors or DescriptorBudget.for_process(
            limits.reserved_descriptors
        )
        metrics.limits = limits
        metrics.budget = budget
        self.clock: Clock = clock or TrioClock()
        self.addresses: ProxyAddresses | None = None
        self.directory = Directory(table or RouteTable())
        self.directory.update_local_services(local_services or {})
        self.deadlines = Deadlines(self.clock)
        self.accounting = Accounting(metrics)
        self.upstreams = Upstreams(limits, metrics, self.deadlines, connector, budget)
        self.downstreams = Downstreams(limits, metrics, self.deadlines, budget)
        # Per-request records for the access log, taps and spans (request_log.py): one for
        # every path, so each request is seen once.
        self.requests = self.downstreams.requests = RequestLog(self.clock)
        self.tunnels = Tunnels(limits, self.clock, self.upstreams, self.downstreams)
        self.relay = Relay(limits, self.clock, self.upstreams, self.tunnels)
        self.forwarder = Forwarder(
            self.directory,
            self.upstreams,
            self.downstreams,
            self.relay,
            self.tunnels,
            self.accounting,
            self.rng,
            self.clock,
        )
        self.fast = FastPath(self.directory, self.upstreams, self.accounting, self.rng, self.clock)
        self.fast.requests = self.requests
        self.tasks = TaskLoop(limits, self.clock, self.downstreams, self.fast, self.forwarder)
        self.tcp = TcpProxy(
            self.directory, self.upstreams, self.tunnels, self.accounting, self.deadlines, self.rng
        )
        self.audit = Audit(audit, clock=self.clock)
        self.forwarder.audit = self.audit
        # HTTP/2 and gRPC: the same decisions, streams instead of connections (h2*.py), built
        # at the first HTTP/2 connection (h2side.py).
        self.h2 = H2Side(self.build_h2)
        self.tasks.h2 = self.h2
        self.mtls = mtls
        self.watch: PeerWatch | None = None
        self.handshakes: Handshakes | None = None
        if mtls is not None:
            self.watch = PeerWatch(mtls.authority, metrics)
            self.handshakes = Handshakes(
                mtls, self.watch, self.downstreams, self.deadlines, metrics, self.serve_accepted,
                self.audit,
            )  # fmt: skip
            self.upstreams.handshakes = self.handshakes
            self.handshakes.serve_h2 = self.h2.serve
            metrics.plaintext_enabled = int(mtls.plaintext_inbound)
        self.event_engine: Engine | None = None  # while ``serve`` runs the engine
        # Memory back to the kernel after a connection storm (memory.py).
        self.trimmer = Trimmer(self.compact_tables)

    # -- control ---------------------------------------------------------------------------

    def update_table(self, table: RouteTable) -> None:
        """Atomic swap: requests already running keep the view they started with."""
        self.directory.update_table(table)

    @property
    def table(self) -> RouteTable:
        return self.directory.view.table

    def update_local_services(self, services: Mapping[str, Sequence[tuple[str, int]]]) -> None:
        self.directory.update_local_services(services)

    def update_policies(self, policies: Policies) -> None:
        """Who may call the local services, from the next request on (authz.py)."""
        self.directory.policies = policies

    def update_credentials(self, credentials: MeshCredentials) -> None:
        """New identities (renewal, reload, roots): new handshakes use them; pooled connections
        made with the old ones are not reused (open exchanges finish on them)."""
        assert self.mtls is not None and self.watch is not None
        self.mtls.update(credentials)
        try:
            now_ns = self.clock.now_ns()
        except RuntimeError:
            return  # not serving: no connection to retire
        self.watch.retire_all(now_ns)

    async def serve_accepted(self, conn: Downstream) -> None:
        """An inbound connection whose handshake and caller passed: the engine serves it (or,
        without one, this task does)."""
        adopt = self.tasks.adopt
        if adopt is None:
            await self.tasks.serve(conn)
            return
        try:
            adopt(conn)
        except (OSError, ValueError):
            self.downstreams.close(conn)

    @property
    def fast_served(self) -> int:
        """Exchanges the fast path completed by itself (tests use it to see which path ran)."""
        return self.fast.served

    def endpoint_states(self) -> dict[tuple[str, str, int], dict[str, float]]:
        """For ``gossipmesh services``: in-flight, latency estimate and ejection per endpoint."""
        try:
            now_ns = self.clock.now_ns()
        except RuntimeError:
            now_ns = 0  # trio's clock outside a trio run: nothing is being served
        return {
            key: {
                "inflight": st.inflight,
                "ewma_ms": st.ewma_ns / 1e6,
                "ejected": float(st.ejected_until_ns > now_ns),
                "down": float(st.down_until_ns > now_ns),
                "ejected_until_ms": st.ejected_until_ns // NS_PER_MS,
                "times_ejected": st.times_ejected,
                "consecutive_failures": st.consecutive_failures,
            }
            for key, st in self.directory.states.items()
        }

    # -- serving ---------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[ProxyAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if isinstance(self.clock, TrioClock):
            self.clock.bind()  # this run's clock
        listeners: list[tuple[socket.socket, str, str]] = []
        try:
            out_addr = in_addr = None
            if self.outbound_addr is not None:
                s = listen_socket(*self.outbound_addr, self.reuse_port)
                listeners.append((s, OUTBOUND, ""))
                out_addr = s.getsockname()[:2]
            services_bound: dict[str, tuple[str, int]] = {}
            for service, (host, port) in self.outbound_listeners.items():
                s = listen_socket(host, port, self.reuse_port)
                listeners.append((s, OUTBOUND, service))  # its requests present ``service``
                services_bound[service] = s.getsockname()[:2]
            if self.inbound_addr is not None:
                s = listen_socket(*self.inbound_addr, self.reuse_port)
                listeners.append((s, INBOUND, ""))
                in_addr = s.getsockname()[:2]
            tcp_bound: dict[str, tuple[str, int]] = {}
            for service, (host, port) in self.tcp_listeners.items():
                s = listen_socket(host, port, self.reuse_port)
                listeners.append((s, TCP, service))
                tcp_bound[service] = s.getsockname()[:2]
            self.addresses = ProxyAddresses(out_addr, in_addr, tcp_bound, services_bound)
            async with trio.open_nursery() as nursery:
                self.h2.attach(nursery)
                nursery.start_soon(self.watchdog)
                eng = None
                if self.engine == "epoll" and self.have_epoll:
                    eng = self.event_engine = Engine(
                        self.fast,
                        self.forwarder,
                        self.downstreams,
                        self.upstreams,
                        self.tasks,
                        nursery,
                    )
                    self.tasks.adopt = eng.adopt
                    nursery.start_soon(eng.run)
                for lsock, direction, service in listeners:
                    if eng is not None and direction != TCP:
                        hs = self.handshakes
                        greet = hs.greet if hs is not None and direction == INBOUND else None
                        eng.add_listener(lsock, direction, service, greet)
                    else:
                        nursery.start_soon(self.accept_loop, lsock, direction, service, nursery)
                task_status.started(self.addresses)
        finally:
            self.event_engine = None
            self.tasks.adopt = None
            for lsock, _, _ in listeners:
                trio.lowlevel.notify_closing(lsock)
                lsock.close()
            self.upstreams.drain()
            self.h2.detach()

    def build_h2(self) -> tuple[H2Front, H2Pool]:
        """The HTTP/2 front and its upstream pool, wired to this proxy's parts; ``H2Side``
        calls it once, at the first HTTP/2 connection (importing the h2 library then)."""
        from gossipmesh.proxy.h2exchange import H2Exchange
        from gossipmesh.proxy.h2pool import H2Pool
        from gossipmesh.proxy.h2serve import H2Front

        limits, metrics = self.limits, self.metrics
        pool = H2Pool(self.upstreams, limits, metrics, self.clock)
        h2x = H2Exchange(
            self.directory, pool, self.accounting, self.rng, self.clock, limits, self.audit,
            self.downstreams.requests,
        )  # fmt: skip
        return H2Front(h2x, self.downstreams, limits, metrics, self.clock), pool

    async def watchdog(self) -> None:
        """Deadlines every tick; idle pooled connections past their expiry, and memory after a
        connection storm (memory.py), every sweep."""
        limits = self.limits
        sweep_ns = limits.pool_sweep_ms * NS_PER_MS
        next_sweep_ns = self.clock.now_ns() + sweep_ns

        open_now = self.metrics.open_connections
        trimmer = self.trimmer

        watch = self.watch

        def tick(now_ns: int) -> None:
            nonlocal next_sweep_ns
            if now_ns >= next_sweep_ns:
                next_sweep_ns = now_ns + sweep_ns
                self.upstreams.sweep(now_ns)
                trimmer.tick(sum(open_now.values()), now_ns)
                if watch is not None:
                    watch.sweep()  # revoked and expired peers lose their connections

        await self.deadlines.watch(limits.watchdog_tick_ms, tick)

    def compact_tables(self) -> None:
        """Shrink the tables that held every connection of a storm (memory.py)."""
        compact(self.deadlines.timed)
        eng = self.event_engine
        if eng is not None:
            compact(eng.handlers)
            compact(eng.conns)

    async def accept_loop(
        self, lsock: socket.socket, direction: str, service: str, nursery: trio.Nursery
    ) -> None:
        """Accept on ``lsock`` and start a task per connection (the task path, TCP listeners)."""
        while True:
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                await wait_readable(lsock)
                continue
            except OSError as e:
                # EMFILE and friends: back off instead of spinning; counted in the log.
                log.warning("accept on %s failed: %s", direction, e)
                await trio.sleep(0.05)
                continue
            refused = self.downstreams.admit(f"tcp:{service}" if direction == TCP else direction)
            if refused is not None:
                http = direction == OUTBOUND or (direction == INBOUND and self.mtls is None)
                Downstreams.refuse(sock, refused, http=http)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if direction == TCP:
                nursery.start_soon(self.tcp.serve, sock, addr, service)
            elif direction == INBOUND and self.handshakes is not None:
                nursery.start_soon(self.handshakes.accept, sock, addr)
            else:
                conn = self.downstreams.open(sock, addr, direction)
                conn.caller = service
                nursery.start_soon(self.tasks.serve, conn)


__all__ = [
    "Connector",
    "DescriptorBudget",
    "Proxy",
    "ProxyAddresses",
    "ProxyLimits",
    "TcpConnector",
    "serve_workers",
]
