"""What the mesh says about itself, polled through the admin API for the dashboard and summary.

Theory of operation
-------------------
One background thread (``MeshView``) asks every agent the demo believes is running for
``GET /v1/members`` about four times a second and for ``GET /metrics`` once a second, with short
timeouts, and keeps the latest answers under a lock; the dashboard only ever reads a snapshot.
An agent that stops answering keeps its last view and last counters: a SIGKILLed agent's
requests, retries and ejections still happened, so totals never go backwards.

From ``/metrics`` it reads only the proxy's counters (Prometheus text, parsed by one regex):
requests by service and status class, retries, ejections, and the latency histogram, all on the
``outbound`` side, where each request is counted once, at the caller's sidecar (driver -> web at
n1, web -> api at n1, api -> db at each api node); and the policy denials, counted at the
destination's inbound by service and policy. Rates and the per-service p50/p99 come from
the difference between now and the sample ``RATE_WINDOW_S`` ago; histogram quantiles are bucket
upper bounds (the proxy's buckets are 0.5 ms to 10 s), so they read "at most".

Once a second it also asks the entry agent what ``gossipmesh stat api`` would say (``GET
/v1/stats``, every agent merged) about the canary route's split over the last 10 s, which the
dashboard shows under the driver's own count of the same seconds.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gossipmesh.client import AdminClient, AgentUnreachable, ClientError
from gossipmesh.demo.plan import CANARY_ROUTE, Node

K = TypeVar("K")

MEMBERS_EVERY_S = 0.25
METRICS_EVERY_S = 1.0
RATE_WINDOW_S = 5.0
STAT_WINDOW_S = 10.0  # the dashboard's canary split window (SPLIT_WINDOW_S) for `stat` too
SERVICES = ("web", "api", "db")
_LINE = re.compile(r"^(gossipmesh_proxy_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+|NaN|[+-]Inf)$")
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Counters:
    """One agent's proxy counters (outbound side), or the sum over agents."""

    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (service, class)
    retries: dict[str, float] = field(default_factory=dict)
    ejections: dict[str, float] = field(default_factory=dict)
    buckets: dict[tuple[str, float], float] = field(default_factory=dict)  # (service, le): cum
    denied: dict[tuple[str, str], float] = field(default_factory=dict)  # (service, policy)

    def add(self, other: Counters) -> None:
        _merge(self.requests, other.requests)
        _merge(self.retries, other.retries)
        _merge(self.ejections, other.ejections)
        _merge(self.buckets, other.buckets)
        _merge(self.denied, other.denied)


def _merge(mine: dict[K, float], theirs: dict[K, float]) -> None:
    for k, v in theirs.items():
        mine[k] = mine.get(k, 0.0) + v


def parse_metrics(text: str) -> Counters:
    c = Counters()
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        name, labels_text, value_text = m.groups()
        labels = dict(_LABEL.findall(labels_text))
        try:
            value = float(value_text)
        except ValueError:
            continue
        service = labels.get("service", "")
        if name == "gossipmesh_proxy_requests_total" and labels.get("direction") == "outbound":
            key = (service, labels.get("status_class", ""))
            c.requests[key] = c.requests.get(key, 0.0) + value
        elif name == "gossipmesh_proxy_retries_total":
            c.retries[service] = c.retries.get(service, 0.0) + value
        elif name == "gossipmesh_proxy_ejections_total":
            c.ejections[service] = c.ejections.get(service, 0.0) + value
        elif name == "gossipmesh_proxy_denied_total":  # inbound side: at the destination
            key2 = (service, labels.get("policy", ""))
            c.denied[key2] = c.denied.get(key2, 0.0) + value
        elif (
            name == "gossipmesh_proxy_request_duration_seconds_bucket"
            and labels.get("direction") == "outbound"
        ):
            le = float(labels.get("le", "inf").replace("+Inf", "inf"))
            c.buckets[(service, le)] = c.buckets.get((service, le), 0.0) + value
    return c


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound (seconds) of the bucket holding quantile ``q`` of cumulative ``buckets``."""
    if not buckets:
        return None
    total = max(buckets.values())
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None


@dataclass(frozen=True, slots=True)
class ServiceRow:
    service: str
    rate_per_s: float
    success_rate: float | None
    p50_s: float | None
    p99_s: float | None
    retries: float
    ejections: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    members: dict[str, dict[str, str]]  # viewer -> member -> state
    services: tuple[ServiceRow, ...]
    totals: Counters
    # The canary route's requests by api version over the last STAT_WINDOW_S, as `gossipmesh
    # stat` (GET /v1/stats at the entry agent, every agent merged) reports them.
    stat_split: dict[str, int] | None = None


class MeshView:
    def __init__(
        self, nodes: tuple[Node, ...], is_running: Callable[[Node], bool], entry: Node | None = None
    ) -> None:
        self.nodes = nodes
        self.entry = entry
        self._stat_split: dict[str, int] | None = None
        self.is_running = is_running
        self._lock = threading.Lock()
        self._members: dict[str, dict[str, str]] = {}
        self._counters: dict[str, Counters] = {}
        self._history: deque[tuple[float, Counters]] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mesh-view")
        self._clients = {n.name: AdminClient(n.admin, timeout_s=1.0) for n in nodes}

    def start(self) -> MeshView:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_metrics = 0.0
        while not self._stop.is_set():
            for node in self.nodes:
                if self._stop.is_set():
                    return
                if not self.is_running(node):
                    continue
                try:
                    data = self._clients[node.name].members()
                    view = {m["name"]: m["state"] for m in data}
                except (AgentUnreachable, OSError, ValueError, KeyError, TypeError):
                    continue
                with self._lock:
                    self._members[node.name] = view
            if time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + METRICS_EVERY_S
                self._scrape()
            self._stop.wait(MEMBERS_EVERY_S)

    def _scrape(self) -> None:
        for node in self.nodes:
            if not self.is_running(node):
                continue
            text = self._metrics_text(node)
            if text is not None:
                with self._lock:
                    self._counters[node.name] = parse_metrics(text)
        if self.entry is not None and self.is_running(self.entry):
            stat = self._stat_of(self.entry)
            if stat is not None:
                with self._lock:
                    self._stat_split = stat
        total = Counters()
        with self._lock:
            for c in self._counters.values():
                total.add(c)
            self._history.append((time.monotonic(), total))

    def _stat_of(self, node: Node) -> dict[str, int] | None:
        try:
            stats = self._clients[node.name].stats(window_s=STAT_WINDOW_S, service="api")
        except (ClientError, OSError, ValueError):
            return None
        counts = {"v1": 0, "v2": 0}
        for r in stats.get("routes") or []:
            if r.get("route") == CANARY_ROUTE.removeprefix("route/"):
                for d in r.get("destinations") or []:
                    tag = str(d.get("destination", "")).partition("@")[2]
                    if tag in counts:
                        counts[tag] += int(d.get("requests") or 0)
        return counts

    def _metrics_text(self, node: Node) -> str | None:
        import http.client

        host, _, port = node.admin.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
            return body.decode(errors="replace") if resp.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def snapshot(self) -> Snapshot:
        with self._lock:
            members = {k: dict(v) for k, v in self._members.items()}
            history = list(self._history)
            stat_split = self._stat_split
        if not history:
            return Snapshot(members, (), Counters())
        now_t, now = history[-1]
        then_t, then = history[0]
        for t, c in history:
            if now_t - t <= RATE_WINDOW_S:
                then_t, then = t, c
                break
        span = max(now_t - then_t, 1e-9)
        rows = []
        for svc in SERVICES:
            d_all = sum(v - then.requests.get(k, 0.0) for k, v in now.requests.items()
                        if k[0] == svc)  # fmt: skip
            d_ok = sum(v - then.requests.get(k, 0.0) for k, v in now.requests.items()
                       if k[0] == svc and k[1] in ("2xx", "3xx"))  # fmt: skip
            window = {le: v - then.buckets.get((s, le), 0.0)
                      for (s, le), v in now.buckets.items() if s == svc}  # fmt: skip
            if now_t == then_t:  # one scrape so far: show totals instead of a window
                window = {le: v for (s, le), v in now.buckets.items() if s == svc}
                d_all = sum(v for k, v in now.requests.items() if k[0] == svc)
                d_ok = sum(v for k, v in now.requests.items()
                           if k[0] == svc and k[1] in ("2xx", "3xx"))  # fmt: skip
            rows.append(
                ServiceRow(
                    service=svc,
                    rate_per_s=d_all / span if now_t != then_t else 0.0,
                    success_rate=(d_ok / d_all) if d_all > 0 else None,
                    p50_s=bucket_quantile(window, 0.5),
                    p99_s=bucket_quantile(window, 0.99),
                    retries=now.retries.get(svc, 0.0),
                    ejections=now.ejections.get(svc, 0.0),
                )
            )
        return Snapshot(members, tuple(rows), now, stat_split)
