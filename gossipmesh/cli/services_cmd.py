"""``gossipmesh services [--json]``: the catalog as one agent sees it (``GET /v1/services``).

One row per service instance: which node hosts it, where, its tags, its health, the SWIM state of
that node, whether this agent's proxy has ejected it (outlier detection), and whether this agent
would send it traffic now (``routable``, as in ``--json``). Health is what the instance's own
agent published while its node is alive or suspect, and ``critical`` once the node is dead or
gone (``reported_health`` in ``--json`` keeps what the record last said): the vocabulary is
``passing``, ``warning``, ``critical``, ``unknown`` everywhere (gossipmesh/agent/health.py).
Like every command it is a thin client of the admin API and imports no agent internals.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from gossipmesh.cli.common import DEFAULT_AGENT, AgentOpt, JsonOpt, client, out, print_json, run

HEALTH_STYLE = {
    "passing": "green",
    "warning": "yellow",
    "critical": "red",
    "unknown": "bright_black",
}
STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}


def services_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Service", "Node", "Address", "Tags", "Health", "State", "Ejected", "Routable"):
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
            "[green]yes[/]" if r.get("routable") else "[red]no[/]",
        )
        if r.get("refused"):  # the services' config does not allow it: never routed
            table.add_row("", "", f"[red]refused: {r['refused']}[/]", "", "", "", "", "")
    return table


def install(app: typer.Typer) -> None:
    """Mount ``services`` on the top-level app (called by gossipmesh.cli.app)."""

    @app.command()
    def services(
        agent: AgentOpt = DEFAULT_AGENT,
        as_json: JsonOpt = False,
    ) -> None:
        """List every service instance in the mesh: node, address, tags, health, routable."""
        admin = client(agent)
        rows = run(admin.services)
        if as_json:
            print_json(rows)
        elif not rows:
            out.print("no service instances")
        else:
            out.print(services_table(rows))
