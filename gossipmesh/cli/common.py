"""What every CLI command shares: the consoles, the ``--agent`` and ``--json`` options, and the
one boundary (``run``) where library errors become a line on stderr and an exit code.

Commands are thin, as in fastapi-cli: parse, call ``gossipmesh.client``, render, exit. They never
catch errors themselves; ``run`` maps them:

- 0 success;
- 1 the agent is unreachable (``AgentUnreachable``) or reported a failure (``AdminError``);
- 2 usage error: the operator's own input is wrong (``InputProblem``, raised by the CLI before
  anything is sent) or an agent refused it (an ``AdminError`` whose status the command lists in
  ``usage_statuses``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from gossipmesh.client import DEFAULT_AGENT, AdminClient, AdminError, AgentUnreachable
from gossipmesh.errors import UsageError

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
    "EXIT_FAIL",
    "EXIT_USAGE",
    "AgentOpt",
    "InputProblem",
    "JsonOpt",
    "client",
    "err",
    "fail",
    "out",
    "print_json",
    "run",
]


class InputProblem(Exception):
    """The operator's input (a file, a key) is wrong; the message is the one line to print."""


def client(agent: str) -> AdminClient:
    """The admin client for ``--agent``; a malformed address is a usage error (exit 2)."""
    try:
        return AdminClient(agent)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc


def fail(message: str, code: int) -> NoReturn:
    err.print(f"gossipmesh: {message}", soft_wrap=True, markup=False)
    raise typer.Exit(code)


def run(fn: Callable[[], T], usage_statuses: Collection[int] = ()) -> T:
    """Call ``fn`` (the library); its errors become one line on stderr and an exit code."""
    try:
        return fn()
    except InputProblem as exc:
        fail(str(exc), EXIT_USAGE)
    except AgentUnreachable as exc:
        fail(f"{exc} (set --agent or GOSSIPMESH_AGENT)", EXIT_FAIL)
    except AdminError as exc:
        if exc.status in usage_statuses:
            fail(f"agent refused: {exc}", EXIT_USAGE)
        fail(f"agent error: {exc}", EXIT_FAIL)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
