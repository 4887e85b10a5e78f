"""Traffic statistics over a recent window, merged across agents: what ``GET /v1/stats``,
``gossipmesh stat``, ``gossipmesh top`` and the dashboard show. Pure; no agent code.

Theory of operation
-------------------
Each agent keeps a small ring of snapshots of its proxy's counters (agent/traffic.py) and, asked
for a window of W seconds, answers with the *difference* between now and the snapshot W seconds
ago (a ``NodeWindow``, JSON): per (direction, service, route, destination, node) the requests and
how many succeeded, per (direction, service, destination) the latency histogram's bucket counts,
requests denied at its inbound per (service, policy), and the routes' configured weights as its
table holds them. Differences of counters add up, so
the cluster's view is the sum over agents (``merge``): rates add (each agent's requests over its
own window), histograms add bucket by bucket, and percentiles are read from the summed histogram
(``quantile``: linear within the bucket, as Prometheus' ``histogram_quantile``, so they are
estimates bounded by the buckets, 0.5 ms to 10 s).

A request is counted by each sidecar it crosses: ``outbound`` at the caller's, ``inbound`` at the
destination's. The caller's side sees everything (the split between subsets, proxy errors such as
``no_route``), so summaries are per direction and the CLI shows ``outbound`` unless asked.
Success is an answer below 500 (a 4xx is the application's answer, as in Linkerd); status 0 (the
connection was aborted, no answer) and 5xx are failures.

What comes from another agent is checked row by row (``NodeWindow`` fields of the wrong type or
size are skipped and counted in ``bad_rows``); at most ``MAX_ROWS`` rows per list are sent or
kept, the busiest first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MAX_ROWS = 512  # rows per list in one agent's answer (busiest first)
MAX_BUCKETS = 64
TOP_PATHS = 50
QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))

# A node window's ``counts`` row: direction, service, route, destination, node, requests, ok.
CountRow = tuple[str, str, str, str, str, int, int]
# ... and a ``latency`` row: direction, service, destination, bucket counts.
LatencyRow = tuple[str, str, str, list[int]]


def quantile(bounds_ms: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram (``counts[i]``: observations at most
    ``bounds_ms[i]``, one more count for above the last bound), interpolated linearly within its
    bucket; None when empty. Above the last bound it answers the last bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cum = 0
    for i, c in enumerate(counts):
        if c and cum + c >= rank:
            if i >= len(bounds_ms):
                return float(bounds_ms[-1]) if bounds_ms else None
            lower = bounds_ms[i - 1] if i > 0 else 0.0
            return lower + (bounds_ms[i] - lower) * (rank - cum) / c
        cum += c
    return float(bounds_ms[-1]) if bounds_ms else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and len(v) <= 512 else None


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else None


def parse_node(data: Any) -> tuple[dict[str, Any], int]:
    """One agent's window checked field by field: (the usable part, rows skipped)."""
    bad = 0
    out: dict[str, Any] = {"counts": [], "latency": [], "routes": [], "denied": [],
                           "window_s": 0.0}  # fmt: skip
    if not isinstance(data, Mapping):
        return out, 1
    w = data.get("window_s")
    if isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0:
        out["window_s"] = float(w)
    bounds = data.get("bounds_ms")
    if (
        isinstance(bounds, list)
        and len(bounds) <= MAX_BUCKETS
        and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
    ):
        out["bounds_ms"] = [float(b) for b in bounds]
    rows = data.get("counts")
    for row in rows[:MAX_ROWS] if isinstance(rows, list) else ():
        if isinstance(row, list) and len(row) == 7:
            texts = [_str(x) for x in row[:5]]
            nums = [_count(x) for x in row[5:]]
            if None not in texts and None not in nums:
                out["counts"].append((*texts, *nums))
                continue
        bad += 1
    rows = data.get("latency")
    for row in rows[:MAX_ROWS] if isinstance(rows, list) else ():
        if isinstance(row, list) and len(row) == 4 and isinstance(row[3], list):
            texts = [_str(x) for x in row[:3]]
            buckets = [_count(x) for x in row[3][:MAX_BUCKETS]]
            if None not in texts and None not in buckets:
                out["latency"].append((*texts, buckets))
                continue
        bad += 1
    rows = data.get("denied")
    for row in rows[:MAX_ROWS] if isinstance(rows, list) else ():
        if isinstance(row, list) and len(row) == 3:
            svc, policy, n = _str(row[0]), _str(row[1]), _count(row[2])
            if svc is not None and policy is not None and n is not None:
                out["denied"].append((svc, policy, n))
                continue
        bad += 1
    routes = data.get("routes")
    for r in routes[:MAX_ROWS] if isinstance(routes, list) else ():
        name = _str(r.get("route")) if isinstance(r, Mapping) else None
        dests = r.get("destinations") if isinstance(r, Mapping) else None
        if name is not None and isinstance(dests, list):
            parsed = []
            for d in dests[:MAX_ROWS]:
                label = _str(d.get("destination")) if isinstance(d, Mapping) else None
                weight = _count(d.get("weight")) if isinstance(d, Mapping) else None
                if label is not None and weight is not None:
                    parsed.append((label, weight))
            out["routes"].append((name, parsed))
            continue
        bad += 1
    return out, bad


def _stats(requests: int, ok: int, rps: float, buckets: Sequence[int] | None,
           bounds: Sequence[float]) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {
        "requests": requests,
        "rps": round(rps, 3),
        "success_rate": round(ok / requests, 4) if requests else None,
    }
    for name, q in QUANTILES:
        v = quantile(bounds, buckets, q) if buckets else None
        row[name] = None if v is None else round(v, 3)
    return row


def _add(into: list[int], more: Sequence[int]) -> None:
    if len(into) < len(more):
        into.extend([0] * (len(more) - len(into)))
    for i, c in enumerate(more):
        into[i] += c


def merge(nodes: Mapping[str, Any], service: str | None = None) -> dict[str, Any]:
    """The cluster's view from each agent's window (``{name: NodeWindow}``; an answer with
    ``ok`` false is left out and listed in ``unreachable``). ``service``: only its rows."""
    bounds: list[float] = []
    svc_n: dict[tuple[str, str], list[float]] = {}  # (dir, svc) -> [requests, ok, rps]
    dst_n: dict[tuple[str, str, str], list[float]] = {}
    path_n: dict[tuple[str, str, str, str, str], list[float]] = {}
    route_seen: dict[tuple[str, str], int] = {}  # (route, dest) -> outbound requests
    svc_h: dict[tuple[str, str], list[int]] = {}
    dst_h: dict[tuple[str, str, str], list[int]] = {}
    configured: dict[str, list[tuple[str, int]]] = {}
    denied: dict[tuple[str, str], int] = {}
    answered: list[str] = []
    unreachable: list[str] = []
    windows: list[float] = []
    bad_rows = 0
    for name, data in nodes.items():
        if not isinstance(data, Mapping) or not data.get("ok", True):
            unreachable.append(name)
            continue
        node, bad = parse_node(data)
        bad_rows += bad
        answered.append(name)
        windows.append(node["window_s"])
        bounds = bounds or node.get("bounds_ms", [])
        per_s = 1.0 / node["window_s"] if node["window_s"] else 0.0
        for direction, svc, route, dest, ep, n, ok in node["counts"]:
            if service is not None and svc != service:
                continue
            for acc in (
                svc_n.setdefault((direction, svc), [0, 0, 0.0]),
                dst_n.setdefault((direction, svc, dest), [0, 0, 0.0]),
                path_n.setdefault((direction, route, svc, dest, ep), [0, 0, 0.0]),
            ):
                acc[0] += n
                acc[1] += ok
                acc[2] += n * per_s
            if direction == "outbound" and route:
                route_seen[(route, dest)] = route_seen.get((route, dest), 0) + n
        for direction, svc, dest, buckets in node["latency"]:
            if service is not None and svc != service:
                continue
            _add(svc_h.setdefault((direction, svc), []), buckets)
            _add(dst_h.setdefault((direction, svc, dest), []), buckets)
        for svc, policy, n in node["denied"]:
            if service is None or svc == service:
                denied[(svc, policy)] = denied.get((svc, policy), 0) + n
        for route, dests in node["routes"]:
            configured.setdefault(route, dests)  # the first answer (this agent's own) wins
    services = [
        {
            "direction": d,
            "service": s,
            **_stats(int(a[0]), int(a[1]), a[2], svc_h.get((d, s)), bounds),
        }  # fmt: skip
        for (d, s), a in sorted(svc_n.items())
    ]
    destinations = []
    for (d, s, dest), a in sorted(dst_n.items()):
        total = svc_n[(d, s)][0]
        row = {"direction": d, "service": s, "destination": dest,
               **_stats(int(a[0]), int(a[1]), a[2], dst_h.get((d, s, dest)), bounds),
               "share": round(a[0] / total, 4) if total else None}  # fmt: skip
        destinations.append(row)
    routes = []
    for route, dests in sorted(configured.items()):
        weight_total = sum(w for _, w in dests)
        seen_total = sum(route_seen.get((route, label), 0) for label, _ in dests)
        if service is not None and not any(label.split("@")[0] == service for label, _ in dests):
            continue
        rows = []
        for label, w in dests:
            seen = route_seen.get((route, label), 0)
            rows.append({
                "destination": label,
                "weight": w,
                "configured_share": round(w / weight_total, 4) if weight_total else None,
                "requests": seen,
                "observed_share": round(seen / seen_total, 4) if seen_total else None,
            })  # fmt: skip
        routes.append({"route": route, "requests": seen_total, "destinations": rows})
    paths = [
        {
            "direction": k[0],
            "route": k[1],
            "service": k[2],
            "destination": k[3],
            "node": k[4],
            "requests": int(a[0]),
            "rps": round(a[2], 3),
            "success_rate": round(a[1] / a[0], 4) if a[0] else None,
        }  # fmt: skip
        for k, a in sorted(path_n.items(), key=lambda kv: (-kv[1][2], kv[0]))[:TOP_PATHS]
    ]
    return {
        "window_s": round(max(windows), 3) if windows else 0.0,
        "nodes": sorted(answered),
        "unreachable": sorted(unreachable),
        "bad_rows": bad_rows,
        "services": services,
        "destinations": destinations,
        "routes": routes,
        "paths": paths,
        "denied": [
            {"service": s, "policy": p, "requests": n}
            for (s, p), n in sorted(denied.items(), key=lambda kv: -kv[1])
        ][:MAX_ROWS],
    }


__all__ = ["MAX_ROWS", "TOP_PATHS", "CountRow", "LatencyRow", "merge", "parse_node", "quantile"]
