"""Agents on real sockets, as real processes: join, failure, graceful leave, restart, isolation,
key rotation. Five agents on 127.0.0.2-6 (same ports), the `local` timing profile.

The tests share one cluster (starting five agents costs seconds), but none relies on another:
the ``steady`` fixture restarts whatever an earlier test stopped and waits until all five see
each other alive, so each test passes alone and in any order. Waits have generous deadlines and
fail naming what they waited for; how fast failures are detected is measured by
benchmarks/membership.py, not asserted here.
"""

from __future__ import annotations

import json
import signal
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

from gossipmesh.crypto import decode_key, generate_key, key_id

pytestmark = requires_loopback_aliases

IPS = [f"127.0.0.{i}" for i in range(2, 7)]
FOREIGN_IPS = ["127.0.0.7", "127.0.0.8"]


class Cluster:
    def __init__(self, procs: Procs) -> None:
        self.procs = procs
        self.key = generate_key()  # the cluster's current primary key (key rotation changes it)
        self.port = free_port_on(IPS + FOREIGN_IPS)
        self.agents: list[AgentProc] = []
        for i, ip in enumerate(IPS):
            args = ["--encrypt", self.key, "--cluster", "test"]
            if i > 0:
                args += ["--join", f"{IPS[0]}:{self.port}"]
            self.agents.append(procs.new(f"a{i + 1}", ip, self.port, args))

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.agents]

    def by(self, name: str) -> AgentProc:
        return next(a for a in self.agents if a.name == name)

    def views(self, names: list[str]) -> dict[str, dict[str, str]]:
        return {n: self.by(n).members() for n in names}

    def heal(self) -> None:
        """Restart every agent that is not running, then wait until all five see all alive."""
        seed = f"{IPS[0]}:{self.port}"
        for agent in self.agents:
            if not agent.running:
                agent.args = ["--encrypt", self.key, "--cluster", "test", "--join", seed]
                agent.start()
        everyone = dict.fromkeys(self.names, "alive")
        wait_until("5 alive everywhere", all_see(self, self.names, everyone), SETTLE_S)


@pytest.fixture(scope="module")
def cluster(procs: Procs) -> Cluster:
    c = Cluster(procs)
    for agent in c.agents:
        agent.start()
    return c


@pytest.fixture
def steady(cluster: Cluster) -> Cluster:
    """The shared cluster with all five agents running and alive in every view."""
    cluster.heal()
    return cluster


def all_see(cluster: Cluster, observers: list[str], expect: dict[str, str]) -> Any:
    class Views(dict[str, dict[str, str]]):
        ok = False

        def __bool__(self) -> bool:  # falsy until every observer agrees; printed on timeout
            return self.ok

    def check() -> Any:
        views = Views(cluster.views(observers))
        views.ok = all(all(v.get(n) == s for n, s in expect.items()) for v in views.values())
        return views

    return check


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True, timeout=30
    )


def test_five_agents_join_through_one_seed(steady: Cluster) -> None:
    cluster, names = steady, steady.names  # `steady` waited for 5 alive everywhere
    # The CLI's --json view, as scripts would read it.
    proc = cli("members", "--json", "--agent", cluster.agents[2].admin)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert sorted(r["name"] for r in rows) == names
    assert all(r["state"] == "alive" for r in rows)
    assert {"name", "address", "state", "incarnation", "meta"} <= set(rows[0])


def test_sigkill_is_seen_dead_and_restart_rejoins(steady: Cluster) -> None:
    cluster = steady
    victim = cluster.by("a5")
    others = ["a1", "a2", "a3", "a4"]
    before = victim.client.self_info()["incarnation"]
    victim.signal(signal.SIGKILL)
    victim.wait_exit(5)
    _, took = wait_until("a5 dead everywhere", all_see(cluster, others, {"a5": "dead"}), SETTLE_S)
    print(f"\na5 dead everywhere after {took:.1f}s")
    # Restart without --join: the saved peers bring it back, with a higher incarnation.
    victim.args = ["--encrypt", cluster.key, "--cluster", "test"]
    victim.start()
    wait_until(
        "a5 alive again",
        all_see(cluster, [*others, "a5"], {"a5": "alive", "a1": "alive"}),
        SETTLE_S,
    )
    assert victim.client.self_info()["incarnation"] > before


def test_sigterm_is_seen_left_and_monitor_streams_it(steady: Cluster) -> None:
    cluster = steady
    leaver = cluster.by("a4")
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gossipmesh",
            "monitor",
            "--json",
            "--agent",
            cluster.by("a1").admin,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert monitor.stdout is not None
        first = json.loads(monitor.stdout.readline())  # the stream is live before we act
        assert first["event"] == "monitor-start" and isinstance(first["ts_ms"], int)
        leaver.signal(signal.SIGTERM)
        assert leaver.wait_exit(SETTLE_S) == 0, leaver.log_tail()
        observers = ["a1", "a2", "a3", "a5"]
        wait_until("a4 left everywhere", all_see(cluster, observers, {"a4": "left"}), SETTLE_S)
        event = json.loads(monitor.stdout.readline())
        assert (event["event"], event["member"], event["state"]) == ("left", "a4", "left")
        assert isinstance(event["ts_ms"], int)
    finally:
        monitor.kill()
        monitor.wait(timeout=5)


def test_other_key_or_cluster_never_appears(steady: Cluster, procs: Procs) -> None:
    cluster = steady
    seed = f"{IPS[0]}:{cluster.port}"
    wrong_key = procs.new(
        "x-key", FOREIGN_IPS[0], cluster.port, ["--encrypt", generate_key(), "--cluster", "test"]
    )
    wrong_cluster = procs.new(
        "x-cluster", FOREIGN_IPS[1], cluster.port, ["--encrypt", cluster.key, "--cluster", "other"]
    )

    def decrypt_drops() -> int:
        dropped = cluster.by("a1").client.health()["dropped"]
        return int(dropped.get("decrypt", 0) + dropped.get("stream_decrypt", 0))

    def isolated() -> None:
        for view in cluster.views(["a1", "a2", "a3"]).values():
            assert "x-key" not in view and "x-cluster" not in view
        for foreigner in (wrong_key, wrong_cluster):
            assert set(foreigner.members()) == {foreigner.name}

    try:
        drops_before = decrypt_drops()
        for foreigner in (wrong_key, wrong_cluster):
            foreigner.start(["--join", seed])
        # The seed did hear the wrong-key agent (and refused what it could not decrypt) ...
        wait_until("a1 refusing x-key's packets", lambda: decrypt_drops() > drops_before, SETTLE_S)
        # ... and for several probe and gossip rounds of the local profile neither foreigner
        # shows up anywhere, nor does anyone show up at theirs.
        for _ in range(15):
            isolated()
            time.sleep(0.2)
    finally:
        wrong_key.stop()
        wrong_cluster.stop()


def test_key_rotation_keeps_everyone_alive(steady: Cluster) -> None:
    cluster = steady
    live = cluster.names
    old, new = cluster.key, generate_key()
    admin = cluster.by("a2").admin
    for step in (["install", new], ["use", new], ["remove", old]):
        proc = cli("keys", *step, "--json", "--agent", admin)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        assert result["num_ok"] == len(live) and result["failed"] == []
        if step[0] == "use":
            cluster.key = new  # from here on a restarted agent must bring the new key
    listed = json.loads(cli("keys", "list", "--json", "--agent", admin).stdout)
    assert listed["keys"] == {key_id(decode_key(new)): len(live)}  # ids, never the keys
    assert new not in json.dumps(listed) and old not in json.dumps(listed)
    # Membership survives: still alive everywhere a few probe rounds after the old key is gone.
    time.sleep(1.5)
    everyone = dict.fromkeys(live, "alive")
    wait_until("all alive after rotation", all_see(cluster, live, everyone), SETTLE_S)
    ring = json.loads((cluster.by("a3").data_dir / "keyring.json").read_text())
    assert ring == [new]
