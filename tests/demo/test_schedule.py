"""The demo's scheduled shift: a valid route whose steps fill the run's tail in equal windows, and
a summary that judges each step and ends the 50/50 split where the schedule starts."""

from __future__ import annotations

import io

from rich.console import Console

from gossipmesh.config.route import parse_route
from gossipmesh.demo.plan import CANARY_ROUTE, make_plan
from gossipmesh.demo.schedule import SCHEDULE_STEPS, plan_schedule
from gossipmesh.demo.summary import build_summary, render
from gossipmesh.demo.traffic import Sample

WALL_MS = 1_800_000_000_000


def test_the_steps_fill_the_rest_of_the_run_in_equal_windows() -> None:
    s = plan_schedule(15.0, WALL_MS, 20.0)
    assert s.steps == SCHEDULE_STEPS == 4 and s.step_ms == 1000
    assert (s.start_s, s.end_s) == (15.0, 19.0)  # the last step holds for the last window
    assert [s.weights(k) for k in range(5)] == [(50, 50), (38, 62), (25, 75), (13, 87), (0, 100)]
    assert [s.step_at(t) for t in (14.0, 15.0, 15.99, 16.0, 18.5, 19.0, 25.0)] == [
        0,
        0,
        0,
        1,
        3,
        4,
        4,
    ]
    route = parse_route(CANARY_ROUTE.split("/")[1], s.route())
    v1, v2 = route.destinations
    assert v1.tags == ("v1",) and v2.tags == ("v2",)
    # What every agent computes on its own clock agrees with the demo's mapping.
    for t in (15.5, 16.2, 17.7, 18.1, 19.3):
        wall = WALL_MS + round((t - 15.0) * 1000)
        assert (v1.weight_at(wall), v2.weight_at(wall)) == s.weights(s.step_at(t))


def sample(t_s: float, version: str) -> Sample:
    return Sample(t_s, 2.0, 200, version, f"n1-api-{version}", False)


def test_summary_judges_each_step_and_ends_the_split_after_where_it_starts() -> None:
    plan = make_plan(3, 20)
    s = plan_schedule(15.0, WALL_MS, 20.0)
    # 50/50 from 10 s to 15 s, then v2 only: the 50/50 split must not count the v2-only tail.
    samples = [sample(10 + i / 20, "v1" if i % 2 else "v2") for i in range(100)]
    samples += [sample(15 + i / 20, "v2") for i in range(100)]
    results = {
        "shift": {"at_s": 9.9, "seen_at_entry_s": 10.0, "key": CANARY_ROUTE, "written_via": "n3"},
        "scheduled_shift": {"key": CANARY_ROUTE, "written_via": "n3", **s.describe()},
    }
    proxy: dict[str, dict[str, float]] = {"retries": {}, "ejections": {}}
    summary = build_summary(plan, samples, 20.0, results, {}, proxy, [], False, "/tmp/x", [])
    after = summary["canary"]["after"]
    assert after["requests"] == 100 and after["v2_share"] == 0.5, after
    sched = summary["scheduled_shift"]
    assert (sched["start_s"], sched["end_s"], sched["steps"]) == (15.0, 19.0, 4)
    steps = sched["per_step"]
    assert [p["expected_v2_share"] for p in steps] == [0.5, 0.62, 0.75, 0.87, 1.0]
    assert [p["requests"] for p in steps] == [20] * 5
    assert (steps[-1]["from_s"], steps[-1]["to_s"]) == (19.0, 20.0)
    assert [p["v2_share"] for p in steps] == [1.0] * 5  # the samples above: v2 only
    assert steps[-1]["tolerance"] == 0.02 and steps[-1]["within_tolerance"] is True
    out = io.StringIO()
    render(Console(file=out, width=200), summary)
    assert "scheduled shift" in out.getvalue() and "100→100 (n=20)" in out.getvalue()
