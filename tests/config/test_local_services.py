"""The agent file's ``[[service]]`` tables (gossipmesh/config/local_services.py): instances,
health checks, durations, field-precise errors, garbage in."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.schema import parse_agent_services, parse_duration_ms
from gossipmesh.errors import ConfigValidationError


def test_agent_services() -> None:
    services = parse_agent_services(
        {
            "node": {"name": "ignored: the agent's business"},
            "service": [
                {
                    "name": "api",
                    "port": 8080,
                    "tags": ["v1"],
                    "check": {"http": "/health", "interval": "1s", "timeout": "500ms"},
                },
                {"name": "db", "port": 5432, "address": "10.0.0.5", "check": {"tcp": True}},
                {"name": "cache", "port": 6379},
            ],
        }
    )
    api, db, cache = services
    assert api.address == "127.0.0.1" and api.tags == ("v1",) and api.weight == 1
    assert api.check is not None and api.check.kind == "http" and api.check.http_path == "/health"
    assert (api.check.interval_ms, api.check.timeout_ms) == (1000, 500)
    assert db.check is not None and db.check.kind == "tcp" and db.address == "10.0.0.5"
    assert cache.check is None
    assert parse_agent_services({}) == ()


@pytest.mark.parametrize(
    ("tables", "field"),
    [
        ([{"port": 1}], "service[0].name"),
        ([{"name": "a"}], "service[0].port"),
        ([{"name": "a", "port": 70000}], "service[0].port"),
        ([{"name": "a", "port": 1, "check": {}}], "service[0].check"),
        ([{"name": "a", "port": 1, "check": {"tcp": True, "http": "/"}}], "service[0].check"),
        (
            [{"name": "a", "port": 1, "check": {"tcp": True, "interval": "soon"}}],
            "service[0].check.interval",
        ),
        (
            [{"name": "a", "port": 1, "check": {"tcp": True, "interval": "1s", "timeout": "2s"}}],
            "service[0].check.timeout",
        ),
        ([{"name": "a", "port": 1, "address": "not an address"}], "service[0].address"),
        ([{"name": "a", "port": 1}, {"name": "b", "port": 1}], "service[1]"),
        ([{"name": "a", "port": 1, "prot": 2}], "service[0].prot"),
    ],
)
def test_agent_service_errors(tables: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_agent_services({"service": tables})
    assert info.value.field == field


def test_durations() -> None:
    assert parse_duration_ms("1s", "f") == 1000
    assert parse_duration_ms("500ms", "f") == 500
    assert parse_duration_ms("1m30s", "f") == 90_000
    assert parse_duration_ms("1.5s", "f") == 1500
    assert parse_duration_ms(250, "f") == 250
    for bad in ["", "1", "s", "1d", "-1s", True, 0, "0s"]:
        with pytest.raises(ConfigValidationError):
            parse_duration_ms(bad, "f")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "protocol", "load_balancer", "timeouts", "retry", "hosts", "path", "methods", "headers",
        "destinations", "priority", "to", "from", "action", "paths", "service", "weight", "tags",
        "exact", "prefix", "regex", "name", "present",
    ]
)  # fmt: skip
garbage_bodies = st.dictionaries(field_names | st.text(max_size=6), json_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["service", "node"]), json_values | st.lists(garbage_bodies))
)
def test_garbage_agent_files_raise_only_config_validation_error(doc: Any) -> None:
    with contextlib.suppress(ConfigValidationError):
        parse_agent_services(doc)


def test_a_grpc_check_names_the_service_to_ask_about() -> None:
    services = parse_agent_services(
        {"service": [{"name": "g", "port": 50051, "check": {"grpc": "pkg.Echo"}},
                     {"name": "h", "port": 50052, "check": {"grpc": ""}}]}
    )  # fmt: skip
    g, h = services
    assert g.check is not None and g.check.kind == "grpc" and g.check.grpc_service == "pkg.Echo"
    assert h.check is not None and h.check.kind == "grpc" and h.check.grpc_service == ""
    for bad in ({"grpc": "pkg/Echo"}, {"grpc": 5}, {"grpc": "", "tcp": True}):
        with pytest.raises(ConfigValidationError) as info:
            parse_agent_services({"service": [{"name": "g", "port": 1, "check": bad}]})
        assert info.value.field.startswith("service[0].check")
