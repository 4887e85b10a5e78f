"""The config replica in the simulator: spread, partition-edit, and checkers that can fail."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.agent import replica as agent_replica
from simulations import config_core
from simulations.cli import main
from simulations.config_core import ReplicaSettings
from simulations.scenarios import Hooks, Options, run


def _ok(opts: Options, hooks: Hooks | None = None) -> dict[str, Any]:
    res = run(opts, hooks)
    failed = [(r.label, c.name, c.detail) for r in res.runs for c in r.checks if not c.ok]
    assert not failed, f"{failed}\nreproduce: {opts.command()}"
    return res.runs[0].metrics


def _failed(res: Any) -> set[str]:
    return {c.name for r in res.runs for c in r.checks if not c.ok}


def test_the_simulated_replica_uses_the_agents_limits() -> None:
    assert config_core.SYNC_CONCURRENCY_MAX == agent_replica.SYNC_CONCURRENCY_MAX
    assert config_core.SPREAD_CONCURRENCY_MAX == agent_replica.SPREAD_CONCURRENCY_MAX
    assert config_core.TRIGGER_DEPTH == agent_replica.TRIGGER_DEPTH


@pytest.mark.parametrize("seed", (1, 2))
def test_config_spread_reaches_everyone_and_in_sync_pairs_are_cheap(seed: int) -> None:
    m = _ok(Options("config-spread", nodes=30, seed=seed, writes=3))
    assert m["acked_writes"] == 50 + 3  # preload (5 x 10 entities) + the tracked writes
    assert all(w["reached"] == w["live"] == 30 for w in m["spread_per_write"])
    assert m["spread_p100_s_max"] is not None
    # Most hosts hold a write after a few network latencies (eager push), not gossip rounds.
    assert m["spread_p50_s_max"] < 0.1
    # An in-sync pair exchanges a digest and a one-flag reply: a few hundred bytes at most.
    assert m["insync_pairs"] > 0 and m["insync_bytes_max"] < 400


@pytest.mark.parametrize(("seed", "split"), [(1, "half"), (2, "half"), (3, "one")])
def test_partition_edit_converges_with_conflicts_visible(seed: int, split: str) -> None:
    m = _ok(Options("partition-edit", nodes=30, seed=seed, split=split, hold_s=20))
    assert m["config_identical_after_heal_s"] is not None
    assert (
        m["acked_writes"] == 50 + 2 * 2 * 2 + 2
    )  # preload, 2 rounds x 2 sides x 2 keys, delete+update


def test_same_seed_same_trace() -> None:
    a = run(Options("partition-edit", nodes=20, seed=5, hold_s=10))
    b = run(Options("partition-edit", nodes=20, seed=5, hold_s=10))
    assert a.runs[0].trace_hash == b.runs[0].trace_hash


def test_a_replica_without_forward_or_anti_entropy_fails_the_config_checkers() -> None:
    broken = ReplicaSettings(forward=False, anti_entropy=False)
    res = run(Options("partition-edit", nodes=24, seed=1, hold_s=20), Hooks(replica=broken))
    failed = _failed(res)
    assert {"config-identical", "config-no-lost-write", "config-conflicts-visible"} <= failed


def test_cli_prints_seed_and_command_for_a_broken_replica(monkeypatch: Any, capsys: Any) -> None:
    import simulations.scenarios as scenarios

    real_run = scenarios.run

    def broken_run(opts: Options, hooks: Hooks | None = None) -> Any:
        return real_run(opts, Hooks(replica=ReplicaSettings(forward=False, anti_entropy=False)))

    monkeypatch.setattr("simulations.cli.run", broken_run)
    code = main(["partition-edit", "--nodes", "20", "--seed", "1", "--hold", "20", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "seed=1" in out
    assert "python -m simulations partition-edit --nodes 20 --seed 1 --hold 20" in out


def test_cold_start_still_runs_the_join_storm() -> None:
    m = _ok(Options("steady", nodes=30, seed=1, duration_s=20, cold_start=True, join_spread_s=5))
    assert m["warmup_s"] >= 5.0  # hosts joined over 5 s through real join exchanges
    w = _ok(Options("steady", nodes=30, seed=1, duration_s=20))
    assert w["warmup_s"] == 1.0  # warm start: every view whole after the first step


def test_config_options_are_validated() -> None:
    assert main(["config-spread", "--writes", "0", "--quiet"]) == 2
    assert main(["config-spread", "--forward-fanout", "-1", "--quiet"]) == 2
