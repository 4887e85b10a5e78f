"""Rich rendering for the CLI: member tables with state colours, key and status summaries."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}


def members_table(members: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Name", "Address", "State", "Incarnation", "Meta bytes"):
        table.add_column(col)
    for m in members:
        state = str(m.get("state"))
        meta_b64 = str(m.get("meta") or "")
        table.add_row(
            str(m.get("name")),
            str(m.get("address")),
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            str(m.get("incarnation")),
            str(len(meta_b64) * 3 // 4 - meta_b64.count("=")),
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


def event_line(event: dict[str, Any]) -> str:
    ts_ms = int(event.get("ts_ms") or 0)
    clock = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"
    kind = str(event.get("event"))
    state = event.get("state")
    style = STATE_STYLE.get(str(state), "white")
    rest = f" {event.get('address')} [{style}]{state}[/]" if state else ""
    return f"{clock} {kind:<14} {event.get('member')}{rest}"
