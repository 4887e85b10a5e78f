"""What every CLI command shares: the consoles, the ``--agent`` and ``--json`` options, the admin
credentials, and the one boundary (``run``) where library errors become a line on stderr and an
exit code.

Credentials (``Credentials``, set once by the root command's options in app.py) are what
``client`` gives every ``AdminClient``: the token from ``--token-file`` (``$GOSSIPMESH_TOKEN_FILE``),
else ``$GOSSIPMESH_TOKEN``, else the agent's own token file on this host (``--data-dir``,
``$GOSSIPMESH_DATA_DIR``, else the file the agent names in ``/v1/self``); and for a non-loopback
agent the cluster roots from ``--ca-file`` (``$GOSSIPMESH_CA_FILE``), else from the operator file
in ``$GOSSIPMESH_OPERATOR_KEY``.

Commands are thin, as in fastapi-cli: parse, call ``gossipmesh.client``, render, exit. They never
catch errors themselves; ``run`` maps them:

- 0 success;
- 1 the agent is unreachable (``AgentUnreachable``) or reported a failure (``AdminError``);
- 2 usage error: the operator's own input is wrong (``InputProblem``, raised by the CLI before
  anything is sent; ``CredentialsProblem``, a token or CA file that cannot be used) or an agent
  refused it (an ``AdminError`` whose status the command lists in
  ``usage_statuses``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from gossipmesh.client import (
    DEFAULT_AGENT,
    AdminClient,
    AdminError,
    AgentUnreachable,
    CredentialsProblem,
    is_loopback_host,
)
from gossipmesh.errors import UsageError
from gossipmesh.ids import DEFAULT_ADMIN_PORT, Address

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
    "Credentials",
    "EXIT_FAIL",
    "EXIT_USAGE",
    "AgentOpt",
    "InputProblem",
    "JsonOpt",
    "client",
    "credentials",
    "err",
    "fail",
    "out",
    "print_json",
    "run",
]


class InputProblem(Exception):
    """The operator's input (a file, a key) is wrong; the message is the one line to print."""


@dataclass
class Credentials:
    """The root command's ``--token-file``, ``--data-dir`` and ``--ca-file``."""

    token_file: Path | None = None
    data_dir: Path | None = None
    ca_file: Path | None = None


credentials = Credentials()


def client(agent: str) -> AdminClient:
    """The admin client for ``--agent`` with the credentials; a malformed address, or a
    non-loopback one without roots, is a usage error (exit 2)."""
    c = credentials
    token = None if c.token_file is not None else os.environ.get("GOSSIPMESH_TOKEN") or None
    ca_file: str | Path | None = c.ca_file
    try:
        loopback = is_loopback_host(Address.parse(agent, default_port=DEFAULT_ADMIN_PORT).host)
    except UsageError:
        loopback = True  # AdminClient says what is wrong with the address
    if ca_file is None and not loopback:
        # An operator file holds the roots too; plain HTTP on loopback needs none.
        ca_file = os.environ.get("GOSSIPMESH_OPERATOR_KEY") or None
    try:
        return AdminClient(
            agent,
            token=token,
            token_file=c.token_file,
            agent_data_dir=c.data_dir,
            discover_token=c.data_dir is None,
            ca_file=ca_file,
        )
    except CredentialsProblem as exc:
        fail(str(exc), EXIT_USAGE)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc


def fail(message: str, code: int) -> NoReturn:
    err.print(f"gossipmesh: {message}", soft_wrap=True, markup=False)
    raise typer.Exit(code)


def run(fn: Callable[[], T], usage_statuses: Collection[int] = ()) -> T:
    """Call ``fn`` (the library); its errors become one line on stderr and an exit code."""
    try:
        return fn()
    except (InputProblem, CredentialsProblem) as exc:
        fail(str(exc), EXIT_USAGE)
    except AgentUnreachable as exc:
        fail(f"{exc} (set --agent or GOSSIPMESH_AGENT)", EXIT_FAIL)
    except AdminError as exc:
        if exc.status in usage_statuses:
            fail(f"agent refused: {exc}", EXIT_USAGE)
        fail(f"agent error: {exc}", EXIT_FAIL)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
