"""``service/NAME`` (gossipmesh/config/service.py): defaults, field-precise errors,
round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.schema import ServiceConfig, to_body, validate_entity
from gossipmesh.config.service import service_body
from gossipmesh.errors import ConfigValidationError


def test_service_defaults_match_the_documented_table() -> None:
    s = validate_entity("service", "api", {})
    assert isinstance(s, ServiceConfig)
    assert s.protocol == "http"
    assert s.load_balancer.policy == "least_request"
    assert s.load_balancer.hash_header == "x-request-id"
    assert (s.timeouts.connect_ms, s.timeouts.request_ms) == (1000, 15000)
    assert (s.timeouts.per_try_ms, s.timeouts.idle_ms) == (5000, 60000)
    assert s.retry.attempts == 2 and s.retry.on_status == (502, 503, 504)
    assert s.retry.on_connect_failure is True
    assert (s.retry.budget_percent, s.retry.budget_min_per_s) == (20, 10)
    assert s.circuit_breaker.max_connections == 1024
    assert s.outlier_detection.consecutive_failures == 5
    assert s.outlier_detection.max_ejection_ms == 300000
    assert s.outlier_detection.max_ejected_percent == 50


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"protocol": "udp"}, "service.protocol"),
        ({"timeouts": {"connect_ms": 0}}, "service.timeouts.connect_ms"),
        ({"timeouts": {"per_try_ms": 20000}}, "service.timeouts.per_try_ms"),
        ({"retry": {"on_status": [700]}}, "service.retry.on_status[0]"),
        ({"retry": {"on_grpc_status": [14, 0]}}, "service.retry.on_grpc_status[1]"),
        ({"retry": {"on_grpc_status": [17]}}, "service.retry.on_grpc_status[0]"),
        ({"retry": {"on_grpc_status": [14, 14]}}, "service.retry.on_grpc_status[1]"),
        ({"retry": {"on_connect_failure": 1}}, "service.retry.on_connect_failure"),
        ({"load_balancer": {"policy": "random"}}, "service.load_balancer.policy"),
        ({"load_balancer": []}, "service.load_balancer"),
        (
            {"outlier_detection": {"max_ejection_ms": 1}},
            "service.outlier_detection.max_ejection_ms",
        ),
        ({"colour": "red"}, "service.colour"),
    ],
)
def test_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("service", "x", body)
    assert info.value.field == field
    assert info.value.reason


names = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True)

service_bodies = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["http", "tcp"]),
        "load_balancer": st.fixed_dictionaries(
            {},
            optional={
                "policy": st.sampled_from(
                    ["round_robin", "least_request", "peak_ewma", "ring_hash"]
                ),
                "hash_header": st.sampled_from(["x-user", "X-Request-Id"]),
            },
        ),
        "timeouts": st.fixed_dictionaries(
            {
                "connect_ms": st.integers(1, 10_000),
                "request_ms": st.integers(20_000, 60_000),
                "per_try_ms": st.integers(1, 20_000),
            },
            optional={"idle_ms": st.integers(1, 100_000)},
        ),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "attempts": st.integers(0, 10),
                "on_status": st.lists(st.integers(100, 599), unique=True, max_size=4),
                "on_grpc_status": st.lists(st.integers(1, 16), unique=True, max_size=4),
                "on_connect_failure": st.booleans(),
                "budget_percent": st.integers(0, 100),
            },
        ),
        "circuit_breaker": st.fixed_dictionaries({}, optional={"max_pending": st.integers(0, 99)}),
    },
)


@settings(max_examples=150, deadline=None)
@given(names, service_bodies)
def test_canonical_body_round_trips(name: str, body: dict[str, Any]) -> None:
    entity = validate_entity("service", name, body)
    assert isinstance(entity, ServiceConfig)
    canonical = to_body(entity)
    assert canonical == service_body(entity)
    assert validate_entity("service", name, canonical) == entity
    assert to_body(validate_entity("service", name, canonical)) == canonical


def test_nodes_and_weight_max_say_who_may_serve() -> None:
    from gossipmesh.config.service import allows, parse_service

    svc = parse_service("api", {"nodes": ["api-*", "edge-1"], "weight_max": 50})
    assert svc.nodes == ("api-*", "edge-1") and svc.weight_max == 50
    assert allows(svc, "api-7", 50) is None and allows(svc, "edge-1", 1) is None
    assert allows(svc, "web-1", 1) == "node web-1 is not in service/api nodes"
    assert allows(svc, "api-1", 51) == "weight 51 is above service/api weight_max 50"
    assert (
        parse_service("any", {}).weight_max == 100
        and allows(parse_service("any", {}), "x", 100) is None
    )
    for body, field in (({"nodes": ["a b"]}, "service.nodes[0]"),
                        ({"nodes": "api-*"}, "service.nodes"),
                        ({"weight_max": 10_001}, "service.weight_max")):  # fmt: skip
        try:
            parse_service("api", body)
        except ConfigValidationError as exc:
            assert exc.field == field
        else:
            raise AssertionError(f"{body} accepted")


def test_default_policy_is_allow_unless_set_to_deny() -> None:
    assert validate_entity("service", "api", {}).default_policy == "allow"  # type: ignore[union-attr]
    s = validate_entity("service", "api", {"default_policy": "deny"})
    assert s.default_policy == "deny"  # type: ignore[union-attr]
    assert to_body(s)["default_policy"] == "deny"
    with pytest.raises(ConfigValidationError) as err:
        validate_entity("service", "api", {"default_policy": "maybe"})
    assert err.value.field == "service.default_policy"
