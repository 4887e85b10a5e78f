"""A 60-second chaos run: 5 agents in network namespaces under the seeded nemesis, every checker
passing (benchmarks/chaos.py). Needs root (network namespaces, veths, a bridge) and libfaketime;
skips with the reason otherwise. A failure names the seed and the command that replays it."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chaos
import pytest
from chaos_net import ChaosUnavailable, require_rights, sweep_stale

SEED = 4  # plays a pause and a kill-wipe in 60 s, and kills two upstreams


def rights() -> str | None:
    try:
        require_rights()
    except ChaosUnavailable as exc:
        return str(exc)
    return None


def test_sixty_seconds_of_chaos_keep_every_promise() -> None:
    why = rights()
    if why is not None:
        pytest.skip(why)
    if chaos.ensure_faketime() is None:
        pytest.skip("libfaketime missing (apt-get install faketime)")
    result = chaos.run(hosts=5, duration_s=60, seed=SEED)
    assert result.ok, result.summary()
    # The run exercised what it claims to: faults were played, writes acknowledged, requests made.
    assert result.schedule.faults and result.schedule.upstream_kills
    assert result.figures.writes_acked >= 20 and result.figures.judged >= 1000
    assert result.figures.excused_dead > 0  # the nemesis did cut someone off
    # Nothing is left behind: no namespace of this process, no address on the test subnet here.
    assert (
        f"gm-{chaos.os.getpid()}-"
        not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert (
        "10.213."
        not in subprocess.run(
            ["ip", "-4", "addr"], capture_output=True, text=True, check=True
        ).stdout
    )


def our_namespaces(pid: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"gm-{pid}-")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_run_removes_everything_it_created(sig: int, tmp_path: Path) -> None:
    why = rights()
    if why is not None:
        pytest.skip(why)
    script = Path(chaos.__file__)
    proc = subprocess.Popen(
        [sys.executable, str(script), "--hosts", "2", "--duration", "60", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Wait for the agents (their processes live in the run's namespaces), then signal.
        while time.monotonic() < deadline and not any(
            subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.strip()
            for ns in our_namespaces(proc.pid)
        ):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        assert our_namespaces(proc.pid), "the run never created its namespaces"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out
    assert our_namespaces(proc.pid) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"gm-{proc.pid}-chaos-*"))


def test_stale_namespaces_of_dead_runs_are_swept() -> None:
    why = rights()
    if why is not None:
        pytest.skip(why)
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"gm-{dead.pid}-h1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in sweep_stale()
        assert our_namespaces(dead.pid) == []
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
