"""The config replica across five real agent processes on 127.0.0.2-6: spread time, atomic apply
seen from another agent, a partition with writes on both sides (fault injection) then heal,
kill -9 right after an acknowledged write, and a corrupt store.

The tests share one cluster (starting five agents costs seconds), but none relies on another:
the ``steady`` fixture restarts any agent an earlier test stopped, lifts every injected fault and
waits until all five see each other alive, so each test passes alone and in any order. Each writes
the keys it checks. Waits have generous deadlines and fail naming what they waited for; spread
times are printed, and measured by the simulator (simulations/), not asserted here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
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

from gossipmesh.crypto import generate_key

pytestmark = requires_loopback_aliases

IPS = [f"127.0.0.{i}" for i in range(2, 7)]
KEY = generate_key()
ROUTE_A = {"destinations": [{"service": "api", "weight": 90}, {"service": "canary", "weight": 10}]}
ROUTE_B = {"destinations": [{"service": "api-b"}]}
SIGNER = signer("cfg")  # the agents are a loopback playground: its operator signs


class Cluster:
    def __init__(self, procs: Procs) -> None:
        self.port = free_port_on(IPS)
        self.agents: list[AgentProc] = []
        key_file = procs.root / "gossip.key"  # not --encrypt: that warns (visible in ps)
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        for i, ip in enumerate(IPS):
            args = ["--encrypt-file", str(key_file), "--cluster", "cfg", "--enable-fault-injection",
                    "--config-sync-interval-ms", "1000"]  # fmt: skip
            if i > 0:
                args += ["--join", f"{IPS[0]}:{self.port}"]
            self.agents.append(procs.new(f"c{i + 1}", ip, self.port, args))

    def config(self, agent: AgentProc, prefix: str = "") -> dict[str, Any]:
        return agent.client.config(prefix)

    def all_alive(self) -> bool:
        names = {a.name for a in self.agents}
        return all(
            {n for n, s in a.members().items() if s == "alive"} == names for a in self.agents
        )

    def heal(self) -> None:
        """Restart any agent that is not running, lift every fault, wait for all five alive."""
        for agent in self.agents:
            if not agent.running:
                agent.start()
            agent.client.clear_faults()
        wait_until("5 agents alive everywhere", self.all_alive, SETTLE_S)

    def converged(self) -> dict[str, Any] | None:
        """The one view every agent holds (entities and root hash), or None."""
        views = [self.config(a) for a in self.agents]
        self.last_views = {a.name: (sorted(v["entities"]), v["root_hash"])
                           for a, v in zip(self.agents, views, strict=True)}  # fmt: skip
        same = all(
            (v["entities"], v["root_hash"]) == (views[0]["entities"], views[0]["root_hash"])
            for v in views
        )
        return views[0] if same else None


@pytest.fixture(scope="module")
def cluster(procs: Procs) -> Cluster:
    c = Cluster(procs)
    for agent in c.agents:
        agent.start()
    return c


@pytest.fixture
def steady(cluster: Cluster) -> Cluster:
    """The shared cluster with all five agents running, unfaulted and alive in every view."""
    cluster.heal()
    return cluster


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args], capture_output=True,
                          text=True, timeout=30, input=stdin)  # fmt: skip


def test_write_at_one_agent_becomes_readable_at_all_five(steady: Cluster) -> None:
    cluster = steady
    first, last = cluster.agents[0], cluster.agents[-1]
    start = time.monotonic()
    assert first.client.config_put("route/web", ROUTE_A, SIGNER)["durable"] is True

    def at(agent: AgentProc) -> bool:
        status, body = agent.client.request("GET", "/v1/config/route/web")
        return status == 200 and body["value"] == ROUTE_A

    _, took = wait_until("route/web at the fifth agent", lambda: at(last), SETTLE_S, 0.01)
    wait_until("route/web everywhere", lambda: all(map(at, cluster.agents)), SETTLE_S, 0.01)
    print(f"\nwrite -> readable at E: {took * 1000:.0f} ms (poll 10 ms); "
          f"at all 5: {(time.monotonic() - start) * 1000:.0f} ms")  # fmt: skip


def test_apply_of_50_entities_is_atomic_for_a_concurrent_reader(
    steady: Cluster, tmp_path: Path
) -> None:
    cluster = steady
    writer, reader = cluster.agents[1], cluster.agents[4]
    counts: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            counts.append(cluster.config(reader, "service/batch-")["count"])

    # TOML tables, the format operators write by hand: [service.NAME] per entity.
    lines = [f'[service.batch-{i:02d}]\nprotocol = "{"tcp" if i % 2 else "http"}"\n'
             for i in range(50)]  # fmt: skip
    path = tmp_path / "batch.toml"
    path.write_text("\n".join(lines))
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        wait_until("the reader's first poll", lambda: counts, SETTLE_S, 0.01)
        done = cli("config", "apply", "-f", str(path), "--agent", writer.admin)
        assert done.returncode == 0, done.stderr
        assert "applied 50 entities" in done.stdout
        wait_until("50 at the reader", lambda: counts and counts[-1] == 50, SETTLE_S, 0.01)
    finally:
        stop.set()
        thread.join(5)
    assert set(counts) <= {0, 50}, sorted(set(counts))
    assert counts.count(0) > 0 and counts.count(50) > 0
    print(f"\nreader polls: {len(counts)}, distinct counts seen: {sorted(set(counts))}")


def _partition(cluster: Cluster, side_a: list[AgentProc], side_b: list[AgentProc]) -> None:
    for mine, theirs in ((side_a, side_b), (side_b, side_a)):
        for agent in mine:
            drop = [other.gossip for other in theirs]
            assert agent.client.set_faults(drop)["drop"] == sorted(drop)


def test_partitioned_groups_both_write_then_heal_to_identical_replicas(steady: Cluster) -> None:
    cluster = steady
    side_a, side_b = cluster.agents[:3], cluster.agents[3:]
    # A key every agent holds before the cut: the heal must not lose it either.
    cluster.agents[0].client.config_put("service/before-partition", {}, SIGNER)
    wait_until(
        "service/before-partition everywhere",
        lambda: all(
            "service/before-partition" in cluster.config(a)["entities"] for a in cluster.agents
        ),  # fmt: skip
        SETTLE_S,
    )
    _partition(cluster, side_a, side_b)
    try:
        # Both sides write, including the same key; every write is acknowledged (durable).
        side_a[0].client.config_put("route/shared", ROUTE_A, SIGNER)
        side_a[1].client.config_put("service/only-a", {"protocol": "tcp"}, SIGNER)
        side_b[0].client.config_put("route/shared", ROUTE_B, SIGNER)
        side_b[1].client.config_put("service/only-b", {}, SIGNER)

        def side_has(side: list[AgentProc], key: str) -> bool:
            return all(key in cluster.config(a)["entities"] for a in side)

        # Each side's writes reach the whole side (the shared key too: it was written by
        # another agent than the one checked below, so it must be waited for as well).
        for side, own in ((side_a, "service/only-a"), (side_b, "service/only-b")):
            wait_until(
                f"{own} and route/shared within its side",
                lambda side=side, own=own: side_has(side, own) and side_has(side, "route/shared"),
                SETTLE_S,
            )
        assert "service/only-a" not in cluster.config(side_b[1])["entities"]
        assert "service/only-b" not in cluster.config(side_a[2])["entities"]
        assert cluster.config(side_b[1])["entities"]["route/shared"] == ROUTE_B
        blocked = side_a[0].client.health()["counters"]
        assert blocked.get("faults.udp_out", 0) + blocked.get("faults.udp_in", 0) > 0
    finally:
        for agent in cluster.agents:
            agent.client.clear_faults()
    healed_at = time.monotonic()
    try:
        view, took = wait_until("identical replicas after heal", cluster.converged, SETTLE_S, 0.05)
    except AssertionError:
        for agent in cluster.agents:
            print(agent.name, agent.members(), cluster.last_views[agent.name])
            print({k: v for k, v in agent.client.health()["counters"].items()
                   if k.startswith(("config", "faults"))})  # fmt: skip
        raise
    print(f"\npartition heal -> identical replicas: {(time.monotonic() - healed_at):.2f} s")
    for key in ("service/only-a", "service/only-b", "route/shared", "service/before-partition"):
        assert key in view["entities"], key  # no write lost
    assert view["entities"]["route/shared"] in (ROUTE_A, ROUTE_B)
    shown = cli("config", "conflicts", "--json", "--agent", cluster.agents[4].admin)
    assert shown.returncode == 0, shown.stderr
    conflicts = {c["key"]: c for c in json.loads(shown.stdout)["conflicts"]}
    assert set(conflicts) == {"route/shared"}
    values = [s["value"] for s in conflicts["route/shared"]["siblings"]]
    assert sorted(map(json.dumps, values)) == sorted(map(json.dumps, [ROUTE_A, ROUTE_B]))
    table = cli("config", "conflicts", "--agent", cluster.agents[0].admin)
    assert "route/shared" in table.stdout and "wins" in table.stdout
    # The winner is the same everywhere (the digests already say so; the API agrees).
    winners = {json.dumps(a.client.config_get("route/shared")["value"])
               for a in cluster.agents}  # fmt: skip
    assert len(winners) == 1


def test_kill_9_right_after_an_acknowledged_write_keeps_it(steady: Cluster) -> None:
    cluster = steady
    victim = cluster.agents[2]
    others = [a for a in cluster.agents if a is not victim]
    # Cut the victim off first, so after the restart the value can only come from its own disk.
    victim.client.set_faults([a.gossip for a in others])
    body = {"protocol": "tcp", "timeouts": {"connect_ms": 250}}
    ack = victim.client.config_put("service/durable", body, SIGNER)
    assert ack["durable"] is True
    victim.signal(signal.SIGKILL)
    victim.wait_exit(SETTLE_S)
    assert all("service/durable" not in cluster.config(a)["entities"] for a in others)
    victim.start()
    status, got = victim.client.request("GET", "/v1/config/service/durable")
    assert status == 200 and got["value"] == body
    assert got["version"]["writer"] == ack["written"]["service/durable"]["writer"]
    # ... and, now reachable, it spreads: nothing lost cluster-wide either.
    wait_until("durable write everywhere after restart",
               lambda: all("service/durable" in cluster.config(a)["entities"] for a in others),
               SETTLE_S)  # fmt: skip


def test_corrupt_store_refuses_to_start_then_rebuild_resyncs(steady: Cluster) -> None:
    cluster = steady
    victim = cluster.agents[4]
    # A key the victim holds before its store is damaged: the rebuild must fetch it back.
    cluster.agents[0].client.config_put("service/before-corruption", {"protocol": "tcp"}, SIGNER)
    wait_until(
        "service/before-corruption at the victim",
        lambda: "service/before-corruption" in cluster.config(victim)["entities"],
        SETTLE_S,
    )
    victim.stop()  # SIGKILL
    db = victim.data_dir / "replica.db"
    # Damage the file and its WAL (SQLite serves fresh pages from the WAL, so both must go).
    for path in (db, db.with_name("replica.db-wal")):
        if path.exists():
            path.write_bytes(
                b"this is not a database, it is garbage " * (path.stat().st_size // 38)
            )
    before = victim.log_path.stat().st_size
    with pytest.raises(AssertionError, match="exited 1"):
        victim.start()
    new_output = victim.log_path.read_bytes()[before:].decode().strip().splitlines()
    assert len(new_output) == 1, new_output
    assert "refusing to start" in new_output[0] and "--rebuild-config" in new_output[0]
    assert str(db) in new_output[0]
    victim.start(["--rebuild-config"])
    assert list(victim.data_dir.glob("replica.db.corrupt-*"))
    wait_until("rebuilt replica resynced", cluster.converged, SETTLE_S, 0.1)
    assert "service/before-corruption" in cluster.config(victim)["entities"]
    # A rebuilt replica writes under a new writer id: its counters cannot collide with old ones.
    victim.client.config_put("policy/after-rebuild", {"to": "api"}, SIGNER)
    wait_until("post-rebuild write everywhere", cluster.converged, SETTLE_S, 0.05)
    assert "policy/after-rebuild" in cluster.config(cluster.agents[0])["entities"]
