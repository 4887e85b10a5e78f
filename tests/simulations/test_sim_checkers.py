"""The checkers can fail: a deliberately broken core must be caught, with a reproducing command."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.swim.probe import Prober
from gossipmesh.swim.rumours import Rumours
from gossipmesh.swim.state import NodeState
from simulations.cli import main
from simulations.scenarios import Options, run


@pytest.fixture
def never_refutes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every core takes each rumour about itself lying down: no refutation, ever."""

    def refute(self: Rumours, accused_incarnation: int, now_ms: int, out: list[Any]) -> None:
        return None

    monkeypatch.setattr(Rumours, "refute", refute)


@pytest.fixture
def forgets_deaths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every core records DEAD members silently: the catalog would never hear of them."""
    real_put = NodeState.put

    def put(self: NodeState, member: Any, now_ms: int, out: list[Any]) -> None:
        before = len(out)
        real_put(self, member, now_ms, out)
        if member.state.value == "dead":
            del out[before:]

    monkeypatch.setattr(NodeState, "put", put)


def _failed(res: Any) -> set[str]:
    return {c.name for r in res.runs for c in r.checks if not c.ok}


def test_real_core_passes_the_same_partition() -> None:
    assert run(Options("partition", nodes=20, seed=1, hold_s=20)).ok


def test_a_core_that_never_refutes_fails_accuracy_after_a_partition(never_refutes: None) -> None:
    res = run(Options("partition", nodes=20, seed=1, hold_s=20))
    failed = _failed(res)
    assert "accuracy" in failed
    assert "convergence-after-heal" in failed


def test_a_core_that_hides_deaths_fails_completeness_and_the_ledger_check(
    forgets_deaths: None,
) -> None:
    res = run(Options("crash", nodes=20, seed=1, kill=2))
    failed = _failed(res)
    assert "completeness" in failed
    assert "ledger-matches-core" in failed
    # The crashed hosts are still held suspect: convergence names them, not just a count.
    (conv,) = [c for r in res.runs for c in r.checks if c.name == "convergence"]
    assert not conv.ok and "gone but alive/suspect at" in conv.detail, conv.detail


def test_cli_prints_seed_and_command_and_exits_1(never_refutes: None, capsys: Any) -> None:
    code = main(["partition", "--nodes", "20", "--seed", "1", "--hold", "20", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "seed=1" in out
    assert "python -m simulations partition --nodes 20 --seed 1 --hold 20" in out


def _raise_on_ping_req(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Prober, *args: Any) -> None:
        raise RuntimeError("planted bug: ping-req")

    monkeypatch.setattr(Prober, "on_ping_req", broken)


def test_a_core_that_raises_stops_the_run_and_fails_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every node raises on each ping-req. The core once counted this as "error.internal" and
    # all six checkers passed; an exception is a bug, so the run must fail, naming it.
    _raise_on_ping_req(monkeypatch)
    res = run(Options("crash", nodes=20, seed=1, kill=2))
    assert not res.ok
    assert res.error is not None
    assert "RuntimeError: planted bug: ping-req" in res.error
    assert "_on_packet at t=" in res.error  # the engine names the event and the virtual time


def test_cli_prints_the_traceback_seed_and_command_when_a_core_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _raise_on_ping_req(monkeypatch)
    code = main(["crash", "--nodes", "20", "--seed", "3", "--kill", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "planted bug: ping-req" in out
    assert "seed=3" in out
    assert "python -m simulations crash --nodes 20 --seed 3 --kill 2" in out


@pytest.fixture
def believes_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every core's authority accepts every claim: signed membership switched off."""
    from gossipmesh.identity.membership import MembershipAuthority

    for method in ("verify_alive", "verify_accusation"):
        monkeypatch.setattr(MembershipAuthority, method, lambda self, *a: None)
    monkeypatch.setattr(MembershipAuthority, "check_certificate", lambda self, *a: None)


def test_captured_hosts_forge_nothing_that_the_real_core_believes() -> None:
    res = run(Options("crash", nodes=30, seed=1, kill=1, captured=2, attack_s=20))
    assert res.ok, [c for r in res.runs for c in r.checks if not c.ok]
    metrics = res.runs[0].metrics
    assert metrics["forged_sent"] > 0
    assert metrics["membership_rejected"]["cert.wrong_name"] > 0
    assert metrics["membership_rejected"]["incarnation_bound"] > 0


def test_a_core_that_believes_anything_fails_the_forgery_check(believes_anything: None) -> None:
    res = run(Options("crash", nodes=30, seed=1, kill=1, captured=2, attack_s=20))
    assert "forgeries-refused" in _failed(res)


def test_the_ledger_keeps_any_incarnation_whatever_holds_it() -> None:
    # Views are C shorts while they fit; an incarnation past 13 bits widens the observer's array
    # to C ints, one past 29 bits to a list: the value read back is always the one heard.
    from gossipmesh.swim.member import Member, MemberState
    from simulations.harness import build, warm_start
    from simulations.scenarios import Hooks
    from simulations.views import V_ALIVE, V_SUSPECT

    c = build(Options("steady", nodes=4, seed=1), Hooks(), lifeguard=True, loss=0.0)
    warm_start(c)
    observer, subject = c.nodes[0], c.nodes[1]
    view = c.views[0]
    assert view is not None and getattr(view, "typecode", None) == "h"
    for inc, code, holder in ((10_000, V_SUSPECT, "i"), (2**40, V_ALIVE, None)):
        state = MemberState.SUSPECT if code == V_SUSPECT else MemberState.ALIVE
        c.observed.member_changed(observer, Member(subject.name, subject.address, inc, state, b""))
        view = c.views[0]
        assert view is not None and view[1] == inc << 2 | code
        assert getattr(view, "typecode", None) == holder
    assert c.observed.n_view[V_ALIVE][1] == 3 and c.observed.n_view[V_SUSPECT][1] == 0
