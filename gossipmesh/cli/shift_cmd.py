"""``gossipmesh shift ROUTE ...`` writes a scheduled traffic shift; ``gossipmesh shift status
ROUTE`` shows where every alive agent is in it (config/shift.py, agent/shift_status.py).

The write reads the route through the agent, sets ``shift`` on the chosen destination (by
``--dest INDEX`` or ``--service`` and optional ``--tags``) and writes the route back, signed like
every config write (``--operator-key``, or the playground operator). Nobody writes again: every
agent moves through the steps on its own clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

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
from gossipmesh.cli.config_cmd import USAGE_STATUSES, OperatorKeyOpt, signed_write

T = TypeVar("T")
DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str, what: str) -> int:
    """``500ms``, ``30s``, ``10m``, ``2h``, ``1d`` in milliseconds; InputProblem otherwise."""
    m = DURATION_RE.match(text.strip())
    if m is None:
        raise InputProblem(f"{what}: {text!r} is not a duration like 30s, 10m or 2h")
    return int(m.group(1)) * UNIT_MS[m.group(2)]


def _run(fn: Callable[[], T]) -> T:
    return run(fn, USAGE_STATUSES)


def pick_destination(dests: list[dict[str, Any]], index: int | None, service: str | None,
                     tags: list[str]) -> int:  # fmt: skip
    if index is not None:
        if not 0 <= index < len(dests):
            raise InputProblem(f"--dest {index}: the route has {len(dests)} destinations")
        return index
    found = [i for i, d in enumerate(dests)
             if d.get("service") == service and set(tags) <= set(d.get("tags") or [])]  # fmt: skip
    if len(found) != 1:
        raise InputProblem(f"--service {service} --tags {','.join(tags)}: matches {len(found)} "
                           "destinations (use --dest INDEX)")  # fmt: skip
    return found[0]


def shift_cmd(
    route: Annotated[str, typer.Argument(help="Route name, or `status`.")],
    status_of: Annotated[str | None, typer.Argument(help="With `status`: the route.")] = None,
    to: Annotated[int | None, typer.Option("--to", help="Weight at the end.")] = None,
    from_: Annotated[
        int | None,
        typer.Option("--from", help="Weight at the start (default: the destination's weight)."),
    ] = None,  # fmt: skip
    dest: Annotated[int | None, typer.Option("--dest", help="Destination index.")] = None,
    service: Annotated[str | None, typer.Option("--service", help="Destination service.")] = None,
    tags: Annotated[str, typer.Option("--tags", help="Destination tags, comma-separated.")] = "",
    start_in: Annotated[str, typer.Option("--start-in", help="Start after this long.")] = "0s",
    duration: Annotated[str, typer.Option("--duration", help="Whole shift, e.g. 10m.")] = "10m",
    steps: Annotated[int, typer.Option("--steps", help="Equal steps.")] = 10,
    pause_after_step: Annotated[int, typer.Option("--pause-after-step")] = 0,
    pause: Annotated[str, typer.Option("--pause", help="Hold this long after that step.")] = "0s",
    agent: AgentOpt = DEFAULT_AGENT,
    operator_key: OperatorKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Shift a route destination's weight on a schedule every agent follows on its own clock;
    `shift status ROUTE` shows where each alive agent is."""
    admin = client(agent)
    if route == "status":
        if not status_of:
            raise typer.BadParameter("shift status ROUTE: the route is missing")
        data = _run(lambda: admin.call("GET", f"/v1/shift/{status_of}"))
        if as_json:
            print_json(data)
        else:
            show_status(data)
        return
    if to is None:
        raise typer.BadParameter("--to WEIGHT is required")
    key = f"route/{route}"
    current = _run(lambda: admin.config(key)).get("entities", {}).get(key)
    if current is None:
        raise InputProblem(f"{key}: no such route")
    dests = list(current.get("destinations") or [])
    tag_list = [t for t in tags.split(",") if t]
    i = _run(lambda: pick_destination(dests, dest, service, tag_list))
    start_ms = int(time.time() * 1000) + _run(lambda: parse_duration_ms(start_in, "--start-in"))
    shift: dict[str, Any] = {
        "from": int(dests[i].get("weight", 1)) if from_ is None else from_,
        "to": to,
        "start_ms": start_ms,
        "duration_ms": _run(lambda: parse_duration_ms(duration, "--duration")),
        "steps": steps,
    }
    pause_ms = _run(lambda: parse_duration_ms(pause, "--pause"))
    if pause_after_step and pause_ms:
        shift.update(pause_after_step=pause_after_step, pause_ms=pause_ms)
    dests[i] = {**dests[i], "shift": shift}
    signed_write(admin, operator_key, {key: {**current, "destinations": dests}})
    out.print(f"{key}: destination {i} shifts {shift['from']} -> {to} in {steps} steps over "
              f"{duration}, from {time.strftime('%H:%M:%S', time.localtime(start_ms / 1000))}")  # fmt: skip


def show_status(data: dict[str, Any]) -> None:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Agent", "Destination", "Weight", "Step", "Next step"):
        table.add_column(col)
    for name, node in (data.get("nodes") or {}).items():
        if not node.get("ok"):
            table.add_row(name, "[red]" + str(node.get("error") or "no answer") + "[/]", "", "", "")
            continue
        for d in node.get("destinations") or []:
            label = d["service"] + (f" [{','.join(d['tags'])}]" if d.get("tags") else "")
            sh = d.get("shift") or {}
            step = f"{sh['step']}/{sh['steps']}" if sh else "-"
            nxt = sh.get("next_change_ms")
            when = time.strftime("%H:%M:%S", time.localtime(nxt / 1000)) if nxt else "-"
            table.add_row(name, label, str(d["weight"]), step, when)
    out.print(table)


def install(app: typer.Typer) -> None:
    app.command("shift")(shift_cmd)
