"""CLI behaviour that needs no agent: exit codes, the unreachable-agent line, keygen."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

from typer.testing import CliRunner

from gossipmesh.cli.app import app

runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_agent_is_one_line_exit_1() -> None:
    port = closed_port()
    proc = subprocess.run(
        [sys.executable, "-m", "gossipmesh", "members", "--agent", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0] and str(port) in lines[0]
    assert proc.stdout == ""


def test_agent_from_environment(monkeypatch: object) -> None:
    port = closed_port()
    result = runner.invoke(app, ["status"], env={"GOSSIPMESH_AGENT": f"127.0.0.1:{port}"})
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output


def test_bad_flag_is_usage_exit_2() -> None:
    result = runner.invoke(app, ["members", "--no-such-flag"])
    assert result.exit_code == 2


def test_bad_agent_address_is_usage_exit_2() -> None:
    result = runner.invoke(app, ["members", "--agent", "host:notaport"])
    assert result.exit_code == 2


def test_agent_bad_flags_exit_2_one_line() -> None:
    for args in (["--profile", "moon"], ["--bind", "1.2.3.4:99999"], ["--encrypt", "short"]):
        proc = subprocess.run(
            [sys.executable, "-m", "gossipmesh", "agent", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_agent_unreadable_keyring_exit_1(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gossipmesh", "agent", "--keyring", "/nonexistent/ring.json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "keyring" in proc.stderr


def test_keygen_prints_a_32_byte_key() -> None:
    result = runner.invoke(app, ["keygen"])
    assert result.exit_code == 0
    assert len(base64.b64decode(result.output.strip())) == 32


def test_no_args_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "members" in result.output
