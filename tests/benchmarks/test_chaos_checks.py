"""The chaos harness's schedule and checkers, on made-up records (no root, no processes)."""

from __future__ import annotations

from chaos_check import (
    Figures,
    check_false_dead,
    check_requests,
    check_resources,
    check_writes,
    whole_after,
)
from chaos_nemesis import KINDS, Fault, Schedule, make_schedule
from chaos_workload import Records


def test_schedule_is_a_function_of_the_seed() -> None:
    assert make_schedule(7, 5, 600) == make_schedule(7, 5, 600.0)  # the CLI's duration is a float
    assert make_schedule(7, 5, 600) != make_schedule(8, 5, 600)


def test_schedule_faults_do_not_overlap_and_leave_a_calm_tail() -> None:
    for seed in range(20):
        s = make_schedule(seed, 5, 600)
        assert s.faults
        for a, b in zip(s.faults, s.faults[1:], strict=False):
            assert a.end_s < b.start_s
        assert s.faults[0].start_s >= s.warmup_s
        assert s.last_heal_s <= s.duration_s - s.calm_tail_s
        for f in s.faults:
            assert set(f.hosts) | set(f.other) <= set(range(1, 6))
            assert not set(f.hosts) & set(f.other)


def test_a_long_schedule_plays_every_kind_and_kills_an_upstream_every_30_s() -> None:
    s = make_schedule(1, 5, 600)
    assert {f.kind for f in s.faults} == set(KINDS)
    gaps = [b.at_s - a.at_s for a, b in zip(s.upstream_kills, s.upstream_kills[1:], strict=False)]
    assert gaps and all(g == 30.0 for g in gaps)


def test_separates() -> None:
    halves = Fault("halves", 0, 10, (1, 2), (3, 4, 5))
    assert halves.separates(1, 3) and not halves.separates(1, 2) and not halves.separates(3, 5)
    bridge = Fault("bridge", 0, 10, (1, 2), (3, 4))  # h1 on both sides, h2 | h3,h4
    assert bridge.separates(2, 3) and not bridge.separates(1, 3) and not bridge.separates(1, 2)
    assert Fault("pause", 0, 10, (4,)).separates(4, 1)
    assert not Fault("clock", 0, 10, (4,), value=30).separates(4, 1)
    assert not Fault("loss", 0, 10, (4,), value=0.3).separates(4, 1)


def sched(*faults: Fault, hosts: int = 3, duration_s: float = 200.0) -> Schedule:
    return Schedule(1, hosts, duration_s, 5.0, 15.0, faults, ())


def test_a_dead_declaration_is_excused_only_by_a_fault_that_separates_the_pair() -> None:
    rec = Records()
    alive = {"h1": "alive", "h2": "alive", "h3": "alive"}
    rec.views += [(1.0, 1, 100, alive), (12.0, 1, 100, {**alive, "h3": "dead"})]
    rec.views += [(1.0, 2, 200, alive), (50.0, 2, 200, {**alive, "h3": "dead"})]
    s = sched(Fault("isolate", 10.0, 20.0, (3,)), Fault("clock", 45.0, 55.0, (3,), value=60))
    fig = Figures()
    check = check_false_dead(s, rec, fig)
    assert not check.ok
    assert fig.excused_dead == 1
    assert fig.false_dead == ["h2 declared h3 dead at 50.0 s"]


def test_a_restarted_observer_learning_old_deaths_is_not_a_declaration() -> None:
    rec = Records()
    rec.views += [(1.0, 1, 100, {"h1": "alive", "h2": "alive"})]
    rec.views += [(30.0, 1, 101, {"h1": "alive", "h2": "dead"})]  # a new process of h1
    fig = Figures()
    assert check_false_dead(sched(hosts=2), rec, fig).ok


def test_requests_from_a_host_whose_own_agent_is_down_are_not_judged() -> None:
    rec = Records()
    rec.views += [(1.0, 1, 100, {}), (25.0, 1, 101, {})]  # h1's agent back (new pid) at 25 s
    rec.requests += [(t / 4, 2, True, "", t / 4 + 0.01) for t in range(4000)]
    rec.requests += [(12.0, 1, False, "ConnectionRefusedError: x", 12.01)]
    rec.requests += [(29.0, 1, False, "backlog", 29.0)]
    s = sched(Fault("kill", 10.0, 20.0, (1,)))
    fig = Figures()
    check = check_requests(s, rec, fig)
    assert fig.excluded == {"kill": 1} and fig.judged == 4001 and fig.judged_ok == 4000
    assert check.ok  # 4000/4001 >= 99.9 %
    rec.requests += [(30.0, 1, False, "timeout", 40.0)] * 5
    assert not check_requests(s, rec, Figures()).ok


def test_a_request_in_flight_when_its_own_agent_is_killed_is_not_judged() -> None:
    rec = Records()
    rec.requests += [(9.9, 1, False, "RemoteDisconnected: closed", 10.05), (9.0, 1, True, "", 9.01)]
    s = sched(Fault("kill", 10.0, 20.0, (1,)))
    fig = Figures()
    check_requests(s, rec, fig)
    assert fig.excluded == {"kill": 1} and fig.judged == 1 and fig.judged_ok == 1


def test_writes_must_all_be_found_with_one_root_hash_within_the_bound() -> None:
    rec = Records()
    rec.writes += [
        (1.0, 1, "service/cw-00000", 0, True, ""),
        (2.0, 2, "service/cw-00001", 1, False, "x"),
    ]
    have = {"service/cw-00000": 0}
    assert check_writes(rec, {1: ("r", have), 2: ("r", have)}, 2, 50.0, 40.0, Figures()).ok
    assert not check_writes(rec, {1: ("r", have), 2: ("q", have)}, 2, 50.0, 40.0, Figures()).ok
    assert not check_writes(rec, {1: ("r", have), 2: ("r", {})}, 2, 50.0, 40.0, Figures()).ok
    assert not check_writes(rec, {1: ("r", have)}, 2, 50.0, 40.0, Figures()).ok
    assert not check_writes(rec, {1: ("r", have), 2: ("r", have)}, 2, 90.0, 40.0, Figures()).ok


def test_membership_is_whole_when_every_observer_sees_everyone_alive() -> None:
    rec = Records()
    both = {"h1": "alive", "h2": "alive"}
    rec.views += [(10.0, 1, 1, both), (10.5, 2, 1, {**both, "h1": "suspect"}), (11.5, 2, 1, both)]
    assert whole_after(rec, 2, 5.0) == 11.5
    assert whole_after(rec, 2, 11.0) is None  # h1 not heard from since


def test_resources_flag_growth_over_ten_percent() -> None:
    rec = Records()
    rec.samples += [(float(t), 1, 100, 50_000, 30) for t in range(0, 400, 5)]
    rec.samples += [(float(t), 2, 200, 50_000 + 100 * t, 30) for t in range(0, 400, 5)]
    fig = Figures()
    check = check_resources(sched(duration_s=400.0), rec, 20.0, fig)
    assert (
        not check.ok and "h2 pid 200" in check.detail and "h1" not in check.detail.split("over:")[1]
    )


def test_resources_judge_medians_not_spikes() -> None:
    rec = Records()
    # Descriptors pile up now and then (pending connects to cut-off peers) and go back: no leak.
    rec.samples += [(float(t), 1, 100, 50_000, 60 if t % 20 == 0 else 30) for t in range(0, 400, 5)]
    assert check_resources(sched(duration_s=400.0), rec, 20.0, Figures()).ok
    # One more held for good every 20 s: a leak.
    rec.samples += [(float(t), 2, 200, 50_000, 30 + t // 20) for t in range(0, 400, 5)]
    check = check_resources(sched(duration_s=400.0), rec, 20.0, Figures())
    assert not check.ok and "h2 pid 200" in check.detail and "h1 pid" not in check.detail


def test_short_lifetimes_are_reported_not_judged() -> None:
    rec = Records()
    rec.samples += [(float(t), 1, 100, 50_000 + 1000 * t, 30) for t in range(0, 60, 5)]
    check = check_resources(sched(duration_s=60.0), rec, 15.0, Figures())
    assert check.ok and "too short" in check.detail
    rec.samples += [(float(t), 2, 200, 50_000, 30 if t < 150 else 40) for t in range(0, 200, 5)]
    rec.samples += [(float(t), 3, 300, 50_000, 30) for t in range(0, 400, 5)]
    fig = Figures()
    assert check_resources(sched(duration_s=400.0), rec, 20.0, fig).ok
    assert [(g[0], g[6]) for g in fig.growth] == [(1, False), (2, False), (3, True)]
