"""Proxy metrics: plain counters on the hot path, Prometheus objects only at scrape time.

Theory of operation
-------------------
Updating ``prometheus_client`` metric objects costs a lock and label lookups per call; measured
in issue 5 it took the proxy from 0.43x to 0.31x of nginx. So the request path only bumps entries
in dicts keyed by label tuples and increments a histogram bucket found by ``bisect``. A custom
``Collector`` turns those structures into metric families when Prometheus scrapes, on a private
``CollectorRegistry`` so two proxies in one process (tests) never collide.

Metric names are prefixed ``gossipmesh_proxy_``. Directions are ``outbound`` (app → mesh),
``inbound`` (mesh → local app) and ``tcp``. With SO_REUSEPORT workers (``serve_workers``) each
worker process has its own counters; ``ProxyMetrics(worker="N")`` adds a ``worker`` label to
every sample. Their expositions must be merged by family, not concatenated (the text format
allows one HELP/TYPE per family): the agent does that for its workers (agent/worker_metrics.py).

Labels that show the mesh (issue 15): a request is counted under its service, route, destination
(service and subset tags, ``api@v2``: ``routing.dest_label``), the endpoint's node, its status
(classed at scrape: ``status_class``) and direction; its latency in a histogram per destination.
Route names and subsets come from the replicated config and nodes from membership; a request
whose Host names no service is counted under the empty service, never its Host (a client would
choose the series). Every label set is still capped (``max_series`` keys per dict):
once full, a new key is counted under ``other`` in every label but status and direction (for
``errors``: the reason), and each such request is counted in ``overflow`` by metric
(``gossipmesh_proxy_label_overflow_total``). Keys already present are never evicted, so a series
never goes backwards. The check costs nothing on the hot path: it runs only when a key is new.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gossipmesh.metric_export import Registry, families

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, Metric

    from gossipmesh.proxy.descriptors import DescriptorBudget
    from gossipmesh.proxy.limits import ProxyLimits

# Seconds. Finer at the low end, where a proxy hop lives.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# The same bounds in nanoseconds: latencies are measured in ns on the proxy's clock (clock.py).
LATENCY_BUCKETS_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS_S)
_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
MAX_SERIES = 4096  # keys per label set (requests, latency, errors) before ``other``
OTHER = "other"

RequestKey = tuple[str, str, str, str, int, str]  # service, route, dest, node, status, direction
LatencyKey = tuple[str, str, str]  # service, dest, direction


def status_class(status: int) -> str:
    """``2xx`` for 200..299; 0 (no response: the connection was aborted) and 1xx are ``1xx``."""
    return _CLASSES[min(5, max(0, status // 100))]


class ProxyMetrics:
    """Every field is a plain dict; label tuples are the keys."""

    def __init__(self, worker: str = "", max_series: int = MAX_SERIES) -> None:
        self.worker = worker
        self.max_series = max_series
        # (service, route, dest, node, status, direction) -> count; status kept exact, classed
        # at scrape.
        self.requests: dict[RequestKey, int] = {}
        # (service, dest, direction) -> [bucket counts..., +Inf count], sums kept apart
        self.latency: dict[LatencyKey, list[int]] = {}
        self.latency_sum_ns: dict[LatencyKey, int] = {}
        # metric -> requests counted under ``other`` because its label set was full
        self.overflow: dict[str, int] = {}
        self.open_connections: dict[str, int] = {"outbound": 0, "inbound": 0, "tcp": 0}
        self.connections_total: dict[str, int] = {"outbound": 0, "inbound": 0, "tcp": 0}
        self.upstream_connections: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.budget_exhausted: dict[str, int] = {}
        self.ejections: dict[str, int] = {}
        self.breaker_trips: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}  # (service, reason)
        self.bytes_in: dict[str, int] = {"outbound": 0, "inbound": 0, "tcp": 0}
        self.bytes_out: dict[str, int] = {"outbound": 0, "inbound": 0, "tcp": 0}
        # Client connections open now per listener: "outbound", "inbound", "tcp:SERVICE".
        self.listener_connections: dict[str, int] = {}
        # (listener, reason) -> client connections refused at accept: "listener_limit" (the
        # listener's own cap), "descriptors" (the budget's client share is used up).
        self.refused: dict[tuple[str, str], int] = {}
        self.head_timeouts: dict[str, int] = {}  # direction -> heads not whole in time
        self.idle_closes: dict[str, int] = {}  # direction -> keep-alive connections idle too long
        # The mesh hop (issue 12): handshakes by (direction, outcome), peers refused by
        # (direction, reason), live connections closed by revalidation by reason, requests
        # denied by (service, policy), and the migration switch and what went through it.
        self.tls_handshakes: dict[tuple[str, str], int] = {}
        self.tls_rejected: dict[tuple[str, str], int] = {}
        self.tls_closed: dict[str, int] = {}
        self.denied: dict[tuple[str, str], int] = {}
        self.plaintext_enabled = 0
        self.plaintext: dict[str, int] = {}  # "inbound_accepted", "outbound_fallback"
        # HTTP/2 and gRPC (h2serve.py, h2exchange.py): gRPC calls by (service, grpc-status,
        # direction); HTTP/2 client connections by direction, and the streams and connections
        # refused for breaking the protocol (RST_STREAM or GOAWAY with an error) by direction.
        self.grpc_status: dict[tuple[str, str, str], int] = {}
        self.h2_connections: dict[str, int] = {}
        self.h2_protocol_errors: dict[str, int] = {}
        # Of those connections, the ones ended for a flood (h2flood.py), by (direction, flood).
        self.h2_floods: dict[tuple[str, str], int] = {}
        self.limits: ProxyLimits | None = None  # set by the proxy: exported as gauges
        self.budget: DescriptorBudget | None = None
        self.registry = Registry()
        self.registry.register(_Collector(self))

    # -- hot path -------------------------------------------------------------------------

    def observe(
        self,
        service: str,
        route: str,
        status: int,
        direction: str,
        latency_ns: int,
        dest: str = "",
        node: str = "",
    ) -> None:
        """One request answered (``status`` 0: aborted, no response). ``dest``: the
        destination's label (``Dest.label``; empty: none chosen, e.g. no route), ``node``: the
        endpoint's node (empty: no endpoint tried)."""
        key = (service, route, dest, node, status, direction)
        requests = self.requests
        n = requests.get(key)
        if n is None:
            n = 0
            if len(requests) >= self.max_series:
                key = (OTHER, OTHER, OTHER, OTHER, status, direction)
                self._overflowed("requests")
                n = requests.get(key, 0)
        requests[key] = n + 1
        lkey = (service, dest, direction)
        buckets = self.latency.get(lkey)
        if buckets is None:
            buckets, lkey = self._new_histogram(lkey)
        buckets[bisect_left(LATENCY_BUCKETS_NS, latency_ns)] += 1
        self.latency_sum_ns[lkey] += latency_ns

    def _new_histogram(self, lkey: LatencyKey) -> tuple[list[int], LatencyKey]:
        if len(self.latency) >= self.max_series:
            lkey = (OTHER, OTHER, lkey[2])
            self._overflowed("latency")
            buckets = self.latency.get(lkey)
            if buckets is not None:
                return buckets, lkey
        buckets = self.latency[lkey] = [0] * (len(LATENCY_BUCKETS_NS) + 1)
        self.latency_sum_ns[lkey] = 0
        return buckets, lkey

    def _overflowed(self, metric: str) -> None:
        self.overflow[metric] = self.overflow.get(metric, 0) + 1

    def bump(self, counter: dict[str, int], service: str) -> None:
        counter[service] = counter.get(service, 0) + 1

    def error(self, service: str, reason: str) -> None:
        key = (service, reason)
        errors = self.errors
        if key not in errors and len(errors) >= self.max_series:
            key = (OTHER, reason)  # reasons are a fixed set (errors.py)
            self._overflowed("errors")
        errors[key] = errors.get(key, 0) + 1

    def breaker_trip(self, service: str, limit: str) -> None:
        key = (service, limit)
        self.breaker_trips[key] = self.breaker_trips.get(key, 0) + 1

    def grpc(self, service: str, code: int, direction: str) -> None:
        key = (service, str(code), direction)
        self.grpc_status[key] = self.grpc_status.get(key, 0) + 1

    def count(self, counter: dict[tuple[str, str], int], a: str, b: str) -> None:
        key = (a, b)
        counter[key] = counter.get(key, 0) + 1

    # -- export ---------------------------------------------------------------------------

    def render(self) -> bytes:
        return self.registry.render()


class _Collector:
    def __init__(self, m: ProxyMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        worker = self.m.worker
        for fam in self._families():
            if worker:
                fam.samples = [
                    s._replace(labels={**s.labels, "worker": worker}) for s in fam.samples
                ]
            yield fam

    def _families(self) -> Iterator[Metric]:
        fam = families()
        m = self.m
        req = fam.counter(
            "gossipmesh_proxy_requests",
            "HTTP requests completed by the proxy, by route, destination (service@subset), "
            "endpoint node and status class",
            labels=["service", "route", "destination", "node", "status_class", "direction"],
        )
        classed: dict[tuple[str, str, str, str, str, str], int] = {}
        for (svc, route, dest, node, status, direction), n in list(m.requests.items()):
            k = (svc, route, dest, node, status_class(status), direction)
            classed[k] = classed.get(k, 0) + n
        for k, n in classed.items():
            req.add_metric(list(k), n)
        yield req

        hist = fam.histogram(
            "gossipmesh_proxy_request_duration_seconds",
            "Time from request head to response end, per destination (service@subset)",
            labels=["service", "destination", "direction"],
        )
        for lkey, counts in list(m.latency.items()):
            cum = 0
            buckets = []
            for bound, c in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
                cum += c
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cum))
            hist.add_metric(list(lkey), buckets, sum_value=m.latency_sum_ns.get(lkey, 0) / 1e9)
        yield hist
        yield _counter(
            "label_overflow",
            f"Requests counted under '{OTHER}' because the metric's label set was full "
            "(max_series keys)",
            "metric",
            m.overflow,
        )

        g = fam.gauge(
            "gossipmesh_proxy_open_connections",
            "Downstream connections open now",
            labels=["direction"],
        )
        for d, n in m.open_connections.items():
            g.add_metric([d], n)
        yield g
        yield _counter(
            "connections", "Downstream connections accepted", "direction", m.connections_total
        )
        g2 = fam.gauge(
            "gossipmesh_proxy_upstream_connections",
            "Upstream connections open now",
            labels=["service"],
        )
        for s, n in m.upstream_connections.items():
            g2.add_metric([s], n)
        yield g2
        yield _counter("retries", "Retries attempted", "service", m.retries)
        yield _counter(
            "retry_budget_exhausted",
            "Retries refused by the retry budget",
            "service",
            m.budget_exhausted,
        )
        yield _counter("ejections", "Outlier ejections", "service", m.ejections)
        trips = fam.counter(
            "gossipmesh_proxy_breaker_trips",
            "Requests refused by a circuit-breaker limit",
            labels=["service", "limit"],
        )
        for (s, lim), n in list(m.breaker_trips.items()):
            trips.add_metric([s, lim], n)
        yield trips
        errs = fam.counter(
            "gossipmesh_proxy_errors",
            "Responses generated by the proxy, by reason",
            labels=["service", "reason"],
        )
        for (s, r), n in list(m.errors.items()):
            errs.add_metric([s, r], n)
        yield errs
        yield _counter("received_bytes", "Bytes received from downstream", "direction", m.bytes_in)
        yield _counter("sent_bytes", "Bytes sent to downstream", "direction", m.bytes_out)
        grpc = fam.counter(
            "gossipmesh_proxy_grpc_calls",
            "gRPC calls completed by the proxy, by grpc-status",
            labels=["service", "grpc_status", "direction"],
        )
        for (s, code, direction), n in list(m.grpc_status.items()):
            grpc.add_metric([s, code, direction], n)
        yield grpc
        yield _counter(
            "h2_connections", "HTTP/2 client connections served", "direction", m.h2_connections
        )
        yield _counter(
            "h2_protocol_errors",
            "HTTP/2 client streams and connections refused for a protocol error",
            "direction",
            m.h2_protocol_errors,
        )
        yield from self._limit_families()
        yield from self._mesh_families()

    def _mesh_families(self) -> Iterator[Metric]:
        fam = families()
        m = self.m
        for name, doc, labels, values in (
            ("tls_handshakes", "TLS handshakes of the mesh hop, by outcome",
             ["direction", "outcome"], m.tls_handshakes),
            ("tls_rejected", "Mesh peers refused after a TLS handshake, by reason",
             ["direction", "reason"], m.tls_rejected),
            ("denied", "Requests and TCP connections denied at the inbound, by policy",
             ["service", "policy"], m.denied),
            ("h2_floods", "HTTP/2 connections ended for a flood (GOAWAY ENHANCE_YOUR_CALM)",
             ["direction", "flood"], m.h2_floods),
        ):  # fmt: skip
            c = fam.counter(f"gossipmesh_proxy_{name}", doc, labels=labels)
            for key, n in list(values.items()):
                c.add_metric(list(key), n)
            yield c
        yield _counter(
            "tls_closed", "Live mesh connections closed: peer revoked, expired, no longer hosting",
            "reason", m.tls_closed,
        )  # fmt: skip
        yield fam.gauge(
            "gossipmesh_proxy_inbound_plaintext",
            "1 while the inbound listener also takes plaintext (--inbound-plaintext, migration)",
            value=m.plaintext_enabled,
        )
        yield _counter(
            "plaintext_connections", "Mesh connections without TLS (migration only), by kind",
            "kind", m.plaintext,
        )  # fmt: skip

    def _limit_families(self) -> Iterator[Metric]:
        fam = families()
        m = self.m
        lc = fam.gauge(
            "gossipmesh_proxy_listener_connections",
            "Client connections open now, per listener",
            labels=["listener"],
        )
        for name, n in list(m.listener_connections.items()):
            lc.add_metric([name], n)
        yield lc
        refused = fam.counter(
            "gossipmesh_proxy_refused_connections",
            "Client connections refused at accept, by listener and reason",
            labels=["listener", "reason"],
        )
        for (name, reason), n in list(m.refused.items()):
            refused.add_metric([name, reason], n)
        yield refused
        yield _counter(
            "head_timeouts", "Connections closed: request head not whole in time", "direction",
            m.head_timeouts,
        )  # fmt: skip
        yield _counter(
            "idle_closes", "Keep-alive connections closed after idling too long", "direction",
            m.idle_closes,
        )  # fmt: skip
        if m.limits is not None:
            g = fam.gauge(
                "gossipmesh_proxy_limit", "The proxy's configured limits", labels=["name"]
            )
            for name, value in m.limits.items():
                g.add_metric([name], value)
            yield g
        b = m.budget
        if b is not None:
            d = fam.gauge(
                "gossipmesh_proxy_descriptors",
                "Descriptor budget: the process limit, the agent's reserve and baseline, the "
                "proxy's caps (all, and for accepting clients) and its sockets open now",
                labels=["kind"],
            )
            for kind, value in (
                ("limit", b.limit),
                ("reserve", b.reserve),
                ("baseline", b.baseline),
                ("cap", b.cap),
                ("client_cap", b.client_cap),
                ("in_use", b.in_use),
                ("peak", b.peak),
            ):
                d.add_metric([kind], value)
            yield d


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    fam = families()
    c = fam.counter(f"gossipmesh_proxy_{name}", doc, labels=[label])
    for k, n in list(values.items()):
        c.add_metric([k], n)
    return c


def render_metrics(*metrics: ProxyMetrics) -> bytes:
    """Prometheus text for one or more proxies' metrics (the agent's ``/metrics`` body)."""
    return b"".join(m.render() for m in metrics)
