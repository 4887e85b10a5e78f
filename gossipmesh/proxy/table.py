"""The frozen routing snapshot the proxy forwards with: endpoints, service settings, routes.

Theory of operation
-------------------
The agent owns membership, health and the replicated config; the proxy owns none of it. Each time
any of those change, the agent calls ``build_route_table(services, routes, endpoints)`` (a pure
function of the schema dataclasses and the endpoint sets it has already filtered to "alive in SWIM
and passing health checks") and hands the result to ``Proxy.update_table``. The table is immutable,
so a request that started on the old table finishes on it while new requests see the new one; the
swap is one attribute assignment.

Everything the request path would otherwise compute per request is computed here once per table:
the settings of each service flattened into one record (no nested attribute chasing), the compiled
routes sorted by precedence with a per-host index, and one ``Cluster`` per (service, tag subset)
named by any destination, holding the matching endpoints and, for ``ring_hash`` services, the
hash ring. Outlier ejection is *not* in the table: it is proxy-local, fast-changing state keyed by
``Endpoint.key`` so it survives table swaps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gossipmesh.config.schema import RouteConfig, ServiceConfig
from gossipmesh.proxy.balancer import Ring, build_ring
from gossipmesh.proxy.router import CompiledRoute, RouteIndex, build_route_index, compile_route

ClusterKey = tuple[str, tuple[str, ...]]  # (service, sorted tags); () means every instance


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service as the proxy sees it.

    ``inbound`` is the ``(host, port)`` of the inbound listener of the agent that hosts the
    instance; requests then travel agent-to-agent and the remote agent forwards to
    ``address:port``. ``None`` means connect to ``address:port`` directly (a local instance).
    """

    node: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    weight: int = 1
    inbound: tuple[str, int] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.node, self.address, self.port)

    @property
    def dest(self) -> str:
        """The ``x-gossipmesh-dest`` value naming this instance to its agent's inbound side."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``service/NAME`` flattened for the hot path (see docs/CONFIG.md for each field)."""

    name: str
    protocol: str = "http"
    policy: str = "least_request"
    hash_header: str = "x-request-id"
    connect_ms: int = 1000
    request_ms: int = 15000
    per_try_ms: int = 5000
    idle_ms: int = 60000
    retry_attempts: int = 2
    retry_on_status: frozenset[int] = frozenset({502, 503, 504})
    # gRPC calls answered trailers-only with one of these grpc-status codes are retried
    # (``retry.on_grpc_status``; default 14: UNAVAILABLE), within the same attempts and budget.
    retry_on_grpc_status: frozenset[int] = frozenset({14})
    retry_on_connect_failure: bool = True
    budget_percent: int = 20
    budget_min_per_s: int = 10
    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024
    consecutive_failures: int = 5
    base_ejection_ms: int = 30000
    max_ejection_ms: int = 300000
    max_ejected_percent: int = 50

    @classmethod
    def from_config(cls, cfg: ServiceConfig) -> ServiceSettings:
        t, r, cb, od = cfg.timeouts, cfg.retry, cfg.circuit_breaker, cfg.outlier_detection
        return cls(
            name=cfg.name,
            protocol=cfg.protocol,
            policy=cfg.load_balancer.policy,
            hash_header=cfg.load_balancer.hash_header.lower(),
            connect_ms=t.connect_ms,
            request_ms=t.request_ms,
            per_try_ms=t.per_try_ms,
            idle_ms=t.idle_ms,
            retry_attempts=r.attempts,
            retry_on_status=frozenset(r.on_status),
            retry_on_grpc_status=frozenset(r.on_grpc_status),
            retry_on_connect_failure=r.on_connect_failure,
            budget_percent=r.budget_percent,
            budget_min_per_s=r.budget_min_per_s,
            max_connections=cb.max_connections,
            max_pending=cb.max_pending,
            max_requests=cb.max_requests,
            consecutive_failures=od.consecutive_failures,
            base_ejection_ms=od.base_ejection_ms,
            max_ejection_ms=od.max_ejection_ms,
            max_ejected_percent=od.max_ejected_percent,
        )


@dataclass(frozen=True, slots=True)
class Cluster:
    """The endpoints one destination may reach: a service, optionally narrowed to a tag subset."""

    service: str
    tags: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    settings: ServiceSettings
    # Present only for ring_hash services: built once per table, not per request.
    ring: Ring | None = None
    # Endpoint weights differ: the balancers then draw by weight instead of uniformly.
    weighted: bool = False

    @property
    def key(self) -> ClusterKey:
        return (self.service, self.tags)


@dataclass(frozen=True, slots=True)
class RouteTable:
    services: Mapping[str, ServiceSettings] = field(default_factory=dict)
    clusters: Mapping[ClusterKey, Cluster] = field(default_factory=dict)
    routes: tuple[CompiledRoute, ...] = ()
    index: RouteIndex = field(default_factory=lambda: build_route_index(()))
    version: int = 0

    def cluster_for_service(self, service: str) -> Cluster | None:
        return self.clusters.get((service, ()))


def _make_cluster(
    service: str, tags: tuple[str, ...], eps: Sequence[Endpoint], settings: ServiceSettings
) -> Cluster:
    tagset = set(tags)
    chosen = tuple(
        sorted((e for e in eps if tagset.issubset(e.tags) and e.weight > 0), key=lambda e: e.key)
    )
    ring = build_ring([e.key for e in chosen], [e.weight for e in chosen])
    weighted = len({e.weight for e in chosen}) > 1
    return Cluster(
        service,
        tags,
        chosen,
        settings,
        ring if settings.policy == "ring_hash" else None,
        weighted,
    )


def _skip_empty_destinations(
    route: CompiledRoute, clusters: Mapping[ClusterKey, Cluster]
) -> CompiledRoute:
    """A destination with no endpoint left gets weight 0 while another still has some.

    Without this a 90/10 canary whose v1 instances all died would answer 503 to 90 % of requests
    although v2 could serve them; an operator's split is a preference among working backends, not
    a promise to fail. The table is rebuilt whenever endpoints change, so the split comes back by
    itself. When every destination is empty the weights stay, and the request gets the honest 503.
    """
    if len(route.clusters) < 2:
        return route
    empty = [not clusters[key].endpoints for key in route.clusters]
    if not any(empty) or all(empty):
        return route
    cum: list[int] = []
    total, previous = 0, 0
    for is_empty, upto in zip(empty, route.cum_weights, strict=True):
        weight, previous = upto - previous, upto
        total += 0 if is_empty else weight
        cum.append(total)
    if total <= 0:
        return route
    return dataclasses.replace(route, cum_weights=tuple(cum), total_weight=total)


def build_route_table(
    services: Mapping[str, ServiceConfig],
    routes: Mapping[str, RouteConfig],
    endpoints: Mapping[str, Sequence[Endpoint]],
    version: int = 0,
    wall_ms: int | None = None,
) -> RouteTable:
    """Pure: the snapshot for these settings, routes and (already health-filtered) endpoints.

    A service with endpoints but no ``service/NAME`` entity gets the documented defaults; a route
    naming a service nobody runs still routes (and answers 503 "no healthy endpoint").
    """
    settings: dict[str, ServiceSettings] = {
        name: ServiceSettings.from_config(cfg) for name, cfg in services.items()
    }
    for name in endpoints:
        settings.setdefault(name, ServiceSettings(name=name))
    compiled = [compile_route(r, wall_ms) for r in routes.values()]
    for cr in compiled:
        for svc in cr.services:
            settings.setdefault(svc, ServiceSettings(name=svc))
    clusters: dict[ClusterKey, Cluster] = {}
    for name, s in settings.items():
        clusters[(name, ())] = _make_cluster(name, (), endpoints.get(name, ()), s)
    for cr in compiled:
        for key in cr.clusters:
            if key not in clusters:
                svc, tags = key
                clusters[key] = _make_cluster(svc, tags, endpoints.get(svc, ()), settings[svc])
    compiled = [_skip_empty_destinations(cr, clusters) for cr in compiled]
    ordered = tuple(sorted(compiled, key=lambda r: r.sort_key))
    return RouteTable(
        services=settings,
        clusters=clusters,
        routes=ordered,
        index=build_route_index(ordered),
        version=version,
    )
