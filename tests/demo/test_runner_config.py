"""The demo starts traffic only once an agent holds the whole sample config (runner.py)."""

from __future__ import annotations

import copy

from gossipmesh.demo.plan import CANARY_ROUTE, sample_config
from gossipmesh.demo.runner import holds_sample_config


def test_the_whole_sample_config_is_enough() -> None:
    entities = {**sample_config(), "service/other": {"retry": {"attempts": 1}}}
    assert holds_sample_config(entities)


def test_the_canary_route_alone_is_not() -> None:
    """Agents learn an apply's entries one by one: the canary route can arrive before the route
    that pins /api/slow to v1, and traffic started then would break the pin."""
    partial = {k: v for k, v in sample_config().items() if k != "route/api-slow"}
    assert CANARY_ROUTE in partial
    assert not holds_sample_config(partial)


def test_an_older_value_is_not() -> None:
    entities = copy.deepcopy(sample_config())
    entities[CANARY_ROUTE]["destinations"][0]["weight"] += 1
    assert not holds_sample_config(entities)
