"""``gossipmesh simulate SCENARIO …``: the simulator (``python -m simulations``) under the main CLI.

Mount it from ``gossipmesh/cli/app.py`` with one line::

    from gossipmesh.cli.simulate import register
    register(app)

The command forwards its arguments untouched to ``simulations.cli.main``, so both spellings take
the same options, print the same table and return the same exit codes (0 pass, 1 a checker
failed, 2 bad options). The simulator is imported only when the command runs: it is a
development tool, not part of the client, and the CLI imports no agent internals.
"""

from __future__ import annotations

import typer


def simulate(ctx: typer.Context) -> None:
    """Run a deterministic simulation of the real SWIM core (see `python -m simulations -h`)."""
    from simulations.cli import main

    raise typer.Exit(main(list(ctx.args), prog="gossipmesh simulate"))


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to ``app``; all options are parsed by the simulator itself."""
    app.command(
        "simulate",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],  # let `--help` reach the simulator's own parser
        },
        add_help_option=False,
    )(simulate)
