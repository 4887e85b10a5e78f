"""``gossipmesh shift ROUTE`` and ``gossipmesh shift status ROUTE`` against two real agents:
one signed write, then every agent moves through the steps on its own clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from agent_procs import (
    SETTLE_S,
    AgentProc,
    Procs,
    free_port_on,
    requires_loopback_aliases,
    wait_until,
)
from config_helpers import signer

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3"]
SIGNER = signer("shift")


@pytest.fixture(scope="module")
def pair(procs: Procs) -> tuple[AgentProc, AgentProc]:
    port = free_port_on(IPS)
    a = procs.new("a", IPS[0], port, ["--cluster", "shift"])
    b = procs.new("b", IPS[1], port, ["--cluster", "shift", "--join", f"{IPS[0]}:{port}"])
    a.start()
    b.start()
    wait_until("a and b alive", lambda: a.members().get("b") == "alive", SETTLE_S)
    return a, b


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def status(a: AgentProc) -> dict[str, Any]:
    proc = cli("shift", "status", "hello", "--agent", a.admin, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_a_shift_written_once_is_followed_by_every_agent(
    pair: tuple[AgentProc, AgentProc],
) -> None:
    a, b = pair
    route = {"destinations": [{"service": "api", "weight": 100, "tags": ["v1"]},
                              {"service": "api", "weight": 0, "tags": ["v2"]}]}  # fmt: skip
    a.client.config_write({"route/hello": route}, SIGNER)
    wait_until("b has the route", lambda: "route/hello" in b.client.config("route/")["entities"],
               SETTLE_S)  # fmt: skip
    proc = cli("shift", "hello", "--service", "api", "--tags", "v2", "--to", "100",
               "--duration", "6s", "--steps", "3", "--agent", a.admin)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen_steps: set[int] = set()
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        nodes = status(a)["nodes"]
        assert set(nodes) == {"a", "b"}
        steps = {}
        for name, node in nodes.items():
            assert node["ok"], node
            v2 = node["destinations"][1]
            if "shift" not in v2:
                break  # b has not got the write yet
            # What the agent's table holds is the step its own clock is in (or the one before,
            # if the step began between its rebuild and this question).
            sh = v2["shift"]
            expected_now = min(3, max(0, (node["wall_ms"] - start_ms(node)) // 2000))
            assert expected_now - 1 <= sh["step"] <= expected_now, (name, sh, expected_now)
            assert v2["weight"] == sh["step"] * 100 // 3
            steps[name] = sh["step"]
        seen_steps.update(steps.values())
        if steps and all(s == 3 for s in steps.values()) and len(steps) == 2:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the shift did not finish everywhere: {status(a)}")
    assert len(seen_steps) >= 2  # it moved through steps, not only to the end
    table = cli("shift", "status", "hello", "--agent", b.admin)
    assert table.returncode == 0 and "100" in table.stdout


def start_ms(node: dict[str, Any]) -> int:
    sh = node["destinations"][1]["shift"]
    nxt = sh["next_change_ms"]
    if nxt is None:
        return 0  # done: any start gives step 3
    return int(nxt) - (sh["step"] + 1) * 2000
