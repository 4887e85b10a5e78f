"""``route/NAME`` (gossipmesh/config/route.py): matches, defaults, field-precise errors,
round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.route import route_body
from gossipmesh.config.schema import (
    HeaderMatch,
    PathMatch,
    RouteConfig,
    to_body,
    validate_entity,
)
from gossipmesh.errors import ConfigValidationError


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


def test_hand_built_regex_matchers_compile_themselves() -> None:
    assert PathMatch("regex", "/a+").matches("/aaa")
    assert HeaderMatch("x", "regex", "b+").matches("bb")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"destinations": [{"service": "api", "weight": -1}]},
            "route.destinations[0].weight",
        ),
        (
            {"destinations": [{"service": "api", "weigth": 1}]},
            "route.destinations[0].weigth",
        ),
        ({"destinations": []}, "route.destinations"),
        ({}, "route.destinations"),
        ({"destinations": [{"service": "a", "weight": 0}]}, "route.destinations"),
        (
            {"destinations": [{"service": "a", "weight": True}]},
            "route.destinations[0].weight",
        ),
        ({"destinations": [{"service": "a"}], "path": {}}, "route.path"),
        (
            {"destinations": [{"service": "a"}], "path": {"exact": "/", "prefix": "/"}},
            "route.path",
        ),
        ({"destinations": [{"service": "a"}], "path": {"regex": "("}}, "route.path.regex"),
        (
            {"destinations": [{"service": "a"}], "path": {"regex": "/(a)\\1"}},
            "route.path.regex",
        ),
        (
            {"destinations": [{"service": "a"}], "headers": [{"name": "x", "regex": "(?=a)"}]},
            "route.headers[0].regex",
        ),
        (
            {"destinations": [{"service": "a"}], "path": {"prefix": "x"}},
            "route.path.prefix",
        ),
        ({"destinations": [{"service": "a"}], "hosts": ["a b"]}, "route.hosts[0]"),
        (
            {"destinations": [{"service": "a"}], "headers": [{"name": "x"}]},
            "route.headers[0]",
        ),
        (
            {"destinations": [{"service": "a"}], "headers": [{"name": "x", "present": False}]},
            "route.headers[0].present",
        ),
        ({"destinations": [{"service": "a"}], "methods": ["GE T"]}, "route.methods[0]"),
        (
            {"destinations": [{"service": "a"}], "methods": ["GET", "get"]},
            "route.methods[1]",
        ),
        ({"destinations": "api"}, "route.destinations"),
    ],
)
def test_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("route", "x", body)
    assert info.value.field == field
    assert info.value.reason


names = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True)
tags = st.lists(st.from_regex(r"[a-z0-9=]{1,6}", fullmatch=True), max_size=3, unique=True)

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


@settings(max_examples=150, deadline=None)
@given(names, route_bodies)
def test_canonical_body_round_trips(name: str, body: dict[str, Any]) -> None:
    entity = validate_entity("route", name, body)
    assert isinstance(entity, RouteConfig)
    canonical = to_body(entity)
    assert canonical == route_body(entity)
    assert validate_entity("route", name, canonical) == entity
    assert to_body(validate_entity("route", name, canonical)) == canonical


def test_a_regex_re2_cannot_run_is_refused_with_its_reason() -> None:
    with pytest.raises(ConfigValidationError) as e:
        validate_entity(
            "route", "r", {"destinations": [{"service": "a"}], "path": {"regex": "(?<=x)y"}}
        )
    assert e.value.field == "route.path.regex"
    assert "RE2" in str(e.value) and "(?<" in str(e.value)


def test_a_grpc_match_is_the_path_of_the_service_or_method() -> None:
    r = validate_entity(
        "route",
        "g",
        {"grpc": {"service": "pkg.v1.Echo", "method": "Say"}, "destinations": [{"service": "e"}]},
    )
    assert isinstance(r, RouteConfig)
    assert r.path == PathMatch("exact", "/pkg.v1.Echo/Say")
    assert r.path.matches("/pkg.v1.Echo/Say") and not r.path.matches("/pkg.v1.Echo/Other")
    whole = validate_entity("route", "g", {"grpc": {"service": "Echo"}, "destinations": [{"service": "e"}]})  # fmt: skip
    assert isinstance(whole, RouteConfig)
    assert whole.path == PathMatch("prefix", "/Echo/")
    for entity in (r, whole):  # the canonical body keeps the grpc form and round-trips
        body = to_body(entity)
        assert "grpc" in body and "path" not in body
        assert validate_entity("route", "g", body) == entity


@pytest.mark.parametrize(
    ("grpc", "field"),
    [
        ({"method": "Say"}, "route.grpc.service"),
        ({"service": "pkg..Echo"}, "route.grpc.service"),
        ({"service": "pkg/Echo"}, "route.grpc.service"),
        ({"service": "Echo", "method": "Say/x"}, "route.grpc.method"),
        ({"service": "Echo", "verb": "x"}, "route.grpc.verb"),
    ],
)
def test_bad_grpc_matches_name_the_field(grpc: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("route", "g", {"grpc": grpc, "destinations": [{"service": "e"}]})
    assert info.value.field == field


def test_a_route_has_path_or_grpc_not_both() -> None:
    body = {"grpc": {"service": "E"}, "path": {"prefix": "/"}, "destinations": [{"service": "e"}]}
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("route", "g", body)
    assert info.value.field == "route.grpc"
