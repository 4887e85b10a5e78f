"""Scheduled shifts (config/shift.py): the timetable, validation, and the split a table built at
each moment gives, with the clock driven by the test (what every agent's sidecar does at each
step, from its own clock)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gossipmesh.config.route import RouteConfig
from gossipmesh.config.schema import validate_entity
from gossipmesh.config.shift import Shift, progress
from gossipmesh.errors import ConfigValidationError
from gossipmesh.proxy.routing import Directory, route
from gossipmesh.proxy.table import Endpoint, build_route_table

START = 1_700_000_000_000


def canary(shift: dict[str, Any]) -> RouteConfig:
    cfg = validate_entity("route", "hello", {"destinations": [
        {"service": "api", "weight": 100, "tags": ["v1"]},
        {"service": "api", "weight": 0, "tags": ["v2"], "shift": shift},
    ]})  # fmt: skip
    assert isinstance(cfg, RouteConfig)
    return cfg


def test_steps_pause_and_ends() -> None:
    s = Shift(0, 100, START, 10_000, 10, pause_after_step=5, pause_ms=3_000)
    assert s.weight_at(START - 1) == 0 and s.weight_at(START) == 0
    assert s.weight_at(START + 999) == 0 and s.weight_at(START + 1_000) == 10
    assert s.weight_at(START + 5_000) == 50 and s.weight_at(START + 7_999) == 50  # paused
    assert s.weight_at(START + 8_000) == 50 and s.weight_at(START + 9_000) == 60
    assert s.weight_at(START + 13_000) == 100 and s.weight_at(START + 10**9) == 100
    assert s.next_change_ms(START + 5_500) == START + 9_000
    assert s.next_change_ms(START + 13_000) is None
    assert progress(s, START + 2_500)["step"] == 2
    down = Shift(100, 0, START, 3_000, 3)
    assert [down.weight_at(START + k * 1_000) for k in range(4)] == [
        100,
        67,
        34,
        0,
    ]  # toward `from`


def test_a_shift_is_validated_and_round_trips() -> None:
    cfg = canary({"from": 0, "to": 100, "start_ms": START, "duration_ms": 60_000, "steps": 6})
    shift = cfg.destinations[1].shift
    assert shift is not None and shift.steps == 6
    with pytest.raises(ConfigValidationError) as exc:
        canary({"from": 0, "to": 100, "start_ms": START, "duration_ms": 60_000, "steps": 0})
    assert "shift.steps" in str(exc.value)
    with pytest.raises(ConfigValidationError):
        canary({"from": 0, "to": 100, "start_ms": START, "duration_ms": 60_000, "steps": 6,
                "bogus": 1})  # fmt: skip
    # Weights that are all 0 at some step are refused, naming the moment.
    with pytest.raises(ConfigValidationError) as exc:
        validate_entity("route", "r", {"destinations": [
            {"service": "a", "weight": 0, "shift": {"from": 10, "to": 0, "start_ms": START,
                                                    "duration_ms": 1000, "steps": 2}}]})  # fmt: skip
    assert "all weights are 0" in str(exc.value)


def share_of_v2(cfg: RouteConfig, wall_ms: int, rng: random.Random) -> float:
    eps = {"api": [Endpoint("n1", "10.0.0.1", 80, tags=("v1",)),
                   Endpoint("n2", "10.0.0.2", 80, tags=("v2",))]}  # fmt: skip
    d = Directory(build_route_table({}, {"hello": cfg}, eps, wall_ms=wall_ms))
    keys = [route(d.view, b"api", b"/", b"GET", [], rng)[1] for _ in range(4000)]
    return keys.count(("api", ("v2",))) / len(keys)


def test_the_observed_split_follows_the_schedule_within_one_step() -> None:
    # v2 goes 0 -> 100 against v1's fixed 100: 0 %, then 10/110, 20/120 ... 100/200.
    steps = 10
    cfg = canary({"from": 0, "to": 100, "start_ms": START, "duration_ms": 100_000,
                  "steps": steps})  # fmt: skip
    rng = random.Random(13)
    for t in range(START - 5_000, START + 110_000, 2_500):  # every half step, and after
        k = min(steps, max(0, (t - START) // 10_000))
        lo = 10 * max(0, k - 1) / (100 + 10 * max(0, k - 1))
        hi = 10 * min(steps, k + 1) / (100 + 10 * min(steps, k + 1))
        seen = share_of_v2(cfg, t, rng)
        assert lo - 0.03 <= seen <= hi + 0.03, (t - START, k, seen)
    assert share_of_v2(cfg, START - 1, rng) == 0.0
    assert 0.45 < share_of_v2(cfg, START + 100_000, rng) < 0.55
