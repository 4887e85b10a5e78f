"""The sidecar: health checks, the node record, the catalog and the proxy, wired into one agent.

Theory of operation
-------------------
``Sidecar`` is composition, not logic. The pure pieces already exist: ``HealthChecker`` probes the
local instances, ``RecordSync`` gets every node's signed record everywhere, ``build_catalog`` joins
members × records × config into endpoints, ``route_table`` freezes them for the ``Proxy``. This
module decides *when* each runs:

- A health flip (checker callback) makes the local record due: it is republished (signed under a
  new version, metadata updated, gossiped), so other agents stop routing to a failing instance
  within a gossip round or two.
- A member event, a record change (ours included) or a config change makes the catalog due: it
  is rebuilt from the current member list, record table and config items, and the proxy's table
  is swapped atomically (requests in flight finish on the old table).

Both are *marks*, not actions: callbacks arrive in the agent's owner task or the checker's tasks,
where nothing may block, so they only set a flag and wake one worker task. The worker waits
``DEBOUNCE_S`` after the first mark before acting, so a burst (a partition healing: dozens of
member events and records at once) costs one rebuild, not dozens. Publishing goes first so the
rebuild that follows already sees our own new record.

mTLS and authorization (issue 12; docs/SECURITY.md): ``Workloads`` issues and renews a
certificate per local service under the node key and hands them to the proxy's ``MeshTls``;
``MeshAuthority`` judges the certificates peers present against ``agent.identity.trust`` and the
catalog's "node N hosts service S" facts, which every rebuild refreshes, together with the
policies (``Policies`` from ``policy/`` entities and each ``service/`` ``default_policy``).

Inbound requests are forwarded only to this node's own instances (``update_local_services``),
all of them regardless of health: the caller's agent already chose the endpoint from the catalog,
and refusing a request the checker has not yet caught up with would only turn a 200 into a 502.

The config document arrives through a small protocol (``ConfigSource``: ``items(prefix)`` and
``add_change_listener``) so this module does not depend on the replica's implementation. With no
source, there are no routes and no ``service/`` settings: ``Host`` names the service and the
documented defaults apply.

With ``dataplane = "haproxy" | "nginx"`` the native proxy's listeners are not started: an
``ExternalPlane`` (gossipmesh/dataplane/) runs that proxy on the same outbound and inbound
addresses, is given every rebuilt table instead, adds its counters to ``/metrics`` and a
``dataplane`` section to ``/v1/health``, and is stopped with the sidecar.

With ``proxy_workers`` N > 1 the proxy also runs in N-1 worker processes on the same addresses
(SO_REUSEPORT; ``WorkerPool``, agent/worker_pool.py): every rebuild and renewal is passed on to
them, and ``/metrics``, ``/v1/stats`` and ``/v1/services`` combine every process's counters.

Admin routes: ``GET /v1/services`` (the catalog, with each endpoint's ejection state from the
proxy) and ``GET /metrics`` (Prometheus text: the proxy's counters plus agent gauges, all read from
plain structures at scrape time).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from gossipmesh.agent.catalog import Catalog, TableInputs, build_catalog, next_shift_ms
from gossipmesh.agent.health import HealthChecker, Status, instance_key, record_health
from gossipmesh.agent.http import JSONResponse, Request, Response, StreamResponse
from gossipmesh.agent.peer_authority import MeshAuthority, wall_ms
from gossipmesh.agent.records_sync import RecordSync
from gossipmesh.agent.request_streams import RequestStreams
from gossipmesh.agent.shift_status import install_shift_status
from gossipmesh.agent.sidecar_config import SidecarSettings
from gossipmesh.agent.sidecar_metrics import AgentCollector
from gossipmesh.agent.traffic import install_traffic_stats
from gossipmesh.agent.workloads import Workloads
from gossipmesh.buildinfo import current_build, describe
from gossipmesh.crdt.records import RecordBody, ServiceInstance
from gossipmesh.errors import DataplaneStartError
from gossipmesh.metric_export import Registry
from gossipmesh.proxy.metrics import ProxyMetrics, render_metrics
from gossipmesh.proxy.mtls import MeshCredentials, MeshTls
from gossipmesh.proxy.server import Proxy, ProxyAddresses
from gossipmesh.proxy.table import RouteTable

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent
    from gossipmesh.agent.worker_pool import WorkerPool
    from gossipmesh.dataplane import ExternalPlane

DEBOUNCE_S = 0.05  # at most one republish and one rebuild per 50 ms, however many marks
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_WILDCARD = ("0.0.0.0", "::", "")


class ConfigSource(Protocol):
    """What the sidecar needs from the replicated config document (the config replica's shape)."""

    def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]: ...

    def add_change_listener(self, fn: Callable[[frozenset[str]], None]) -> None: ...


class Sidecar:
    """Construct before ``agent.run`` (listeners must be in place before the first packet), then
    ``await nursery.start(sidecar.run)`` once the agent runs."""

    def __init__(
        self,
        agent: Agent,
        settings: SidecarSettings,
        config: ConfigSource | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.name = agent.settings.name
        self.rng = rng if rng is not None else random.Random(agent.rng.getrandbits(64))
        self.records = RecordSync(agent, self._records_changed)
        self.checker = HealthChecker(settings.services, self._health_changed, self.rng)
        self.authority = MeshAuthority(lambda: agent.identity)
        self.workloads: Workloads | None = None
        if settings.enabled and settings.dataplane == "native":
            self.workloads = Workloads(
                lambda: agent.identity,
                [svc.name for svc in settings.services],
                settings.workload_lifetime_ms,
                wall_ms,
                self._credentials_changed,
                agent.log.info,
            )
        self.proxy: Proxy | None = None
        self.external: ExternalPlane | None = None
        self.workers: WorkerPool | None = None  # proxy_workers > 1: the other processes
        self.addresses: ProxyAddresses | None = None
        self.catalog = Catalog()
        self.table_inputs: TableInputs | None = None  # the last rebuild's, for proxy workers
        self.rebuilds = 0
        self.publishes = 0
        # Scheduled shifts (config/shift.py) are evaluated against this wall clock, in ms.
        self.wall_ms: Callable[[], int] = wall_ms
        self.next_shift_ms: int | None = None  # the next step of any route's shift
        self.shift_rebuilds = 0
        self.table_wall_ms: int | None = None  # the time the current table's shifts were read
        self._config: ConfigSource | None = None
        self._publish_due = True
        self._rebuild_due = True
        self._wake: trio.Event | None = None
        self._last_body: RecordBody | None = None
        self.members_by_state: dict[str, int] = {}
        self.registry = Registry()
        self.registry.register(AgentCollector(self))
        if config is not None:
            self.attach_config(config)
        agent.router.add("GET", "/v1/services", self._services_route)
        agent.router.add("GET", "/metrics", self._metrics_route)
        agent.health_extensions.append(self._health_section)
        install_shift_status(self)
        self.traffic = install_traffic_stats(self)
        # Access log, taps, spans (agent/request_streams.py): started with the proxy.
        self.request_streams = RequestStreams(self)

    def attach_config(self, source: ConfigSource) -> None:
        """Route with ``source``'s ``service/`` and ``route/`` entities from now on."""
        self._config = source
        source.add_change_listener(lambda keys: self._mark(rebuild=True))
        self._mark(rebuild=True)

    # ---- marks (sync; called from the owner task, checker tasks, config listeners) ----------

    def _mark(self, *, publish: bool = False, rebuild: bool = False) -> None:
        self._publish_due |= publish
        self._rebuild_due |= rebuild
        if self._wake is not None:
            self._wake.set()

    def _health_changed(self, key: str, status: Status) -> None:
        self.agent.log.info("health_change", instance=key, status=status)
        self._mark(publish=True)

    def _records_changed(self) -> None:
        self._mark(rebuild=True)

    def _credentials_changed(self, credentials: MeshCredentials) -> None:
        if self.proxy is not None and self.proxy.mtls is not None:
            self.proxy.update_credentials(credentials)
        if self.workers is not None:
            self.workers.sync()

    # ---- run --------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Sidecar] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from gossipmesh.agent.transport import AgentStartError

        self._wake = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.checker.run)
            if self.settings.enabled and self.settings.dataplane != "native":
                await self._start_external(nursery)
            elif self.settings.enabled:
                self.proxy = self._make_proxy()
                try:
                    self.addresses = await nursery.start(self.proxy.serve)
                except OSError as exc:
                    raise AgentStartError(
                        f"cannot bind a proxy listener: {exc.strerror or exc}"
                    ) from exc
                self.agent.log.info(
                    "proxy_start",
                    outbound=_fmt(self.addresses.outbound),
                    inbound=_fmt(self.addresses.inbound),
                    tcp={s: _fmt(a) for s, a in self.addresses.tcp.items()},
                    outbound_services={s: _fmt(a) for s, a in self.addresses.services.items()},
                    mtls=True,
                    build=describe(current_build()),  # mypyc or pure; says if mixed or stale
                )
                if self.settings.inbound_plaintext:
                    self.agent.log.warn(
                        "inbound_plaintext",
                        detail="MIGRATION ONLY: the inbound listener also takes plaintext from "
                        "unauthenticated callers (no identity, policies see an anonymous caller), "
                        "and peers that do not speak TLS are reached in plaintext; remove "
                        "inbound_plaintext once every agent runs with mTLS (docs/SECURITY.md)",
                    )
                if self.workloads is not None:
                    nursery.start_soon(self.workloads.run)
            if self.settings.enabled:
                await self.request_streams.start(nursery, self.proxy)
            # Certificates of members the agent met before this task started (the listener was
            # already registered, but be sure: a missed one would park records until it spoke).
            for m in await self.agent.members():
                if m.name != self.name and m.proof is not None:
                    self.records.learn(m.name, m.meta, m.address, m.proof.cert)
            await self._step()
            if self.proxy is not None and self.settings.proxy_workers > 1:
                from gossipmesh.agent.worker_pool import WorkerPool

                pool = WorkerPool(self, self.settings.proxy_workers)
                self.workers = await nursery.start(pool.run)
            await nursery.start(self.records.run)
            nursery.start_soon(self._worker)
            nursery.start_soon(self.traffic.run)
            task_status.started(self)

    async def _start_external(self, nursery: trio.Nursery) -> None:
        from gossipmesh.agent.transport import AgentStartError

        # Only --dataplane haproxy|nginx loads gossipmesh/dataplane/ (issue 19: idle RSS).
        from gossipmesh.dataplane import PlaneSettings, find_binary, open_plane
        from gossipmesh.dataplane.model import local_instances

        s = self.settings
        outbound = _concrete(s.outbound.as_tuple())
        inbound = _concrete(s.inbound_for(self.agent.settings.bind.host).as_tuple())
        local: dict[str, list[tuple[str, int]]] = {}
        for svc in s.services:
            local.setdefault(svc.name, []).append((svc.address, svc.port))
        try:
            plane = open_plane(
                PlaneSettings(s.dataplane, find_binary(s.dataplane), outbound, inbound,
                              local_instances(local), self.agent.settings.data_dir),
                self.agent.log, self.agent.counters,
            )  # fmt: skip
            self.external = await nursery.start(plane.run)
        except DataplaneStartError as exc:
            raise AgentStartError(str(exc)) from exc
        self.addresses = ProxyAddresses(outbound, inbound)
        self.agent.log.info("proxy_start", dataplane=s.dataplane, outbound=_fmt(outbound),
                            inbound=_fmt(inbound), mtls=False)  # fmt: skip
        self.agent.log.warn(
            "inbound_plaintext",
            detail=f"the {s.dataplane} data plane carries the mesh hop in plaintext: no mTLS, no "
            "workload identities, no policies enforced at the inbound (docs/SECURITY.md)",
        )

    def _health_section(self, health: dict[str, Any]) -> None:
        if self.external is None:
            return
        section = health["dataplane"] = self.external.status()
        problem = None
        if not section["running"]:
            problem = f"the {section['engine']} data plane is not running"
        elif section["last_error"]:
            problem = f"{section['engine']} refused the last change: {section['last_error']}"
        if problem is not None:
            health.setdefault("reasons", []).append(problem[:500])
            if health.get("status") == "ok":
                health["status"] = "degraded"

    def _make_proxy(self) -> Proxy:
        s = self.settings
        local: dict[str, list[tuple[str, int]]] = {}
        for svc in s.services:
            local.setdefault(svc.name, []).append((svc.address, svc.port))
        assert self.workloads is not None
        mtls = MeshTls(
            self.workloads.current.credentials,
            self.authority,
            plaintext_inbound=s.inbound_plaintext,
        )
        log = self.agent.log
        many = s.proxy_workers > 1
        return Proxy(
            RouteTable(),
            outbound=s.outbound.as_tuple(),
            inbound=s.inbound_for(self.agent.settings.bind.host).as_tuple(),
            local_services=local,
            tcp_listeners={t.service: (t.address, t.port) for t in s.listeners},
            rng=random.Random(self.rng.getrandbits(64)),
            mtls=mtls,
            outbound_listeners={n: a.as_tuple() for n, a in s.outbound_services().items()},
            audit=lambda event, fields: log.warn(event, **fields),
            reuse_port=many,  # the workers bind the same addresses (agent/worker_pool.py)
            metrics=ProxyMetrics(worker="0") if many else None,
        )

    async def _worker(self) -> None:
        assert self._wake is not None
        while True:
            due = self.next_shift_ms
            if due is None:
                await self._wake.wait()
            else:
                # A scheduled shift's next step: rebuild the table then, with no write needed.
                with trio.move_on_after(max(0.0, (due - self.wall_ms()) / 1000)):
                    await self._wake.wait()
                if not self._wake.is_set():
                    self.shift_rebuilds += 1
                    self._mark(rebuild=True)
            # Let the burst finish: everything marked in the next DEBOUNCE_S rides this pass.
            await trio.sleep(DEBOUNCE_S)
            self._wake = trio.Event()
            await self._step()

    async def _step(self) -> None:
        if self._publish_due:
            self._publish_due = False
            await self._publish()
        if self._rebuild_due:
            self._rebuild_due = False
            await self._rebuild()

    def _advertised_inbound(self) -> tuple[str, int] | None:
        if self.addresses is None or self.addresses.inbound is None:
            return None
        host, port = self.addresses.inbound
        if host in _WILDCARD and self.agent.address is not None:
            host = self.agent.address.host  # peers must dial something concrete
        return (host, port)

    def local_body(self) -> RecordBody:
        statuses = self.checker.statuses()
        return RecordBody(
            services=tuple(
                ServiceInstance(
                    s.name,
                    s.address,
                    s.port,
                    s.tags,
                    s.weight,
                    record_health(statuses.get(instance_key(s), "unknown")),
                )
                for s in self.settings.services
            ),
            proxy=self._advertised_inbound(),
        )

    async def _publish(self) -> None:
        body = self.local_body()
        if body == self._last_body:
            return  # e.g. flapped and back within one debounce window: nothing to say
        outbound = self.addresses.outbound if self.addresses is not None else None
        await self.records.publish(body, inbound=body.proxy, outbound=outbound)
        self._last_body = body
        self.publishes += 1

    async def _rebuild(self) -> None:
        members = await self.agent.members()
        items: list[tuple[str, Any]] = list(self._config.items()) if self._config else []
        # With the native proxy, a neighbour's call also meets the destination's inbound policies.
        via_inbound = self.proxy is not None
        catalog = build_catalog(members, self.records.table.records(), self.name, items,
                                local_via_inbound=via_inbound)  # fmt: skip
        # A gauge: how many registered instances the services' config refuses right now.
        self.agent.counters["catalog.refused_instances"] = len(catalog.refused)
        self.catalog = catalog
        self.rebuilds += 1
        hosts: dict[str, set[str]] = {}
        for inst in catalog.instances:
            if inst.refused is None:
                hosts.setdefault(inst.node, set()).add(inst.service)
        self.authority.update_hosts({n: frozenset(v) for n, v in hosts.items()})
        counts: dict[str, int] = {}
        for m in members:
            counts[m.state.value] = counts.get(m.state.value, 0) + 1
        self.members_by_state = counts
        now_ms = self.table_wall_ms = self.wall_ms()
        self.next_shift_ms = next_shift_ms(catalog, now_ms)
        inputs = self.table_inputs = TableInputs(catalog, self.rebuilds, now_ms)
        if self.proxy is not None:
            self.proxy.update_table(inputs.table())
            self.proxy.update_policies(inputs.policies())
        if self.workers is not None:
            self.workers.sync()
        if self.external is not None:
            self.external.update(inputs.table(), catalog.routes.values())

    # ---- admin routes -----------------------------------------------------------------------

    def proxy_metrics(self) -> ProxyMetrics | None:
        """The proxy's counters; with workers, every process's requests summed (traffic.py)."""
        if self.proxy is None or self.workers is None:
            return self.proxy.metrics if self.proxy is not None else None
        from gossipmesh.agent.worker_metrics import combined

        return combined([self.proxy.metrics, *self.workers.metrics()])

    def services_view(self) -> list[dict[str, Any]]:
        states = self.proxy.endpoint_states() if self.proxy is not None else {}
        if self.workers is not None:
            from gossipmesh.agent.worker_metrics import merge_states

            states = merge_states([states, *self.workers.endpoint_states()])
        rows = []
        for inst in self.catalog.instances:
            st = states.get((inst.node, inst.address, inst.port))
            rows.append(
                {
                    "service": inst.service,
                    "node": inst.node,
                    "address": inst.address,
                    "port": inst.port,
                    "tags": list(inst.tags),
                    "weight": inst.weight,
                    "health": inst.current_health,
                    "reported_health": inst.health,
                    "member_state": inst.member_state,
                    "ejected": bool(st and st.get("ejected")),
                    "down": bool(st and st.get("down")),
                    "routable": inst.routable,
                    "refused": inst.refused,
                    "inbound": _fmt(inst.inbound),
                }
            )
        return rows

    async def _services_route(self, req: Request) -> Response:
        return JSONResponse(self.services_view())

    async def _metrics_route(self, req: Request) -> Response:
        members = await self.agent.members()
        counts: dict[str, int] = {}
        for m in members:
            counts[m.state.value] = counts.get(m.state.value, 0) + 1
        self.members_by_state = counts
        body = self.registry.render()
        if self.workers is not None:
            from gossipmesh.agent.worker_metrics import render_all

            await self.workers.refresh()  # every worker's counters as of now (bounded wait)
            assert self.proxy is not None
            body = render_all([self.proxy.metrics, *self.workers.metrics()]) + body
        elif self.proxy is not None:
            body = render_metrics(self.proxy.metrics) + body
        if self.external is not None:
            body = await self.external.metrics() + body

        async def one_chunk() -> Any:
            yield body

        return StreamResponse(one_chunk(), content_type=PROMETHEUS_CONTENT_TYPE)


def _concrete(addr: tuple[str, int]) -> tuple[str, int]:
    """``addr`` with port 0 replaced by a port free now (an external proxy cannot tell us which
    port it picked; the race with another process is the price of asking for port 0)."""
    host, port = addr
    if port != 0:
        return addr
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return (host, sock.getsockname()[1])


def _fmt(addr: tuple[str, int] | None) -> str | None:
    if addr is None:
        return None
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
