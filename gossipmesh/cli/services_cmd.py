"""``gossipmesh services [--json]``: the catalog as one agent sees it (``GET /v1/services``).

One row per service instance: which node hosts it, where, its tags, the health its own agent
published, the SWIM state of that node, and whether this agent's proxy has ejected it (outlier
detection). ``routable`` in ``--json`` says whether this agent would send it traffic now.
Like every command it is a thin client of the admin API and imports no agent internals.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from gossipmesh.cli.client import DEFAULT_AGENT

HEALTH_STYLE = {
    "passing": "green",
    "warning": "yellow",
    "critical": "red",
    "unknown": "bright_black",
}
STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}


def services_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Service", "Node", "Address", "Tags", "Health", "State", "Ejected"):
        table.add_column(col)
    for r in rows:
        health = str(r.get("health"))
        state = str(r.get("member_state"))
        ejected = bool(r.get("ejected"))
        table.add_row(
            str(r.get("service")),
            str(r.get("node")),
            f"{r.get('address')}:{r.get('port')}",
            ",".join(str(t) for t in r.get("tags") or []) or "-",
            f"[{HEALTH_STYLE.get(health, 'white')}]{health}[/]",
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            "[red]yes[/]" if ejected else "no",
        )
    return table


def install(app: typer.Typer) -> None:
    """Mount ``services`` on the top-level app (called by gossipmesh.cli.app)."""

    @app.command()
    def services(
        agent: Annotated[
            str,
            typer.Option(
                "--agent",
                envvar="GOSSIPMESH_AGENT",
                help="Admin API of the agent to talk to (HOST:PORT).",
                show_envvar=True,
            ),
        ] = DEFAULT_AGENT,
        as_json: Annotated[
            bool, typer.Option("--json", help="Machine-readable JSON output.")
        ] = False,
    ) -> None:
        """List every service instance in the mesh: node, address, tags, health, ejection."""
        # Imported here: app.py imports this module while it is still being defined.
        from gossipmesh.cli.app import _client, _print_json, _run, out

        client = _client(agent)
        rows = _run(lambda: client.call("GET", "/v1/services"))
        if as_json:
            _print_json(rows)
        elif not rows:
            out.print("no service instances")
        else:
            out.print(services_table(rows))
