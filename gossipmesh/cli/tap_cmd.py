"""``gossipmesh tap SERVICE``: live requests to or from SERVICE, from every alive agent.

A thin client of ``GET /v1/tap`` (agent/tap.py): the agent it asks fans the tap out to every alive
peer over the gossip port and streams one JSON line per matching request. Filters: ``--path``
(a prefix), ``--method``, ``--status`` (``503`` or ``5xx``), ``--max-rps`` (the whole tap's cap;
the agents count what they skip). ``--count N`` stops after N requests, ``--duration S`` after S
seconds (the agent ends every tap after 15 minutes anyway). ``--json`` prints the agent's lines
as they come (the ``tap-start`` and ``tap-end`` lines included); otherwise one line per request:
time, node, direction, method, authority and path, status, destination and endpoint, duration,
retries, error, trace id. No body and no header value ever reaches it.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from gossipmesh.cli.common import DEFAULT_AGENT, AgentOpt, JsonOpt, client, out, run

STATUS_STYLE = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}


def request_line(rec: dict[str, Any]) -> str:
    """One request as a rich-markup line."""
    status = int(rec.get("status") or 0)
    style = STATUS_STYLE.get(status // 100, "white")
    ts = str(rec.get("ts") or "")[11:23]
    arrow = "->" if rec.get("direction") == "outbound" else "<-"
    where = f"{rec.get('destination') or rec.get('service')}@{rec.get('endpoint') or '-'}"
    extra = ""
    if rec.get("retries"):
        extra += f" retries={rec['retries']}"
    if rec.get("error"):
        extra += f" error={rec['error']}"
    text = (f"{ts} {rec.get('node')} {arrow} {rec.get('method')} {rec.get('authority')}"
            f"{rec.get('path')} [{style}]{status}[/] {where} {rec.get('duration_ms')}ms"
            f"{extra} trace={rec.get('trace_id')}")  # fmt: skip
    return escape(text).replace(escape(f"[{style}]{status}[/]"), f"[{style}]{status}[/]")


def install(app: typer.Typer) -> None:
    """Mount ``tap`` on the top-level app (called by gossipmesh.cli.app)."""

    @app.command()
    def tap(
        service: Annotated[str, typer.Argument(help="The service whose requests to show.")],
        path: Annotated[str, typer.Option(help="Only paths starting with this.")] = "",
        method: Annotated[str, typer.Option(help="Only this method (GET, POST ...).")] = "",
        status: Annotated[str, typer.Option(help="Only this status: 503, or a class: 5xx.")] = "",
        max_rps: Annotated[
            float | None, typer.Option(help="At most this many lines a second (default 100).")
        ] = None,
        count: Annotated[
            int, typer.Option(help="Stop after this many requests (0: no limit).")
        ] = 0,
        duration: Annotated[
            float | None, typer.Option(help="Stop after this many seconds (default 60, max 900).")
        ] = None,
        local: Annotated[bool, typer.Option("--local", help="Only this agent's proxy.")] = False,
        agent: AgentOpt = DEFAULT_AGENT,
        as_json: JsonOpt = False,
    ) -> None:
        """Stream live requests of SERVICE from every agent (no bodies, no header values)."""
        admin = client(agent)

        def stream() -> None:
            seen = 0
            lines = admin.tap(service, path=path, method=method, status=status,
                              max_rps=max_rps, duration_s=duration,
                              scope="local" if local else "mesh")  # fmt: skip
            for line in lines:
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                event = rec.get("event") if isinstance(rec, dict) else None
                if as_json:
                    sys.stdout.write(line.decode() + "\n")
                    sys.stdout.flush()
                elif event == "tap-start":
                    nodes = ", ".join(str(n) for n in rec.get("nodes") or [])
                    out.print(f"tapping {escape(service)} on {escape(nodes) or 'no node'}")
                elif event == "tap-end":
                    out.print(f"end: {rec.get('sent')} shown, {rec.get('skipped')} over the "
                              f"rate, {rec.get('dropped')} dropped")  # fmt: skip
                if event is None:
                    if not as_json:
                        out.print(request_line(rec))
                    seen += 1
                    if count and seen >= count:
                        return

        try:
            run(stream, usage_statuses=(400,))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


__all__ = ["install", "request_line"]
