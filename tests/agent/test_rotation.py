"""A scripted root and operator-key rotation on three real agents, with the CLI an operator uses.

    ca init OLD; nodes and alice from OLD; write config
    ca init NEW; ca trust-root NEW/root.crt --dir OLD          every agent trusts both
    nodes re-issued from NEW (also trusting OLD), agents restarted one at a time
    alice2 issued from NEW; ca revoke alice (retired)            the operator key rotates
    ca distrust-root OLD/root.crt --dir NEW                     OLD is no longer trusted
    nodes re-issued from NEW alone, agents restarted one at a time

Throughout, every key keeps its value at every running agent and every member stays alive:
config written under the old root and by the retired operator keeps counting, because it was
signed while they were trusted (DESIGN-11 D4, D5). A replica configured with the new root alone
learns the old one from the signed distrust statement, and through it every old entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, requires_loopback_aliases
from agent_procs import wait_until as wait_for

from gossipmesh.crypto import generate_key

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
CLUSTER = "rot"


def cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMESH_OPERATOR_KEY"}
    done = subprocess.run([sys.executable, "-m", "gossipmesh", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, f"gossipmesh {' '.join(args)}: {done.stderr}"
    return done.stdout


class Mesh:
    def __init__(self, procs: Procs) -> None:
        self.root = procs.root
        self.old, self.new = self.root / "old-ca", self.root / "new-ca"
        cli("ca", "init", "--dir", str(self.old), "--cluster", CLUSTER)
        self.alice = self.root / "alice.op"
        cli("ca", "issue-operator", "alice", "--dir", str(self.old), "--out", str(self.alice))
        port = free_port_on(IPS)
        key = generate_key()
        self.agents: list[AgentProc] = []
        for i, ip in enumerate(IPS):
            name = f"r{i + 1}"
            tls = self.issue_node(name, self.old, "gen0")
            args = ["--encrypt", key, "--cluster", CLUSTER, "--tls-dir", str(tls),
                    "--config-sync-interval-ms", "1000"]  # fmt: skip
            if i:
                args += ["--join", f"{IPS[0]}:{port}"]
            self.agents.append(procs.new(name, ip, port, args))
        self.expected: dict[str, Any] = {}

    def issue_node(self, name: str, ca: Path, generation: str, *also: Path) -> Path:
        out = self.root / f"{name}-{generation}"
        extra = [a for path in also for a in ("--also-trust", str(path))]
        cli("ca", "issue-node", name, "--dir", str(ca), "--out", str(out), *extra)
        return out

    def write(self, key: str, value: Any, op: Path, via: AgentProc) -> None:
        file = self.root / "body.json"
        file.write_text(json.dumps(value))
        cli("config", "set", key, "-f", str(file), "--agent", via.admin, "--operator-key", str(op))
        self.expected[key] = value

    def intact(self) -> bool:
        """Every running agent holds every expected value, and sees all three alive."""
        for agent in self.agents:
            if not agent.running:
                continue
            entities = agent.client.config()["entities"]
            if any(entities.get(k) != v for k, v in self.expected.items()):
                return False
            members = agent.members()
            if len(members) != 3 or set(members.values()) != {"alive"}:
                return False
        return True

    def restart_with(self, agent: AgentProc, tls: Path) -> None:
        agent.stop()
        i = agent.args.index("--tls-dir")
        agent.args[i + 1] = str(tls)
        agent.start()
        wait_for(f"{agent.name} back with {tls.name}, nothing lost", self.intact, SETTLE_S)

    def trust(self, agent: AgentProc) -> dict[str, Any]:
        return agent.client.trust()


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Mesh:
    m = Mesh(procs)
    for agent in m.agents:
        agent.start()
    return m


def test_a_root_and_an_operator_key_rotate_with_nothing_lost(mesh: Mesh) -> None:
    m = mesh
    r1 = m.agents[0]
    wait_for("three members alive", m.intact, SETTLE_S)
    m.write("route/web", {"destinations": [{"service": "api"}]}, m.alice, r1)
    m.write("service/api", {"protocol": "http", "weight_max": 50}, m.alice, m.agents[1])
    wait_for("the first config everywhere", m.intact, SETTLE_S)

    # 1. A new root, trusted by a statement the old root signs.
    cli("ca", "init", "--dir", str(m.new), "--cluster", CLUSTER)
    cli("ca", "trust-root", str(m.new / "root.crt"), "--dir", str(m.old), "--agent", r1.admin)
    wait_for("both roots trusted everywhere", lambda: all(
        sum(r["trusted_now"] for r in m.trust(a)["roots"]) == 2 for a in m.agents), SETTLE_S)  # fmt: skip
    assert m.intact()

    # 2. Nodes re-issued from the new root (still trusting the old), one agent at a time.
    for agent in m.agents:
        m.restart_with(agent, m.issue_node(agent.name, m.new, "gen1", m.old / "root.crt"))

    # 3. The operator key rotates: alice2 from the new root; alice retired (root-signed).
    alice2 = m.root / "alice2.op"
    cli("ca", "issue-operator", "alice2", "--dir", str(m.new), "--out", str(alice2),
        "--also-trust", str(m.old / "root.crt"))  # fmt: skip
    m.write("route/web", {"destinations": [{"service": "api-v2"}]}, alice2, m.agents[2])
    old_alice = next((m.old / "issued").glob("operator-alice-*.crt"))
    cli("ca", "revoke", str(old_alice), "--mode", "retired", "--dir", str(m.new), "--agent",
        r1.admin)  # fmt: skip
    wait_for("alice revoked everywhere", lambda: all(
        len(m.trust(a)["revoked_now"]) == 1 for a in m.agents), SETTLE_S)  # fmt: skip
    assert m.intact()  # service/api, signed by alice before her revocation, still counts

    # 4. The old root is distrusted by a statement the new root signs.
    cli("ca", "distrust-root", str(m.old / "root.crt"), "--dir", str(m.new), "--agent", r1.admin)
    wait_for("only the new root trusted everywhere", lambda: all(
        sum(r["trusted_now"] for r in m.trust(a)["roots"]) == 1 for a in m.agents), SETTLE_S)  # fmt: skip
    wait_for("nothing lost after the distrust", m.intact, SETTLE_S)

    # 5. Nodes that know only the new root: they learn the old one from the document.
    for agent in m.agents:
        m.restart_with(agent, m.issue_node(agent.name, m.new, "gen2"))
    m.write("route/after", {"destinations": [{"service": "api"}]}, alice2, r1)
    wait_for("a write after the rotation everywhere", m.intact, SETTLE_S)
    view = r1.client.config_get("service/api")
    assert view["version"]["signer"]["name"] == "alice" and view["void"] is None
