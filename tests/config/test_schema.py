"""The config schema: defaults, field-precise errors, canonical round trips, garbage in."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.schema import (
    HeaderMatch,
    PathMatch,
    PolicyConfig,
    RouteConfig,
    ServiceConfig,
    check_entry,
    parse_agent_services,
    parse_duration_ms,
    parse_key,
    to_body,
    validate_entity,
    validate_key,
)
from gossipmesh.errors import ConfigValidationError

# ---------------------------------------------------------------------------------------------
# Examples


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


def test_route_with_every_match() -> None:
    r = validate_entity(
        "route",
        "web",
        {
            "hosts": ["Web.Example", "*.internal"],
            "path": {"regex": "^/v[0-9]+/.*"},
            "methods": ["get", "POST"],
            "headers": [
                {"name": "X-Canary", "exact": "1"},
                {"name": "x-user", "regex": "a.*"},
                {"name": "x-debug", "present": True},
            ],
            "destinations": [
                {"service": "api", "weight": 90, "tags": ["v1"]},
                {"service": "api", "weight": 10, "tags": ["v2"]},
            ],
            "priority": 5,
        },
    )
    assert isinstance(r, RouteConfig)
    assert r.hosts == ("web.example", "*.internal")
    assert r.methods == ("GET", "POST")
    assert r.path.kind == "regex" and r.path.matches("/v2/x") and not r.path.matches("/x/v2/")
    assert [h.name for h in r.headers] == ["x-canary", "x-user", "x-debug"]
    assert r.headers[1].matches("abc") and not r.headers[1].matches("bc")
    assert r.headers[2].matches("") and not r.headers[2].matches(None)
    assert [d.weight for d in r.destinations] == [90, 10]
    assert r.destinations[0].tags == ("v1",)
    assert r.priority == 5


def test_route_defaults() -> None:
    r = validate_entity("route", "r", {"destinations": [{"service": "api"}]})
    assert isinstance(r, RouteConfig)
    assert r.path == PathMatch("prefix", "/") and r.path.matches("/anything")
    assert r.hosts == () and r.methods == () and r.headers == () and r.priority == 0
    assert r.destinations[0].weight == 1


def test_policy_shape() -> None:
    p = validate_entity("policy", "p", {"to": "api", "from": ["web"], "action": "deny"})
    assert isinstance(p, PolicyConfig)
    assert p.from_services == ("web",) and p.action == "deny" and p.to == "api"


def test_hand_built_regex_matchers_compile_themselves() -> None:
    assert PathMatch("regex", "/a+").matches("/aaa")
    assert HeaderMatch("x", "regex", "b+").matches("bb")


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        (
            "route",
            {"destinations": [{"service": "api", "weight": -1}]},
            "route.destinations[0].weight",
        ),
        (
            "route",
            {"destinations": [{"service": "api", "weigth": 1}]},
            "route.destinations[0].weigth",
        ),
        ("route", {"destinations": []}, "route.destinations"),
        ("route", {}, "route.destinations"),
        ("route", {"destinations": [{"service": "a", "weight": 0}]}, "route.destinations"),
        (
            "route",
            {"destinations": [{"service": "a", "weight": True}]},
            "route.destinations[0].weight",
        ),
        ("route", {"destinations": [{"service": "a"}], "path": {}}, "route.path"),
        (
            "route",
            {"destinations": [{"service": "a"}], "path": {"exact": "/", "prefix": "/"}},
            "route.path",
        ),
        ("route", {"destinations": [{"service": "a"}], "path": {"regex": "("}}, "route.path.regex"),
        (
            "route",
            {"destinations": [{"service": "a"}], "path": {"prefix": "x"}},
            "route.path.prefix",
        ),
        ("route", {"destinations": [{"service": "a"}], "hosts": ["a b"]}, "route.hosts[0]"),
        (
            "route",
            {"destinations": [{"service": "a"}], "headers": [{"name": "x"}]},
            "route.headers[0]",
        ),
        (
            "route",
            {"destinations": [{"service": "a"}], "headers": [{"name": "x", "present": False}]},
            "route.headers[0].present",
        ),
        ("route", {"destinations": [{"service": "a"}], "methods": ["GE T"]}, "route.methods[0]"),
        (
            "route",
            {"destinations": [{"service": "a"}], "methods": ["GET", "get"]},
            "route.methods[1]",
        ),
        ("route", {"destinations": "api"}, "route.destinations"),
        ("service", {"protocol": "udp"}, "service.protocol"),
        ("service", {"timeouts": {"connect_ms": 0}}, "service.timeouts.connect_ms"),
        ("service", {"timeouts": {"per_try_ms": 20000}}, "service.timeouts.per_try_ms"),
        ("service", {"retry": {"on_status": [700]}}, "service.retry.on_status[0]"),
        ("service", {"retry": {"on_connect_failure": 1}}, "service.retry.on_connect_failure"),
        ("service", {"load_balancer": {"policy": "random"}}, "service.load_balancer.policy"),
        ("service", {"load_balancer": []}, "service.load_balancer"),
        (
            "service",
            {"outlier_detection": {"max_ejection_ms": 1}},
            "service.outlier_detection.max_ejection_ms",
        ),
        ("service", {"colour": "red"}, "service.colour"),
        ("policy", {}, "policy.to"),
        ("policy", {"to": "api", "action": "maybe"}, "policy.action"),
        ("policy", {"to": "api", "paths": ["nope"]}, "policy.paths[0]"),
    ],
)
def test_errors_name_the_field(kind: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate_entity(kind, "x", body)
    assert info.value.field == field
    assert info.value.reason


def test_keys() -> None:
    assert parse_key("route/web") == ("route", "web")
    for bad in ["route", "widget/x", "route/", "route/a b", "route/" + "a" * 129, "route/a/b"]:
        with pytest.raises(ConfigValidationError) as info:
            parse_key(bad)
        assert info.value.field == "key"
    assert isinstance(validate_key("service/api", {}), ServiceConfig)
    check_entry("service/api", {})
    with pytest.raises(ConfigValidationError):
        check_entry("service/api", ["not", "a", "mapping"])


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


# ---------------------------------------------------------------------------------------------
# Properties

names = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True)
tags = st.lists(st.from_regex(r"[a-z0-9=]{1,6}", fullmatch=True), max_size=3, unique=True)

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
                "on_connect_failure": st.booleans(),
                "budget_percent": st.integers(0, 100),
            },
        ),
        "circuit_breaker": st.fixed_dictionaries({}, optional={"max_pending": st.integers(0, 99)}),
    },
)

header_matches = st.one_of(
    st.builds(lambda n, v: {"name": n, "exact": v}, names, st.text(max_size=5)),
    st.builds(lambda n, v: {"name": n, "regex": v}, names, st.sampled_from(["a+", "[0-9]{2}"])),
    st.builds(lambda n: {"name": n, "present": True}, names),
)
route_bodies = st.fixed_dictionaries(
    {
        "destinations": st.lists(
            st.fixed_dictionaries(
                {"service": names, "weight": st.integers(1, 10_000)}, optional={"tags": tags}
            ),
            min_size=1,
            max_size=4,
        )
    },
    optional={
        "hosts": st.lists(st.sampled_from(["a.example", "*.b.example", "C"]), unique=True),
        "path": st.one_of(
            st.builds(lambda p: {"exact": "/" + p}, names),
            st.builds(lambda p: {"prefix": "/" + p}, names),
            st.just({"regex": "^/v[0-9]+/"}),
        ),
        "methods": st.lists(st.sampled_from(["GET", "PUT", "DELETE"]), unique=True),
        "headers": st.lists(header_matches, max_size=3),
        "priority": st.integers(-100, 100),
    },
)
policy_bodies = st.fixed_dictionaries(
    {"to": names},
    optional={
        "action": st.sampled_from(["allow", "deny"]),
        "from": st.lists(names, unique=True, max_size=3),
        "paths": st.lists(st.sampled_from(["/a", "/b/c"]), unique=True),
    },
)
entities = st.one_of(
    st.tuples(st.just("service"), names, service_bodies),
    st.tuples(st.just("route"), names, route_bodies),
    st.tuples(st.just("policy"), names, policy_bodies),
)


@settings(max_examples=150, deadline=None)
@given(entities)
def test_canonical_body_round_trips(entry: tuple[str, str, dict[str, Any]]) -> None:
    kind, name, body = entry
    entity = validate_entity(kind, name, body)
    canonical = to_body(entity)
    assert validate_entity(kind, name, canonical) == entity
    assert to_body(validate_entity(kind, name, canonical)) == canonical


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


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["service", "route", "policy"]), garbage_bodies | json_values)
def test_garbage_raises_only_config_validation_error(kind: str, body: Any) -> None:
    try:
        entity = validate_entity(kind, "x", body)
    except ConfigValidationError as e:
        assert isinstance(e.field, str) and e.reason
        return
    assert validate_entity(kind, "x", to_body(entity)) == entity


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["service", "node"]), json_values | st.lists(garbage_bodies))
)
def test_garbage_agent_files_raise_only_config_validation_error(doc: Any) -> None:
    with contextlib.suppress(ConfigValidationError):
        parse_agent_services(doc)
