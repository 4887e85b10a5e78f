"""Rich rendering for the CLI: member tables with state colours, key and status summaries."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}


def member_services(name: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``members`` adds to a member from the catalog (``GET /v1/services``): its services'
    names, their tags, and its inbound proxy address (None while it publishes no instance; the
    agent's own comes from ``/v1/self``)."""
    mine = [i for i in instances if i.get("node") == name]
    inbound = sorted({str(i["inbound"]) for i in mine if i.get("inbound")})
    return {
        "services": sorted({str(i.get("service")) for i in mine}),
        "tags": sorted({str(t) for i in mine for t in i.get("tags") or []}),
        "proxy": inbound[0] if inbound else None,
    }


def members_table(members: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Name", "Address", "State", "Inc", "Services", "Tags", "Proxy"):
        table.add_column(col)
    for m in members:
        state = str(m.get("state"))
        table.add_row(
            escape(str(m.get("name"))),
            escape(str(m.get("address"))),
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            str(m.get("incarnation")),
            escape(",".join(m.get("services") or []) or "-"),
            escape(",".join(m.get("tags") or []) or "-"),
            escape(str(m.get("proxy") or "-")),
        )
    return table


def keys_result(console: Console, result: dict[str, Any]) -> None:
    n = result.get("num_nodes", 0)
    console.print(f"{result.get('num_ok', 0)}/{n} nodes ok ({result.get('op')})")
    keys = result.get("keys") or {}
    nodes = result.get("nodes") or {}
    if keys:
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("Key id")
        table.add_column("Held by")
        table.add_column("Primary on")
        for key, count in keys.items():
            primary = sum(1 for node in nodes.values() if node.get("primary") == key)
            table.add_row(key, f"{count}/{n}", f"{primary}/{n}")
        console.print(table)
    for name, node in (result.get("nodes") or {}).items():
        if not node.get("ok"):
            console.print(f"[red]{name}: {node.get('error')}[/]")


def status(console: Console, health: dict[str, Any]) -> None:
    console.print(
        f"[bold]{health.get('name')}[/] {health.get('address')} "
        f"cluster={health.get('cluster')} status={health.get('status')} "
        f"health_score={health.get('health_score')} incarnation={health.get('incarnation')}"
    )
    counts = health.get("members") or {}
    parts = [f"[{STATE_STYLE.get(s, 'white')}]{s}={n}[/]" for s, n in sorted(counts.items())]
    console.print("members: " + (" ".join(parts) or "none"))
    for reason in health.get("reasons") or []:
        console.print(f"[yellow]degraded: {reason}[/]")
    dropped = health.get("dropped") or {}
    console.print(
        "dropped: " + (" ".join(f"{k}={v}" for k, v in dropped.items()) if dropped else "none")
    )
    plane = health.get("dataplane")
    if isinstance(plane, dict):
        dataplane(console, plane)
    workers = health.get("proxy_workers")
    if isinstance(workers, dict):
        rows = [w for w in workers.get("workers") or [] if isinstance(w, dict)]
        console.print(
            f"proxy workers: {workers.get('up')}/{workers.get('count')} serving "
            + " ".join(
                f"{w.get('worker')}:{w.get('state')}(pid {w.get('pid')}, starts {w.get('starts')})"
                for w in rows
            )  # fmt: skip
        )


def dataplane(console: Console, plane: dict[str, Any]) -> None:
    """An external data plane's state, and what it cannot do (docs/DATAPLANES.md)."""
    worker = plane.get("worker_pid") or plane.get("worker_pids")
    console.print(
        f"dataplane: {plane.get('engine')} pid={plane.get('pid')} worker={worker} "
        f"running={plane.get('running')} reloads={plane.get('reloads')} "
        f"runtime_ops={plane.get('runtime_ops')} apply_failures={plane.get('apply_failures')} "
        f"restarts={plane.get('restarts')}"
    )
    if plane.get("last_error"):
        console.print(f"[red]dataplane error: {escape(str(plane['last_error']))}[/]")
    for item in plane.get("left_out") or []:
        console.print(f"[yellow]left out of the {plane.get('engine')} config: {escape(item)}[/]")
    for item in plane.get("skipped_endpoints") or []:
        console.print(f"[yellow]endpoint not used (same dest in one backend): {escape(item)}[/]")
    for item in plane.get("unsupported") or []:
        console.print(f"[dim]not supported by {plane.get('engine')}: {escape(item)}[/]")


def event_line(event: dict[str, Any]) -> str:
    ts_ms = int(event.get("ts_ms") or 0)
    clock = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"
    kind = str(event.get("event"))
    state = event.get("state")
    style = STATE_STYLE.get(str(state), "white")
    rest = f" {event.get('address')} [{style}]{state}[/]" if state else ""
    return f"{clock} {kind:<14} {event.get('member')}{rest}"
