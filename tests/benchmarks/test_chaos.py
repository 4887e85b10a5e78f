"""A 60-second chaos run: 5 agents in network namespaces under the seeded nemesis, every checker
passing (benchmarks/chaos.py). Needs root (network namespaces, veths, a bridge) and libfaketime;
skips with the reason otherwise. A failure names the seed and the command that replays it."""

from __future__ import annotations

import subprocess

import chaos
import pytest
from chaos_net import ChaosUnavailable, require_rights

SEED = 4  # plays halves and kill-wipe in 60 s, and kills two upstreams


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
