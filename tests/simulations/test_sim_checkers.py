"""The checkers can fail: a deliberately broken core must be caught, with a reproducing command."""

from __future__ import annotations

import random
from typing import Any

from gossipmesh.ids import Address
from gossipmesh.swim.node import SwimNode
from simulations.cli import main
from simulations.cluster import Core
from simulations.scenarios import Hooks, Options, run


class NeverRefutes(SwimNode):
    """A core that takes every rumour about itself lying down: no refutation, ever."""

    def _refute(self, accused_incarnation: int, now_ms: int, out: list[Any]) -> None:
        return None


def never_refutes(
    name: str, address: Address, config: Any, rng: random.Random, now_ms: int, incarnation: int
) -> Core:
    return NeverRefutes(name, address, config, rng, now_ms, incarnation=incarnation)


class ForgetsDeaths(SwimNode):
    """A core whose ``_put`` of DEAD members is silent: the catalog would never hear of them."""

    def _put(self, member: Any, now_ms: int, out: list[Any]) -> None:
        before = len(out)
        super()._put(member, now_ms, out)
        if member.state.value == "dead":
            del out[before:]


def forgets_deaths(
    name: str, address: Address, config: Any, rng: random.Random, now_ms: int, incarnation: int
) -> Core:
    return ForgetsDeaths(name, address, config, rng, now_ms, incarnation=incarnation)


def _failed(res: Any) -> set[str]:
    return {c.name for r in res.runs for c in r.checks if not c.ok}


def test_real_core_passes_the_same_partition() -> None:
    assert run(Options("partition", nodes=20, seed=1, hold_s=20)).ok


def test_a_core_that_never_refutes_fails_accuracy_after_a_partition() -> None:
    res = run(Options("partition", nodes=20, seed=1, hold_s=20), Hooks(core_factory=never_refutes))
    failed = _failed(res)
    assert "accuracy" in failed
    assert "convergence-after-heal" in failed


def test_a_core_that_hides_deaths_fails_completeness_and_the_ledger_check() -> None:
    res = run(Options("crash", nodes=20, seed=1, kill=2), Hooks(core_factory=forgets_deaths))
    failed = _failed(res)
    assert "completeness" in failed
    assert "ledger-matches-core" in failed


def test_cli_prints_seed_and_command_and_exits_1(monkeypatch: Any, capsys: Any) -> None:
    import simulations.scenarios as scenarios

    real_run = scenarios.run

    def broken_run(opts: Options, hooks: Hooks | None = None) -> Any:
        return real_run(opts, Hooks(core_factory=never_refutes))

    monkeypatch.setattr("simulations.cli.run", broken_run)
    code = main(["partition", "--nodes", "20", "--seed", "1", "--hold", "20", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "seed=1" in out
    assert "python -m simulations partition --nodes 20 --seed 1 --hold 20" in out


def _raise_on_ping_req(monkeypatch: Any) -> None:
    def broken(self: SwimNode, *args: Any) -> None:
        raise RuntimeError("planted bug: ping-req")

    monkeypatch.setattr(SwimNode, "_on_ping_req", broken)


def test_a_core_that_raises_stops_the_run_and_fails_it(monkeypatch: Any) -> None:
    # Every node raises on each ping-req. The core once counted this as "error.internal" and
    # all six checkers passed; an exception is a bug, so the run must fail, naming it.
    _raise_on_ping_req(monkeypatch)
    res = run(Options("crash", nodes=20, seed=1, kill=2))
    assert not res.ok
    assert res.error is not None
    assert "RuntimeError: planted bug: ping-req" in res.error
    assert "_on_packet at t=" in res.error  # the engine names the event and the virtual time


def test_cli_prints_the_traceback_seed_and_command_when_a_core_raises(
    monkeypatch: Any, capsys: Any
) -> None:
    _raise_on_ping_req(monkeypatch)
    code = main(["crash", "--nodes", "20", "--seed", "3", "--kill", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "planted bug: ping-req" in out
    assert "seed=3" in out
    assert "python -m simulations crash --nodes 20 --seed 3 --kill 2" in out
