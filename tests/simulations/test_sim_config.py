"""The config replica in the simulator: spread, partition-edit, and checkers that can fail.

The simulator runs the agent's own ``ReplicaCore``; the tests that break it patch that core (the
class the agent instantiates), so a checker that passes here passes on the code the agent runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gossipmesh.crdt import replica as core_module
from gossipmesh.crdt import replication
from gossipmesh.crdt.entries import Context, Delta, MergeResult
from gossipmesh.crdt.replica import ReplicaCore
from simulations.cli import main
from simulations.scenarios import Hooks, Options, run

CONFIG_CHECKS = {"config-identical", "config-no-lost-write", "config-conflicts-visible"}


def _ok(opts: Options, hooks: Hooks | None = None) -> dict[str, Any]:
    res = run(opts, hooks)
    failed = [(r.label, c.name, c.detail) for r in res.runs for c in r.checks if not c.ok]
    assert not failed, f"{failed}\nreproduce: {opts.command()}"
    return res.runs[0].metrics


def _failed(res: Any) -> set[str]:
    return {c.name for r in res.runs for c in r.checks if not c.ok}


def _forward_the_whole_incoming_context(monkeypatch: Any) -> None:
    """The bug ``MergeResult.forward`` exists to prevent: forward the new entries with the
    incoming delta's whole context, which names dots of entries left out. A receiver joins those
    dots, believes it holds the entries, and never asks for them again."""
    real = ReplicaCore._after_merge

    def broken(
        self: ReplicaCore, result: MergeResult, context: Context, root: bytes, origin: str
    ) -> Any:
        if result.forward is not None:
            result = dataclasses.replace(result, forward=Delta(result.forward.entries, context))
        return real(self, result, context, root, origin)

    monkeypatch.setattr(ReplicaCore, "_after_merge", broken)


def _drop_the_last_entry_of_each_merged_delta(monkeypatch: Any) -> None:
    """A merge that loses an entry but keeps the delta's context (so it believes it has it)."""
    real = ReplicaCore.merge_payload

    def broken(self: ReplicaCore, data: bytes, origin: str, wall_ms: int) -> Any:
        delta = core_module.decode_delta(data)
        if len(delta.entries) > 1:
            data = core_module.encode_delta(Delta(delta.entries[:-1], delta.context))
        return real(self, data, origin, wall_ms)

    monkeypatch.setattr(ReplicaCore, "merge_payload", broken)


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


def test_a_core_that_forwards_the_whole_incoming_context_fails_the_checkers(
    monkeypatch: Any,
) -> None:
    _forward_the_whole_incoming_context(monkeypatch)
    res = run(Options("partition-edit", nodes=24, seed=1, hold_s=20))
    assert {"config-identical", "config-no-lost-write"} <= _failed(res)


def test_a_core_that_drops_a_merged_entry_fails_the_checkers(monkeypatch: Any) -> None:
    _drop_the_last_entry_of_each_merged_delta(monkeypatch)
    res = run(Options("partition-edit", nodes=24, seed=1, hold_s=20))
    assert _failed(res) >= CONFIG_CHECKS


def test_a_core_that_does_not_forward_without_anti_entropy_fails_the_checkers(
    monkeypatch: Any,
) -> None:
    nothing = replication.Spread(gossip=False, udp_fanout=0, stream_fanout=0)
    monkeypatch.setattr(replication, "plan_forward", lambda *args, **kwargs: nothing)
    res = run(Options("partition-edit", nodes=24, seed=1, hold_s=20, anti_entropy=False))
    assert _failed(res) >= CONFIG_CHECKS


def test_the_unbroken_core_passes_the_same_runs() -> None:
    _ok(Options("partition-edit", nodes=24, seed=1, hold_s=20))


def test_cli_prints_seed_and_command_for_a_broken_replica(monkeypatch: Any, capsys: Any) -> None:
    _drop_the_last_entry_of_each_merged_delta(monkeypatch)
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
