"""Route and destination: which cluster a request goes to, and everything known about it.

Theory of operation
-------------------
The first two steps of the decision pipeline (pipeline.py has the rest), shared by the event
engine's fast path and the task path:

1. **Route** (``route``): Host, path and method (and headers, when a route matches on them) pick
   a compiled route, which picks a destination cluster by weight; no route means the cluster of
   the service the Host names. While some endpoint may be ejected or down (``now_ns`` before the
   accounting's horizon), the draw is among destinations that have an available endpoint
   (``split_destination``): a split destination with none yields its share to the others and
   takes it back when one is available again; with none available anywhere, the operator's
   weights stand. When no route in the table matches on headers, (Host, path,
   method) decides alone and the answer is memoised per table (``View.route_cache``, bounded).
   On the inbound side, ``inbound_instance`` is the route: only an instance in this node's
   registry may be reached (never an open proxy).
2. **Destination** (``Dest``): the cluster's settings, endpoints, their mutable states, balancer,
   retry budget and breaker counters, and the precomputed mesh field lines and pool keys,
   gathered once per table (``View``) so a request does one dict lookup instead of a dozen.

``Directory`` owns what outlives a table: endpoint states (in-flight, latency, ejection), the
retry budget and breaker counters of each service, the local instances and who may call them
(``policies``, authz.py). Swapping the table
is one assignment; a request keeps the view it started with.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Container, Mapping, Sequence
from random import Random

from gossipmesh.proxy.authz import Policies
from gossipmesh.proxy.balancer import Balancer, EndpointState, available
from gossipmesh.proxy.heads import mesh_fields
from gossipmesh.proxy.resilience import BreakerCounters, RetryBudget
from gossipmesh.proxy.router import CompiledRoute, choose_destination, match, normalise_host
from gossipmesh.proxy.table import ClusterKey, Endpoint, RouteTable, ServiceSettings

LocalInstance = tuple[str, str, int]  # (service, address, port) of an instance on this node
Routed = tuple[CompiledRoute | None, ClusterKey]  # a route memo entry: route, or the Host's cluster
MAX_ROUTE_CACHE = 4096
MAX_LOCAL_DESTS = 4096


def dest_label(service: str, tags: Sequence[str]) -> str:
    """A destination as metrics and ``/v1/stats`` name it: the service, and its subset's tags
    after an ``@`` (``api@v2``, ``web@version=v2,zone=a``)."""
    return f"{service}@{','.join(tags)}" if tags else service


class Dest:
    """One destination cluster, as a request needs it."""

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
        "label",
        "nodes",
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
        tags: tuple[str, ...] = (),
    ) -> None:
        self.service = settings.name
        self.settings = settings
        self.endpoints = endpoints
        self.states = states
        self.balancer = balancer  # None: one local instance (the inbound hop does not retry)
        self.peers = peers  # every endpoint of the service: the outlier detector's ejection cap
        self.budget = budget
        self.breaker = breaker
        svc = settings.name.encode()
        # The mesh fields a hop to each endpoint adds (empty for a local instance).
        self.mesh_lines = tuple(
            b"" if ep.inbound is None else mesh_fields(ep.dest.encode(), svc) for ep in endpoints
        )
        self.host_line = b"host: " + endpoints[0].dest.encode() + b"\r\n" if endpoints else b""
        # Where a connection to each endpoint goes: the pool key (service, host, port).
        self.pool_keys = tuple(
            (settings.name, *(ep.inbound if ep.inbound is not None else (ep.address, ep.port)))
            for ep in endpoints
        )
        # The fast path picks and forwards inline; ring hash needs the request's hash key.
        self.fast = bool(endpoints) and (balancer is None or balancer.policy != "ring_hash")
        # Metric labels (metrics.py), built once per table: the destination (service and subset
        # tags, "api@v2") and each endpoint's node.
        self.label = dest_label(settings.name, tags)
        self.nodes = tuple(ep.node for ep in endpoints)


class View:
    """Per-table derived state: a ``Dest`` per cluster, and the routing memo."""

    __slots__ = ("table", "dests", "route_cache")

    def __init__(self, table: RouteTable, directory: Directory) -> None:
        self.table = table
        self.dests: dict[ClusterKey, Dest] = {}
        # (Host, path, method) -> Routed; only when no route matches on headers (then those
        # three decide alone).
        self.route_cache: dict[tuple[bytes, bytes, bytes], Routed] | None = (
            None if any(r.headers for r in table.routes) else {}
        )
        states_by_key = directory.states
        peers: dict[str, list[EndpointState]] = {}
        for key, cluster in table.clusters.items():
            sts = []
            for ep in cluster.endpoints:
                st = states_by_key.get(ep.key)
                if st is None:
                    st = states_by_key[ep.key] = EndpointState(ep.key, ep.weight)
                st.weight = max(1, ep.weight)
                sts.append(st)
            if key[1] == ():
                peers[key[0]] = sts
            s = cluster.settings
            balancer = Balancer(s.policy, [e.weight for e in cluster.endpoints], cluster.ring)
            budget = directory.budget(s)
            breaker = directory.breaker(cluster.service)
            self.dests[key] = Dest(s, cluster.endpoints, sts, balancer, (), budget, breaker, key[1])
        for key, d in self.dests.items():
            d.peers = peers.get(key[0], ())


class Directory:
    """What outlives a table: endpoint states, budgets and breakers per service, local instances."""

    __slots__ = ("states", "budgets", "breakers", "view", "local", "local_dests", "policies")

    def __init__(self, table: RouteTable) -> None:
        self.states: dict[tuple[str, str, int], EndpointState] = {}
        self.budgets: dict[str, RetryBudget] = {}
        self.breakers: dict[str, BreakerCounters] = {}
        self.local: dict[bytes, LocalInstance] = {}  # b"address:port" -> instance
        self.local_dests: dict[LocalInstance, Dest] = {}
        self.view = View(table, self)
        # Who may call the local services (authz.py), swapped whole on every config change.
        self.policies = Policies()

    def update_table(self, table: RouteTable) -> None:
        """Atomic swap: requests already running keep the view they started with."""
        self.view = View(table, self)
        self.local_dests = {}
        live = {ep.key for c in table.clusters.values() for ep in c.endpoints}
        for key in [k for k in self.states if k not in live]:
            if self.states[key].inflight == 0:
                del self.states[key]

    def update_local_services(self, services: Mapping[str, Sequence[tuple[str, int]]]) -> None:
        local: dict[bytes, LocalInstance] = {}
        for name, instances in services.items():
            for host, port in instances:
                local[f"{host}:{port}".encode()] = (name, host, port)
        self.local = local
        self.local_dests = {}

    def budget(self, s: ServiceSettings) -> RetryBudget:
        b = self.budgets.get(s.name)
        if b is None or b.percent != s.budget_percent or b.min_per_s != s.budget_min_per_s:
            b = self.budgets[s.name] = RetryBudget(s.budget_percent, s.budget_min_per_s)
        return b

    def breaker(self, service: str) -> BreakerCounters:
        b = self.breakers.get(service)
        if b is None:
            b = self.breakers[service] = BreakerCounters()
        return b

    def local_dest(self, local: LocalInstance) -> Dest:
        """The destination of one local instance (inbound side): no balancer, no retries, since
        the caller's outbound side owns retries."""
        d = self.local_dests.get(local)
        if d is not None:
            return d
        service, host, port = local
        settings = self.view.table.services.get(service) or ServiceSettings(name=service)
        ep = Endpoint("local", host, port)
        st = self.states.get(ep.key)
        if st is None:
            st = self.states[ep.key] = EndpointState(ep.key)
        d = Dest(settings, (ep,), [st], None, (), self.budget(settings), self.breaker(service))
        if len(self.local_dests) < MAX_LOCAL_DESTS:
            self.local_dests[local] = d
        return d


def _match(
    view: View, authority: bytes, path: bytes, method: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> Routed:
    host = normalise_host(authority.decode("latin-1"))
    index = view.table.index
    found = None
    if not index.empty:
        found = match(index, host, path.decode("latin-1"), method.decode("latin-1"), headers)
    return found, (host, ())


def dest_available(
    d: Dest | None, now_ns: int, tried: Container[tuple[str, str, int]] = ()
) -> bool:
    """``d`` has an endpoint neither ejected, down nor in ``tried`` (endpoint keys)."""
    if d is None:
        return False
    return any(available(st, now_ns) and st.key not in tried for st in d.states)


def split_destination(
    r: CompiledRoute,
    dests: Mapping[ClusterKey, Dest],
    rng: Random,
    now_ns: int,
    tried: Container[tuple[str, str, int]] = (),
) -> ClusterKey | None:
    """A weighted draw among ``r``'s destinations that have an available endpoint not in
    ``tried``; None if no destination has one."""
    keys: list[ClusterKey] = []
    cum: list[int] = []
    total = previous = 0
    for key, upto in zip(r.clusters, r.cum_weights, strict=True):
        weight, previous = upto - previous, upto
        if weight > 0 and dest_available(dests.get(key), now_ns, tried):
            total += weight
            keys.append(key)
            cum.append(total)
    if not keys:
        return None
    if len(keys) == 1:
        return keys[0]
    return keys[bisect_right(cum, rng.random() * total)]


def route(
    view: View,
    authority: bytes,
    target: bytes,
    method: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    rng: Random,
    now_ns: int = 0,
    horizon_ns: int = 0,
) -> tuple[CompiledRoute | None, ClusterKey]:
    """(route or None, destination cluster key) for a request to ``authority``/``target``.
    ``horizon_ns``: no endpoint is ejected or down from then on (``Accounting.horizon_ns``).

    The cluster may not exist (no endpoint, unknown service): the caller looks it up in
    ``view.dests``; the key's service is then the host, for the error it answers with."""
    q = target.find(b"?")
    path = target if q < 0 else target[:q]
    cache = view.route_cache
    if cache is None:
        hit = _match(view, authority, path, method, headers)
    else:
        ck = (authority, path, method)
        found = cache.get(ck)
        if found is None:
            found = _match(view, authority, path, method, ())
            if len(cache) >= MAX_ROUTE_CACHE:
                cache.clear()
            cache[ck] = found
        hit = found
    r, key = hit
    if r is None:
        return None, key
    clusters = r.clusters
    if len(clusters) == 1:
        return r, clusters[0]  # no split to draw (choose_destination's first case, inline)
    if now_ns < horizon_ns:
        found_key = split_destination(r, view.dests, rng, now_ns)
        if found_key is not None:
            return r, found_key
    return r, choose_destination(r, rng)


def inbound_instance(
    local: Mapping[bytes, LocalInstance], dest: bytes, host: bytes
) -> LocalInstance | None:
    """The local instance an inbound request may reach: the one ``x-gossipmesh-dest`` names, or
    without that field, the only instance of the service the Host names; None: forbidden."""
    dest = dest.strip()
    if dest:
        return local.get(dest)
    if not host:
        return None
    name = normalise_host(host.decode("latin-1"))
    matches = [v for v in local.values() if v[0] == name]
    return matches[0] if len(matches) == 1 else None


__all__ = [
    "MAX_ROUTE_CACHE",
    "Dest",
    "Directory",
    "LocalInstance",
    "View",
    "dest_available",
    "inbound_instance",
    "route",
    "split_destination",
]
