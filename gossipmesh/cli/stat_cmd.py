"""``gossipmesh stat [SERVICE]`` and ``gossipmesh top``: the mesh's traffic over the last seconds,
from any node.

Both read ``GET /v1/stats`` of one agent, which asks every alive agent for its window over the
gossip port and merges them (agent/traffic.py, gossipmesh/traffic_stats.py): ``stat`` shows per
service and per destination subset the success rate, rps and p50/p95/p99, and per route the
configured split next to the observed one; ``top`` redraws the busiest paths (route, destination,
endpoint node) every ``--interval`` seconds, for ``--iterations`` rounds (0: until Ctrl-C) or
``--once``. Rows are the callers' side (``outbound``) unless ``--inbound``. Latencies are
estimates from the proxies' histogram buckets.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gossipmesh.cli.common import (
    DEFAULT_AGENT,
    AgentOpt,
    InputProblem,
    JsonOpt,
    client,
    out,
    print_json,
    run,
)

WindowOpt = Annotated[
    float, typer.Option("--window", help="Seconds of traffic to summarise (1-60).")
]
InboundOpt = Annotated[
    bool, typer.Option("--inbound", help="The destinations' side instead of the callers'.")
]


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:.1f}"


def _bad(message: str) -> None:
    raise InputProblem(message)


def _check_window(window: float) -> None:
    if not 1 <= window <= 60:
        raise InputProblem(f"--window {window:g}: give 1 to 60 seconds")


def stat_tables(data: dict[str, Any], direction: str) -> Group:
    """The rich view of a ``/v1/stats`` answer: services, destinations, routes."""
    head = Text(
        f"last {data.get('window_s', 0):g} s, {direction}, from {len(data.get('nodes') or [])} "
        f"agent(s)"
        + (
            f"; unreachable: {', '.join(data['unreachable'])}" if data.get("unreachable") else ""
        ),  # fmt: skip
        style="dim",
    )
    svc = Table(show_header=True, header_style="bold", box=None, title_justify="left")
    for col in ("SERVICE", "DESTINATION", "SHARE", "SUCCESS", "RPS", "P50 ms", "P95 ms", "P99 ms",
                "REQUESTS"):  # fmt: skip
        svc.add_column(col, justify="left" if col in ("SERVICE", "DESTINATION") else "right")
    dests = [d for d in data.get("destinations") or [] if d.get("direction") == direction]
    for s in data.get("services") or []:
        if s.get("direction") != direction:
            continue
        # The empty service: requests whose Host named no service (no_route); never the Host.
        svc.add_row(s["service"] or "(no route)", "", "", _pct(s["success_rate"]), f"{s['rps']:.2f}",
                    _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"]), str(s["requests"]),
                    style="bold")  # fmt: skip
        for d in dests:
            if d["service"] == s["service"]:
                svc.add_row("", d["destination"], _pct(d["share"]), _pct(d["success_rate"]),
                            f"{d['rps']:.2f}", _ms(d["p50_ms"]), _ms(d["p95_ms"]),
                            _ms(d["p99_ms"]), str(d["requests"]))  # fmt: skip
    parts: list[Any] = [head, svc]
    routes = data.get("routes") or []
    if routes and direction == "outbound":
        rt = Table(show_header=True, header_style="bold", box=None)
        for col in ("ROUTE", "DESTINATION", "WEIGHT", "CONFIGURED", "OBSERVED", "REQUESTS"):
            rt.add_column(col, justify="left" if col in ("ROUTE", "DESTINATION") else "right")
        for r in routes:
            for i, d in enumerate(r["destinations"]):
                rt.add_row(r["route"] if i == 0 else "", d["destination"], str(d["weight"]),
                           _pct(d["configured_share"]), _pct(d["observed_share"]),
                           str(d["requests"]))  # fmt: skip
        parts += [Text(""), rt]
    return Group(*parts)


def stat_cmd(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    window: WindowOpt = 10.0,
    inbound: InboundOpt = False,
    agent: AgentOpt = DEFAULT_AGENT,
    as_json: JsonOpt = False,
) -> None:
    """Success rate, rps and p50/p95/p99 per service and destination subset, and each route's
    configured split next to the observed one, over every alive agent."""
    run(lambda: _check_window(window))
    admin = client(agent)
    data = run(lambda: admin.stats(window, service))
    if as_json:
        print_json(data)
        return
    out.print(stat_tables(data, "inbound" if inbound else "outbound"))


def top_table(data: dict[str, Any], direction: str, limit: int) -> Group:
    t = Table(show_header=True, header_style="bold", box=None)
    for col in ("RPS", "SUCCESS", "ROUTE", "DESTINATION", "NODE", "REQUESTS"):
        t.add_column(col, justify="right" if col in ("RPS", "SUCCESS", "REQUESTS") else "left")
    paths = [p for p in data.get("paths") or [] if p.get("direction") == direction][:limit]
    for p in paths:
        t.add_row(f"{p['rps']:.2f}", _pct(p["success_rate"]), p["route"] or "-",
                  p["destination"] or "-", p["node"] or "-", str(p["requests"]))  # fmt: skip
    head = Text(f"busiest paths, last {data.get('window_s', 0):g} s, {direction}, "
                f"{time.strftime('%H:%M:%S')}", style="dim")  # fmt: skip
    return Group(head, t)


def top_cmd(
    window: WindowOpt = 10.0,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws.")] = 2.0,
    iterations: Annotated[
        int, typer.Option("--iterations", help="Redraws before exiting (0: until Ctrl-C).")
    ] = 0,
    once: Annotated[bool, typer.Option("--once", help="Show one round and exit.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Paths shown.")] = 20,
    inbound: InboundOpt = False,
    agent: AgentOpt = DEFAULT_AGENT,
    as_json: JsonOpt = False,
) -> None:
    """A live view of the busiest paths (route, destination subset, endpoint node) over every
    alive agent; with --json one JSON object per round."""
    run(lambda: _check_window(window))
    if interval <= 0 or limit < 1 or iterations < 0:
        run(lambda: _bad("--interval must be > 0, --limit >= 1, --iterations >= 0"))
    rounds = 1 if once else iterations
    admin = client(agent)
    direction = "inbound" if inbound else "outbound"

    def fetch() -> dict[str, Any]:
        data = run(lambda: admin.stats(window))
        data["paths"] = [p for p in data.get("paths") or []
                         if p.get("direction") == direction][:limit]  # fmt: skip
        return data

    if as_json or rounds == 1 or not out.is_terminal:
        n = 0
        while True:
            data = fetch()
            if as_json:
                print_json({k: data[k] for k in ("window_s", "nodes", "unreachable", "paths")})
            else:
                out.print(top_table(data, direction, limit))
            n += 1
            if rounds and n >= rounds:
                return
            time.sleep(interval)
    with Live(top_table(fetch(), direction, limit), console=out, auto_refresh=False) as live:
        n = 1
        while not rounds or n < rounds:
            time.sleep(interval)
            live.update(top_table(fetch(), direction, limit), refresh=True)
            n += 1


def install(app: typer.Typer) -> None:
    app.command("stat")(stat_cmd)
    app.command("top")(top_cmd)
