"""The README's command table lists every command the CLI has (generated from the typer app, so a
new command without a row fails here), and the README's set-up block keeps its two commands."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from gossipmesh.cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"


def command_paths() -> list[str]:
    """Every visible command of the CLI, as typed: ``members``, ``config get``, ``ca init``..."""
    out: list[str] = []

    def walk(group: object, prefix: list[str]) -> None:
        for name, sub in sorted(getattr(group, "commands", {}).items()):
            if getattr(sub, "hidden", False):
                continue
            if hasattr(sub, "commands"):
                walk(sub, [*prefix, name])
            else:
                out.append(" ".join([*prefix, name]))

    walk(typer.main.get_command(app), [])
    return out


def table_rows() -> list[str]:
    """The first cell of each row of the README's command table, without its backticks."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Commands") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^\| `gossipmesh ([^`]+)` \|", section, re.MULTILINE)


def test_every_command_has_a_row() -> None:
    rows = table_rows()
    paths = command_paths()
    assert len(paths) > 25  # the walk found the groups' commands too
    missing = [p for p in paths if not any(r == p or r.startswith(p + " ") for r in rows)]
    assert missing == []


def test_every_row_is_a_real_command() -> None:
    paths = set(command_paths())
    for row in table_rows():
        words = row.split()
        assert " ".join(words[:1]) in paths or " ".join(words[:2]) in paths, row


def test_setup_keeps_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Set up") :].split("```sh\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && gossipmesh demo",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest",
    ]
