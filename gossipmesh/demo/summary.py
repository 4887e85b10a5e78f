"""The demo's summary: one JSON-able dict (``--json``) and its rendering for people.

Theory of operation
-------------------
The summary is computed once, after traffic stopped and the watchers finished, from three
sources of truth: the driver's samples (what the application saw: every request, its status,
latency and the api version behind it), the script's measurements (what the agents said, and
when) and the proxies' counters (retries, ejections). The same dict is printed as JSON and as
text, so the two can never disagree. Requests to ``/admin`` are meant to be refused (the demo's
deny policy): they are reported in their own ``policy`` block and left out of every other figure
(``requests``, the split, the kill window), so a 403 there is a success of the policy, not a
failure of the mesh. ``cleanup`` is filled in after the processes are stopped and
the temp dir removed, by the code that did it.

The canary split is a weighted random draw per request, so the v2 share is judged against the
configured weight with a tolerance of ``SPLIT_SIGMAS`` binomial standard deviations for the number
of requests seen (never under ``SPLIT_TOLERANCE_MIN``): a failure then means a wrong split, not
bad luck (one run in ~150,000). A fixed +-8 points was 2.3 sigmas for a 50 % share over 200
requests, and failed about one run in 40.

The split "after" (50/50) ends where the scheduled shift starts; ``scheduled_shift`` then judges
each step of it (schedule.py) the same way, over the requests sent while that step was in force
(the last step until traffic stopped).
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from gossipmesh.demo.plan import ADMIN_POLICY, CANARY_AFTER, CANARY_BEFORE, CANARY_ROUTE, Plan
from gossipmesh.demo.traffic import Sample, split, summarize

SPLIT_SIGMAS = 4.5
SPLIT_TOLERANCE_MIN = 0.02
SCHEMA = "gossipmesh.demo.summary/1"


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def _split_block(samples: list[Sample], weights: tuple[int, int]) -> dict[str, Any]:
    counts = split(samples)
    n = counts["v1"] + counts["v2"]
    want = weights[1] / sum(weights)
    share = counts["v2"] / n if n else None
    tol = split_tolerance(want, n)
    return {
        "weights": {"v1": weights[0], "v2": weights[1]},
        "requests": n,
        "v1": counts["v1"],
        "v2": counts["v2"],
        "v2_share": _r(share, 4),
        "tolerance": _r(tol, 4),
        "within_tolerance": share is not None and abs(share - want) <= tol,
    }


def split_tolerance(share: float, requests: int) -> float:
    """How far a measured share may stray from ``share`` over ``requests`` random draws."""
    if requests <= 0:
        return 1.0
    sd = math.sqrt(share * (1.0 - share) / requests)
    return max(SPLIT_TOLERANCE_MIN, SPLIT_SIGMAS * sd)


CANARY_ROUTE_NAME = CANARY_ROUTE.removeprefix("route/")
STAT_AGREE_POINTS = 2.0  # `gossipmesh stat` and the dashboard agree on the canary split within this


def stat_block(answer: dict[str, Any] | None, samples: list[Sample]) -> dict[str, Any] | None:
    """``gossipmesh stat``'s canary split (the proxies' counters over its window, every agent
    merged: ``GET /v1/stats``) next to the dashboard's (the driver's answers over the same
    seconds). ``answer``: ``{"stats": ..., "asked_at_s": ...}``, None when it was not asked."""
    if not answer:
        return None
    stats, asked_at_s = answer["stats"], answer["asked_at_s"]
    route = next((r for r in stats.get("routes") or [] if r.get("route") == CANARY_ROUTE_NAME),
                 None)  # fmt: skip
    if route is None:
        return None
    counts = {"v1": 0, "v2": 0}
    for d in route["destinations"]:
        tag = str(d.get("destination", "")).partition("@")[2]
        if tag in counts:
            counts[tag] += int(d.get("requests") or 0)
    window_s = float(stats.get("window_s") or 0.0)
    seen = split(s for s in samples if s.t_s >= asked_at_s - window_s)
    shares = {}
    for name, c in (("stat", counts), ("dashboard", seen)):
        n = c["v1"] + c["v2"]
        shares[name] = c["v2"] / n if n else None
    diff = None
    if shares["stat"] is not None and shares["dashboard"] is not None:
        diff = abs(shares["stat"] - shares["dashboard"]) * 100
    return {
        "window_s": _r(window_s),
        "agents": stats.get("nodes", []),
        "stat": {**counts, "v2_share": _r(shares["stat"], 4)},
        "dashboard": {**seen, "v2_share": _r(shares["dashboard"], 4)},
        "difference_points": _r(diff, 2),
        "agree": diff is not None and diff <= STAT_AGREE_POINTS,
    }


def build_summary(
    plan: Plan,
    samples: list[Sample],
    span_s: float,
    results: dict[str, dict[str, Any]],
    members_at_start: dict[str, dict[str, str]],
    proxy: dict[str, dict[str, float]],
    events: list[dict[str, Any]],
    interrupted: bool,
    temp_dir: str,
    pids: list[int],
    security: dict[str, Any] | None = None,
    stat: dict[str, Any] | None = None,
) -> dict[str, Any]:
    admin = [s for s in samples if s.admin]
    samples = [s for s in samples if not s.admin]
    total = summarize(samples, span_s)
    shift = results.get("shift", {})
    kill = results.get("kill", {})
    shift_at = shift.get("at_s")
    after_from = shift.get("seen_at_entry_s")
    before = [s for s in samples if shift_at is None or s.t_s < shift_at]
    sched = results.get("scheduled_shift")
    after_to = sched["start_s"] if sched else float("inf")
    after = [s for s in samples if after_from is not None and after_from <= s.t_s < after_to]
    slow_ok = [s for s in samples if s.slow and s.ok]
    slow: dict[str, Any] = {"requests": len(slow_ok), "v1": sum(1 for s in slow_ok if s.version == "v1"),
            "v2": sum(1 for s in slow_ok if s.version == "v2")}  # fmt: skip
    if slow["v2"]:
        # Which instance broke the pin, and when: what a reader needs to chase it.
        slow["off_route"] = [{"at_s": _r(s.t_s), "api": s.api, "latency_ms": _r(s.latency_ms)}
                             for s in slow_ok if s.version != "v1"][:5]  # fmt: skip
    partition = dict(results.get("partition", {}))
    heal = results.get("heal", {})
    if heal:
        partition["heal_at_s"] = heal["at_s"]
        partition.update({k: v for k, v in heal.items() if k not in ("node", "at_s")})
    kill_window: dict[str, Any] = {}
    if kill.get("at_s") is not None:
        end = kill["at_s"] + (kill.get("detection_s") or 0.0) + 1.0
        during = [s for s in samples if kill["at_s"] <= s.t_s <= end]
        w = summarize(during, 1.0)
        kill_window = {"requests": w.requests, "ok": w.ok,
                       "success_rate": _r(w.success_rate, 4)}  # fmt: skip
    all_alive = bool(members_at_start) and all(
        len(view) == len(plan.nodes) and all(s == "alive" for s in view.values())
        for view in members_at_start.values()
    )
    return {
        "schema": SCHEMA,
        "nodes": len(plan.nodes),
        "duration_s": plan.duration_s,
        "traffic_s": _r(span_s),
        "interrupted": interrupted,
        "profile": "local",
        "layout": {n.name: [i.label for i in n.instances] for n in plan.nodes},
        "security": security or {},
        "members_at_start": members_at_start[plan.entry.name] if members_at_start else {},
        "all_alive_at_start": all_alive,
        "requests": {
            "total": total.requests,
            "ok": total.ok,
            "failed": total.requests - total.ok,
            "success_rate": _r(total.success_rate, 4),
            "rate_per_s": _r(total.rate_per_s, 1),
            "p50_ms": _r(total.p50_ms),
            "p99_ms": _r(total.p99_ms),
            "max_ms": _r(total.max_ms),
            "by_status": total.statuses,
        },
        "canary": {
            "before": _split_block(before, CANARY_BEFORE),
            "after": _split_block(after, CANARY_AFTER) if after_from is not None else None,
        },
        "scheduled_shift": scheduled_block(sched, samples, span_s) if sched else None,
        "stat_vs_dashboard": stat_block(stat, samples),
        "path_route": {"path": "/slow -> /api/slow", "pinned_to": "v1", **slow},
        "policy": policy_block(admin, proxy),
        "partition": partition,
        "config_change": {**shift},
        "kill": {**kill, "requests_until_detected": kill_window},
        "proxy": proxy,
        "events": events,
        "temp_dir": temp_dir,
        "pids": pids,
    }


def scheduled_block(sched: dict[str, Any], samples: list[Sample], end_s: float) -> dict[str, Any]:
    """The scheduled shift as written, and per step the expected and the observed v2 share."""
    steps = []
    for k, weights in enumerate(sched["weights"]):
        lo = sched["start_s"] + k * sched["step_s"]
        hi = lo + sched["step_s"] if k < sched["steps"] else max(end_s, lo)
        block = _split_block([s for s in samples if lo <= s.t_s < hi], (weights[0], weights[1]))
        steps.append({"step": k, "from_s": _r(lo, 3), "to_s": _r(hi, 3),
                      "expected_v2_share": _r(weights[1] / sum(weights), 4), **block})  # fmt: skip
    return {**{k: v for k, v in sched.items() if k != "weights"}, "per_step": steps}


def policy_block(admin: list[Sample], proxy: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The deny policy biting: /admin requests, those refused by a 403 naming it, the rest."""
    denied = sum(1 for s in admin if s.status == 403 and s.policy == ADMIN_POLICY)
    statuses = summarize(admin, 1.0).statuses
    # An /admin request that got through: which api instance answered it (on web's own node,
    # the outbound proxy reaches the instance directly and no inbound checks the policy).
    answered_by: dict[str, int] = {}
    for s in admin:
        if s.ok:
            answered_by[s.api] = answered_by.get(s.api, 0) + 1
    return {
        "policy": ADMIN_POLICY,
        "path": "/admin -> /api/admin",
        "requests": len(admin),
        "denied": denied,
        "other": len(admin) - denied,
        "by_status": statuses,
        "answered_by": dict(sorted(answered_by.items())),
        # What api's inbound proxies counted (gossipmesh_proxy_denied_total), as last scraped.
        "denied_at_inbound": proxy.get("denied", {}).get(f"api {ADMIN_POLICY}", 0.0),
    }


def render(console: Console, s: dict[str, Any]) -> None:
    req = s["requests"]
    rate = req["success_rate"]
    title = "gossipmesh demo summary" + (" (interrupted)" if s["interrupted"] else "")
    t = Table(title=title, show_header=False, box=None, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("nodes", f"{s['nodes']} agents, profile local, {s['traffic_s']} s of traffic")
    sec = s.get("security") or {}
    if sec:
        t.add_row("secured", f"CA {sec['root_fingerprint'][:16]}, {sec['node_certificates']} node "
                  f"certs, operator key {sec['operator']} (signs every config write), "
                  "encrypted gossip")  # fmt: skip
    t.add_row("requests", f"{req['total']} ({req['rate_per_s']}/s), {req['ok']} ok, "
              f"success rate {_pct(rate)}")  # fmt: skip
    t.add_row("latency", f"p50 {_ms(req['p50_ms'])}, p99 {_ms(req['p99_ms'])}, "
              f"max {_ms(req['max_ms'])}")  # fmt: skip
    for key, label in (("before", "canary before"), ("after", "canary after")):
        b = s["canary"][key]
        if b is None:
            t.add_row(label, "-")
            continue
        w = b["weights"]
        ok = "[green]within[/]" if b["within_tolerance"] else "[red]outside[/]"
        t.add_row(label, f"v1/v2 = {b['v1']}/{b['v2']} (v2 {_pct(b['v2_share'])}; set "
                  f"{w['v1']}/{w['v2']}; {ok} ±{b['tolerance'] * 100:.0f} pts)")  # fmt: skip
    sc = s.get("scheduled_shift")
    if sc:
        seen = ", ".join(f"{_whole(p['expected_v2_share'])}→{_whole(p['v2_share'])}"
                         f" (n={p['requests']})" for p in sc["per_step"])  # fmt: skip
        t.add_row("scheduled shift", f"v2 by step, set→seen %: {seen}; steps of "
                  f"{sc['step_s']:.1f} s from t={sc['start_s']:.1f} s")  # fmt: skip
    st = s.get("stat_vs_dashboard")
    if st:
        ok = "[green]agree[/]" if st["agree"] else "[red]differ[/]"
        n = st["stat"]["v1"] + st["stat"]["v2"]
        t.add_row("stat vs dashboard", f"canary v2 share over the last {st['window_s']:g} s: "
                  f"`gossipmesh stat` {_pct(st['stat']['v2_share'])} (n={n}), dashboard "
                  f"{_pct(st['dashboard']['v2_share'])}: {ok} within {STAT_AGREE_POINTS:g} "
                  "pts")  # fmt: skip
    pr = s["path_route"]
    t.add_row("path route", f"/slow: v1 {pr['v1']}, v2 {pr['v2']} (pinned to v1)")
    po = s.get("policy") or {}
    if po:
        t.add_row("policy", f"{po['policy']}: /admin denied {po['denied']} of {po['requests']} "
                  f"(403 at api's inbound; {po['denied_at_inbound']:g} counted there)")  # fmt: skip
    p = s["partition"]
    if p:
        t.add_row("partition", f"{p.get('node')}: suspect after {_sec(p.get('suspect_after_s'))}, "
                  f"dead after {_sec(p.get('dead_after_s'))}; healed: alive again after "
                  f"{_sec(p.get('heal_s'))}, config converged after "
                  f"{_sec(p.get('converged_s'))}")  # fmt: skip
    c = s["config_change"]
    if c:
        t.add_row("config change", f"{c['key']} via {c['written_via']}: on all agents after "
                  f"{_sec(c.get('propagation_s'))}")  # fmt: skip
    k = s["kill"]
    if k.get("node"):
        w = k.get("requests_until_detected") or {}
        t.add_row("kill", f"{k['node']}: suspect after {_sec(k.get('suspect_after_s'))}, "
                  f"detection time {_sec(k.get('detection_s'))}; meanwhile {w.get('requests', 0)}"
                  f" requests, success {_pct(w.get('success_rate'))}")  # fmt: skip
    px = s["proxy"]
    t.add_row("proxy", "retries " + _kv(px.get("retries", {})) + "; ejections "
              + _kv(px.get("ejections", {})))  # fmt: skip
    t.add_row("cleanup", _cleanup(s.get("cleanup")))
    console.print(t)


def _cleanup(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    return (f"{c['processes']} processes stopped" + ("" if c["all_stopped"] else " [red](some left!)[/]")
            + ("; temp dir removed" if c["temp_dir_removed"] else "; [red]temp dir left[/]"))  # fmt: skip


def _kv(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(d.items()) if v) or "none"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _whole(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def _sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"
