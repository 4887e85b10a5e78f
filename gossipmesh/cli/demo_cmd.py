"""``gossipmesh demo``: start a local mesh, drive traffic, play failures, print a summary.

A thin command like the others: it checks its options and hands over to
``gossipmesh.demo.runner.run_demo``, whose return value is the exit code (0 done, 1 could not run:
another demo running, a port in use, an agent that would not start; 130 interrupted, after
cleaning up and printing what was measured). Imported lazily, so other commands pay nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gossipmesh.demo.plan import (
    DEFAULT_DURATION_S,
    DEFAULT_NODES,
    FIRST_IP,
    MAX_DURATION_S,
    MAX_NODES,
    MIN_DURATION_S,
    MIN_NODES,
)


def demo(
    nodes: Annotated[
        int,
        typer.Option(
            min=MIN_NODES, max=MAX_NODES, help="Agents to start, on 127.0.0.2 ... 127.0.0.(N+1)."
        ),
    ] = DEFAULT_NODES,
    duration: Annotated[
        float,
        typer.Option(
            min=MIN_DURATION_S,
            max=MAX_DURATION_S,
            help="Seconds of traffic; the scripted events are timed as fractions of it.",
        ),
    ] = DEFAULT_DURATION_S,
    no_tui: Annotated[
        bool, typer.Option("--no-tui", help="Print progress lines instead of the live dashboard.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the summary as one JSON object on stdout; stderr only errors."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="With --json: progress lines on stderr too.")
    ] = False,
    first_ip: Annotated[
        str, typer.Option(envvar="GOSSIPMESH_DEMO_FIRST_IP", hidden=True)
    ] = FIRST_IP,
) -> None:
    """Run a local mesh (its own CA, node certificates and operator key) with sample services,
    traffic and scripted failures (Ctrl-C stops it)."""
    from gossipmesh.demo.plan import make_plan
    from gossipmesh.demo.runner import run_demo

    try:
        plan = make_plan(nodes, duration, first_ip=first_ip)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="GOSSIPMESH_DEMO_FIRST_IP") from exc
    raise typer.Exit(
        run_demo(plan, tui=not no_tui and not as_json, as_json=as_json, verbose=verbose)
    )


def install(app: typer.Typer) -> None:
    """Mount ``demo`` on the top-level app (called by gossipmesh.cli.app)."""
    app.command()(demo)
