"""Every scenario with fixed seeds at 20-50 nodes: the real core passes every checker."""

from __future__ import annotations

import pytest

from simulations.scenarios import Options, run

SEEDS = (1, 2, 3)


def _ok(opts: Options) -> dict:
    res = run(opts)
    failed = [(r.label, c.name, c.detail) for r in res.runs for c in r.checks if not c.ok]
    assert not failed, f"{failed}\nreproduce: {opts.command()}"
    return res.runs[0].metrics


@pytest.mark.parametrize("seed", SEEDS)
def test_steady_has_no_false_positives_and_constant_load(seed: int) -> None:
    m = _ok(Options("steady", nodes=40, seed=seed, duration_s=60))
    assert m["false_dead"] == 0 and m["false_suspect"] == 0
    # One ping sent and one ack sent per member per period (plus leftover join gossip).
    assert 1.9 <= m["msgs_per_node_per_period"] <= 3.5


@pytest.mark.parametrize("seed", SEEDS)
def test_crash_is_detected_and_disseminated(seed: int) -> None:
    m = _ok(Options("crash", nodes=40, seed=seed, kill=3))
    assert m["first_suspect_s"]["n"] == 3 and m["all_dead_s"]["n"] == 3
    # First suspicion within a few probe periods. Loose on purpose: members that probe a dead
    # host may stretch their period by Lifeguard's health score (see results/README.md).
    assert m["first_suspect_s"]["max"] < 12
    assert m["false_dead"] == 0


@pytest.mark.parametrize("seed", (1, 2))
def test_loss_sweep(seed: int) -> None:
    res = run(Options("loss", nodes=30, seed=seed, loss_rates=(0.0, 0.1, 0.25), duration_s=30))
    assert res.ok, [(r.label, c) for r in res.runs for c in r.checks if not c.ok]
    assert [r.metrics["loss"] for r in res.runs] == [0.0, 0.1, 0.25]
    assert res.runs[0].metrics["dropped"]["loss"] == 0
    assert res.runs[2].metrics["dropped"]["loss"] > res.runs[1].metrics["dropped"]["loss"] > 0


@pytest.mark.parametrize("seed", (1, 2))
def test_slow_nodes_lifeguard_on_and_off(seed: int) -> None:
    res = run(Options("slow-nodes", nodes=30, seed=seed, slow=2, duration_s=40))
    assert res.ok, [(r.label, c) for r in res.runs for c in r.checks if not c.ok]
    on, off = res.runs
    assert on.metrics["lifeguard"] is True and off.metrics["lifeguard"] is False


@pytest.mark.parametrize(("seed", "split"), [(1, "half"), (2, "half"), (3, "one")])
def test_partition_heals(seed: int, split: str) -> None:
    m = _ok(Options("partition", nodes=30, seed=seed, split=split, hold_s=20))
    assert m["heal_to_whole_s"] is not None


def test_asymmetric_partition_heals() -> None:
    _ok(Options("partition", nodes=24, seed=4, asymmetric=True, hold_s=20, flaps=1))


@pytest.mark.parametrize("seed", SEEDS)
def test_churn(seed: int) -> None:
    m = _ok(Options("churn", nodes=30, seed=seed, churn_rate=1.0, churn_s=30))
    assert sum(m["churn_events"].values()) > 10


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["steady", "crash", "partition", "churn", "slow-nodes"])
def test_scenarios_at_300_nodes(scenario: str) -> None:
    res = run(Options(scenario, nodes=300, seed=9))
    assert res.ok, [(r.label, c) for r in res.runs for c in r.checks if not c.ok]
