"""``GET /v1/stats``: success rate, rps and latency percentiles over the last seconds, per service,
destination subset, route (configured split next to the observed one) and path, from every agent.

Theory of operation
-------------------
The proxy's counters only grow (metrics.py). ``TrafficRing`` copies them every ``EVERY_S`` into a
ring of ``KEEP`` snapshots, so "the last W seconds" is the difference between the counters now
and the newest snapshot at least W seconds old (or the oldest one, while the agent is younger
than W: then the window says how long it really is). A copy is a few thousand dict entries at
most (the proxy caps its label sets), once a second, off the request path.

``window`` turns that difference into this agent's ``NodeWindow`` (gossipmesh/traffic_stats.py)
with the routes' weights as its table holds them. ``GET /v1/stats`` asks every alive member for
theirs over the gossip port (stream kind ``trafficstat``, body: the window in seconds; member
admin APIs are loopback-only, the same way as ``keyop`` and ``shiftstat``) and answers the merge,
the per-node answers' status included (at most ``FANOUT_CONCURRENCY`` streams at a time; an
answer is reused for ``REUSE_S``, so several dashboards and ``top`` cost one fan-out). Query: ``window_s`` (1..``MAX_WINDOW_S``, default
``DEFAULT_WINDOW_S``), ``service``, ``scope=local`` (this agent alone). Read-only, so on a
loopback admin address it needs no token, like ``/metrics``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response
from gossipmesh.agent.streams import SealedStream
from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address
from gossipmesh.proxy.metrics import LATENCY_BUCKETS_S, LatencyKey, ProxyMetrics, RequestKey
from gossipmesh.proxy.routing import dest_label
from gossipmesh.swim.member import MemberState
from gossipmesh.traffic_stats import MAX_ROWS, merge

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar

KIND = "trafficstat"
EVERY_S = 1.0
MAX_WINDOW_S = 60
KEEP = MAX_WINDOW_S + 2
DEFAULT_WINDOW_S = 10.0
FANOUT_TIMEOUT_S = 3.0
FANOUT_CONCURRENCY = 16
REUSE_S = 1.0  # a cluster-wide answer is reused this long (the snapshots are a second apart)
BOUNDS_MS = [round(b * 1000, 3) for b in LATENCY_BUCKETS_S]

# (time, requests, latency histograms, denials by (service, policy))
Snapshot = tuple[
    float, dict[RequestKey, int], dict[LatencyKey, list[int]], dict[tuple[str, str], int]
]


class TrafficRing:
    """Snapshots of one proxy's counters; ``clock`` in seconds (trio's, in the agent)."""

    def __init__(self, metrics: Callable[[], ProxyMetrics | None], clock: Callable[[], float]):
        self.metrics = metrics
        self.clock = clock
        self.ring: deque[Snapshot] = deque(maxlen=KEEP)
        self.started_s: float | None = None  # set by ``run`` (the clock needs the trio loop)

    def snapshot(self) -> Snapshot:
        m = self.metrics()
        now = self.clock()
        if m is None:
            return (now, {}, {}, {})
        latency = {k: list(v) for k, v in list(m.latency.items())}
        return (now, dict(m.requests), latency, dict(m.denied))

    def take(self) -> None:
        self.ring.append(self.snapshot())

    async def run(self) -> None:
        self.started_s = self.clock()
        while True:
            self.take()
            await trio.sleep(EVERY_S)

    def window(self, window_s: float) -> Snapshot:
        """(seconds covered, request, histogram and denial deltas) over the last ``window_s``."""
        now_s, requests, latency, denied = self.snapshot()
        base: Snapshot | None = None
        for snap in self.ring:  # oldest first: keep the newest one old enough
            if now_s - snap[0] >= window_s - EVERY_S / 2:
                base = snap
            else:
                break
        if base is None:  # younger than the window: all there is
            young = self.ring and self.ring[0][0] < now_s
            base = self.ring[0] if young else (self.started_s or now_s, {}, {}, {})
        span = max(now_s - base[0], 1e-3)
        d_req = {k: n - base[1].get(k, 0) for k, n in requests.items() if n > base[1].get(k, 0)}
        d_lat = {}
        for k, counts in latency.items():
            old = base[2].get(k)
            diff = counts if old is None else [a - b for a, b in zip(counts, old, strict=True)]
            if any(diff):
                d_lat[k] = diff
        d_den = {k: n - base[3].get(k, 0) for k, n in denied.items() if n > base[3].get(k, 0)}
        return span, d_req, d_lat, d_den


def node_window(sidecar: Sidecar, ring: TrafficRing, window_s: float) -> dict[str, Any]:
    """This agent's ``NodeWindow`` (traffic_stats.py): deltas over ``window_s``, busiest first."""
    span, requests, latency, denied = ring.window(window_s)
    grouped: dict[tuple[str, str, str, str, str], list[int]] = {}
    for (svc, route, dest, node, status, direction), n in requests.items():
        acc = grouped.setdefault((direction, svc, route, dest, node), [0, 0])
        acc[0] += n
        if 0 < status < 500:
            acc[1] += n
    counts: list[list[Any]] = [[*k, *v] for k, v in grouped.items()]
    counts.sort(key=lambda r: -int(r[5]))
    lat: list[list[Any]] = [[d, s, dest, b] for (s, dest, d), b in latency.items()]
    lat.sort(key=lambda r: -sum(r[3]))
    routes = []
    built_ms = sidecar.table_wall_ms
    for name, cfg in sorted(sidecar.catalog.routes.items()):
        dests = [
            {
                "destination": dest_label(d.service, tuple(sorted(d.tags))),
                "weight": d.weight_at(built_ms),
            }  # fmt: skip
            for d in cfg.destinations
        ]
        routes.append({"route": name, "destinations": dests})
    return {
        "ok": True,
        "name": sidecar.name,
        "window_s": round(span, 3),
        "bounds_ms": BOUNDS_MS,
        "counts": counts[:MAX_ROWS],
        "latency": lat[:MAX_ROWS],
        "routes": routes[:MAX_ROWS],
        "denied": [[svc, policy, n] for (svc, policy), n in sorted(denied.items())][:MAX_ROWS],
        "truncated": max(0, len(counts) - MAX_ROWS) + max(0, len(lat) - MAX_ROWS),
    }


def _window_param(req: Request) -> float:
    raw = (req.query.get("window_s") or [str(DEFAULT_WINDOW_S)])[0]
    try:
        w = float(raw)
    except ValueError:
        w = float("nan")
    if not 1 <= w <= MAX_WINDOW_S:  # NaN fails too
        raise HTTPError(400, "bad_request", f"window_s must be 1..{MAX_WINDOW_S} seconds")
    return w


def install_traffic_stats(sidecar: Sidecar) -> TrafficRing:
    """Register ``GET /v1/stats`` and the ``trafficstat`` stream; the caller runs ``ring.run``."""
    agent = sidecar.agent
    ring = TrafficRing(sidecar.proxy_metrics, trio.current_time)

    async def serve(stream: SealedStream, src: Address, body: bytes) -> None:
        try:
            w = float(body.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(KIND, "window is not a number") from exc
        if not 1 <= w <= MAX_WINDOW_S:
            raise DecodeError(KIND, "window out of range")
        await stream.send(json.dumps(node_window(sidecar, ring, w)).encode())

    async def fan_out(w: float) -> dict[str, Any]:
        nodes: dict[str, Any] = {sidecar.name: node_window(sidecar, ring, w)}
        peers = [m for m in await agent.members()
                 if m.name != sidecar.name and m.state is MemberState.ALIVE]  # fmt: skip

        async def one(name: str, address: Address) -> None:
            try:
                async with limiter:
                    reply = await ask(address)
                nodes[name] = reply if isinstance(reply, dict) else {"ok": False}
            except (OSError, trio.TooSlowError, EOFError, DecodeError, ValueError,
                    trio.BrokenResourceError) as exc:  # fmt: skip
                nodes[name] = {"ok": False, "error": f"unreachable: {exc!r}"}

        async def ask(address: Address) -> Any:
            with trio.fail_after(FANOUT_TIMEOUT_S):
                stream = await agent.open_stream(address, KIND, repr(w).encode())
                try:
                    return json.loads(await stream.receive())
                finally:
                    await stream.aclose()

        limiter = trio.CapacityLimiter(FANOUT_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for m in peers:
                nursery.start_soon(one, m.name, m.address)
        return nodes

    answers: dict[float, tuple[float, dict[str, Any]]] = {}  # window -> (when, nodes' answers)

    async def stats(req: Request) -> Response:
        w = _window_param(req)
        service = req.query["service"][0] if req.query.get("service") else None
        scope = (req.query.get("scope") or ["cluster"])[0]
        if scope not in ("cluster", "local"):
            raise HTTPError(400, "bad_request", "scope must be cluster or local")
        if scope == "local":
            nodes: dict[str, Any] = {sidecar.name: node_window(sidecar, ring, w)}
        else:
            # Dashboards, `top` and `stat` polling at once share one fan-out a second.
            now = trio.current_time()
            cached = answers.get(w)
            if cached is not None and now - cached[0] < REUSE_S:
                nodes = cached[1]
            else:
                nodes = await fan_out(w)
                if len(answers) >= MAX_WINDOW_S:
                    answers.clear()
                answers[w] = (trio.current_time(), nodes)
        body = merge(nodes, service)
        body.update(scope=scope, agent=sidecar.name, requested_window_s=w,
                    errors={n: str(v.get("error", "no answer"))[:200] for n, v in nodes.items()
                            if not v.get("ok")})  # fmt: skip
        return JSONResponse(body)

    agent.register_stream_handler(KIND, serve)
    agent.router.add("GET", "/v1/stats", stats)
    return ring


__all__ = ["DEFAULT_WINDOW_S", "KIND", "MAX_WINDOW_S", "TrafficRing", "install_traffic_stats"]
