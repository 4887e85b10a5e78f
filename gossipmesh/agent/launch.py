"""The agent process starts clean: ``gossipmesh agent`` parses and checks its flags in the CLI,
then replaces itself (``exec``, same pid) with ``python -m gossipmesh.agent``.

Why: the CLI's libraries (typer, click, rich, and pydantic, which typer imports) took 12 MiB of
an idle agent's RSS and half a second of its start for nothing the agent runs (issue 19). The
process keeps its pid, its environment, its descriptors and its signal dispositions, so a
supervisor, a test or a shell sees one process from start to exit.

The exec line is ours, so it also picks the interpreter's options: ``-X no_debug_ranges`` keeps
3.11's column tables out of every code object the agent loads (~0.5 MiB of an idle
agent, measured in BENCHMARKS.md); a traceback then shows no ``^^^^`` under the failing
expression, and its file, line and source text as before. Nothing else changes: asserts stay
(no ``-O``), ``site`` and ``PYTHON*`` variables apply as they did to the CLI.

The parsed flags travel as one JSON object on an inherited pipe (``--flags-fd N``), never on the
command line: they may hold a key (``--encrypt``), and ``/proc/PID/cmdline`` is world-readable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

FLAGS_FD_OPTION = "--flags-fd"
MAX_FLAGS_BYTES = 60_000  # under a pipe's buffer: the write never waits for a reader
INTERPRETER_OPTIONS = ("-X", "no_debug_ranges")


def exec_agent(flags: Mapping[str, Any], config_file: Path | None) -> NoReturn:
    """Become ``python -m gossipmesh.agent`` with ``flags`` (the CLI's parsed options)."""
    data = json.dumps(
        {"flags": dict(flags), "config": None if config_file is None else str(config_file)},
        default=str,
    ).encode()
    if len(data) > MAX_FLAGS_BYTES:
        raise ValueError(f"agent flags are {len(data)} bytes; at most {MAX_FLAGS_BYTES}")
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *INTERPRETER_OPTIONS, "-m", "gossipmesh.agent", FLAGS_FD_OPTION,
            str(read_fd)]  # fmt: skip
    os.execv(sys.executable, argv)


def read_flags(argv: list[str]) -> tuple[dict[str, Any], Path | None]:
    """The flags ``exec_agent`` handed over. Raises ValueError for anything else."""
    if len(argv) != 2 or argv[0] != FLAGS_FD_OPTION or not argv[1].isdigit():
        raise ValueError(
            f"usage: python -m gossipmesh.agent {FLAGS_FD_OPTION} N "
            "(started by `gossipmesh agent`; run that instead)"
        )
    with os.fdopen(int(argv[1]), "rb") as f:
        data = f.read(MAX_FLAGS_BYTES + 1)
    doc = json.loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        raise ValueError("agent flags: not a JSON object with 'flags'")
    config = doc.get("config")
    return doc["flags"], None if config is None else Path(str(config))


def main(argv: list[str]) -> int:
    try:
        flags, config_file = read_flags(argv)
    except (ValueError, OSError) as exc:
        print(f"gossipmesh agent: {exc}", file=sys.stderr)
        return 2
    from gossipmesh.agent.main import run_agent

    return run_agent(flags, config_file)


__all__ = ["FLAGS_FD_OPTION", "INTERPRETER_OPTIONS", "exec_agent", "main", "read_flags"]
