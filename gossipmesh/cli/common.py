"""What every CLI command shares: the consoles, the ``--agent`` and ``--json`` options, the admin
client, and the one boundary where errors become a line on stderr and an exit code.

Exit codes: 0 success; 1 the agent is unreachable or reported a failure; 2 usage error (including
an agent answering with one of the caller's ``usage_statuses``: the operator's input was refused).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from gossipmesh.cli.client import DEFAULT_AGENT, AdminClient, AdminError, AgentUnreachable

T = TypeVar("T")

EXIT_FAIL, EXIT_USAGE = 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

AgentOpt = Annotated[
    str,
    typer.Option(
        "--agent",
        envvar="GOSSIPMESH_AGENT",
        help="Admin API of the agent to talk to (HOST:PORT).",
        show_envvar=True,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

__all__ = [
    "DEFAULT_AGENT",
    "AgentOpt",
    "JsonOpt",
    "client",
    "err",
    "fail",
    "out",
    "print_json",
    "run",
]


def client(agent: str) -> AdminClient:
    try:
        return AdminClient(agent)
    except Exception as exc:  # UsageError from Address.parse
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc


def fail(message: str, code: int) -> NoReturn:
    err.print(f"gossipmesh: {message}", soft_wrap=True, markup=False)
    raise typer.Exit(code)


def run(fn: Callable[[], T], usage_statuses: Collection[int] = ()) -> T:
    """Call the admin API; an unreachable or failing agent is one line and exit 1."""
    try:
        return fn()
    except AgentUnreachable as exc:
        fail(str(exc), EXIT_FAIL)
    except AdminError as exc:
        if exc.status in usage_statuses:
            fail(f"agent refused: {exc}", EXIT_USAGE)
        fail(f"agent error: {exc}", EXIT_FAIL)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
