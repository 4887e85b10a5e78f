"""``version``, ``--version``, shell completion and ``doctor`` without an agent: exit codes and
the one line that says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from gossipmesh.cli.app import app
from gossipmesh.version import package_version

runner = CliRunner()
NOWHERE = "127.0.0.1:9"  # discard port: nothing listens


def gossipmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args], capture_output=True,
                          text=True, timeout=30, env=env)  # fmt: skip


def test_version_from_the_package_metadata() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"gossipmesh {package_version()}\n"
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["version"] == package_version()


def test_completion_completes_commands() -> None:
    env = dict(os.environ, _GOSSIPMESH_COMPLETE="complete_bash", COMP_WORDS="gossipmesh do",
               COMP_CWORD="1")  # fmt: skip
    proc = gossipmesh(env=env)
    assert proc.returncode == 0 and "doctor" in proc.stdout.split()
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_doctor_without_an_agent_fails_saying_what_to_do() -> None:
    proc = gossipmesh("doctor", "--agent", NOWHERE)
    assert proc.returncode == 1
    assert "FAIL agent" in proc.stdout and "cannot reach" in proc.stdout
    assert "start the agent" in proc.stdout
    result = runner.invoke(app, ["doctor", "--agent", NOWHERE, "--json"])
    assert result.exit_code == 1
    assert [f["status"] for f in json.loads(result.output)] == ["problem"]


def test_doctor_with_a_bad_address_is_usage() -> None:
    assert runner.invoke(app, ["doctor", "--agent", "host:notaport"]).exit_code == 2


def test_join_with_a_malformed_address_is_usage_before_anything_is_sent() -> None:
    result = runner.invoke(app, ["join", "10.0.0.1:notaport", "--agent", NOWHERE])
    assert result.exit_code == 2 and "notaport" in result.output
