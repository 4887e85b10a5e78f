"""``gossipmesh doctor``: run the checks of ``gossipmesh.doctor`` against one agent and print each
with what to do about it. Exit 0 when nothing is a problem (skipped checks say why they were
skipped), 1 when anything is, 2 for a usage error. Thin: the checks live in the library.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from gossipmesh.cli.common import (
    DEFAULT_AGENT,
    EXIT_FAIL,
    AgentOpt,
    JsonOpt,
    client,
    out,
    print_json,
)

MARK = {"ok": "[green]ok  [/]", "problem": "[red]FAIL[/]", "skipped": "[yellow]skip[/]"}


def install(app: typer.Typer) -> None:
    """Mount ``doctor`` on the top-level app (called by gossipmesh.cli.app)."""

    @app.command()
    def doctor(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
        """Check an agent and its mesh: reachability, members, keys, clocks, descriptors, ports,
        certificate expiry, config conflicts; print what to do for each problem (exit 1 if any)."""
        from gossipmesh.doctor import Status, diagnose
        from gossipmesh.version import package_version

        findings = diagnose(client(agent), cli_version=package_version())
        if as_json:
            print_json([f.to_json() for f in findings])
        else:
            for f in findings:
                out.print(
                    f"{MARK[f.status.value]} {f.check:<12} {escape(f.detail)}", soft_wrap=True
                )
                if f.advice:
                    out.print(f"     {'':<12} [bold]->[/] {escape(f.advice)}", soft_wrap=True)
        if any(f.status is Status.PROBLEM for f in findings):
            raise typer.Exit(EXIT_FAIL)
