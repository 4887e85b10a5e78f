"""``gossipmesh agent`` becomes a clean agent process (agent/launch.py): same pid, none of the
CLI's libraries, its flags never on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent_procs import Procs, free_port_on, requires_loopback_aliases

from gossipmesh.crypto import generate_key

CLI_LIBRARIES = ("typer", "click", "rich", "pydantic", "gossipmesh.cli")


@requires_loopback_aliases
def test_the_agent_process_is_exec_d_clean_with_its_flags_off_the_command_line(
    procs: Procs,
) -> None:
    key = generate_key()
    port = free_port_on(["127.0.0.2"])
    a = procs.new("a", "127.0.0.2", port, ["--encrypt", key, "--cluster", "launch"]).start()
    assert a.proc is not None
    pid = a.proc.pid  # the pid the CLI was started as serves the admin API
    assert a.client.health()["status"] in ("ok", "degraded")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # -X no_debug_ranges: no column tables in the agent's code objects (issue 19, launch.py)
    assert argv[1:6] == [b"-X", b"no_debug_ranges", b"-m", b"gossipmesh.agent", b"--flags-fd"]
    assert key.encode() not in b" ".join(argv)  # world-readable; the key travelled on a pipe
    fds = os.listdir(f"/proc/{pid}/fd")
    pipes = [fd for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")]
    assert pipes == []  # the flags' pipe was read and closed


def test_the_agent_s_imports_pull_in_no_cli_library() -> None:
    # What the exec'd process imports before it runs: launch, then the agent proper.
    code = (
        "import sys, gossipmesh.agent.launch, gossipmesh.agent.main\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({CLI_LIBRARIES!r}))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_agent_module_refuses_to_start_without_the_cli_s_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gossipmesh.agent"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "gossipmesh agent: usage: python -m gossipmesh.agent --flags-fd N (started by "
        "`gossipmesh agent`; run that instead)"
    ]
