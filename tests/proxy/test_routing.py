"""Route and destination (routing.py): the first steps of the decision pipeline, both paths.
No sockets: tables are built from config, requests are just (Host, target, method, headers)."""

from __future__ import annotations

import random
from typing import Any

from gossipmesh.config.schema import RouteConfig, ServiceConfig, validate_entity
from gossipmesh.proxy.routing import (
    MAX_ROUTE_CACHE,
    Directory,
    dest_available,
    inbound_instance,
    route,
    split_destination,
)
from gossipmesh.proxy.table import Endpoint, RouteTable, build_route_table


def routed(*args: object) -> tuple[str, object]:
    """``route``'s answer as (route name or "", cluster key)."""
    r, key = route(*args)  # type: ignore[arg-type]
    return (r.name if r is not None else ""), key


def route_cfg(name: str, **body: Any) -> RouteConfig:
    body.setdefault("destinations", [{"service": "api"}])
    cfg = validate_entity("route", name, body)
    assert isinstance(cfg, RouteConfig)
    return cfg


def service_cfg(name: str, **body: Any) -> ServiceConfig:
    cfg = validate_entity("service", name, body)
    assert isinstance(cfg, ServiceConfig)
    return cfg


def endpoints(n: int = 2, inbound: tuple[str, int] | None = None) -> dict[str, list[Endpoint]]:
    eps = [Endpoint(f"n{i}", f"10.0.0.{i}", 80, inbound=inbound) for i in range(n)]
    return {"api": eps}


def table(*routes: RouteConfig, **services: ServiceConfig) -> RouteTable:
    return build_route_table(services, {r.name: r for r in routes}, endpoints())


def test_no_route_goes_to_the_cluster_the_host_names() -> None:
    d = Directory(table())
    rng = random.Random(1)
    assert routed(d.view, b"API:8080", b"/x?q", b"GET", [], rng) == ("", ("api", ()))
    assert routed(d.view, b"other", b"/", b"GET", [], rng) == ("", ("other", ()))
    assert ("api", ()) in d.view.dests and ("other", ()) not in d.view.dests


def test_routes_are_memoised_per_host_path_and_method_without_the_query() -> None:
    t = table(route_cfg("v1", path={"prefix": "/v1"}), route_cfg("posts", methods=["POST"]))
    d = Directory(t)
    rng = random.Random(2)
    assert routed(d.view, b"api", b"/v1/a?x=1", b"GET", [], rng) == ("v1", ("api", ()))
    assert routed(d.view, b"api", b"/v1/a?x=2", b"GET", [], rng) == ("v1", ("api", ()))
    assert routed(d.view, b"api", b"/v2", b"POST", [], rng) == ("posts", ("api", ()))
    assert routed(d.view, b"api", b"/v2", b"GET", [], rng) == ("", ("api", ()))
    cache = d.view.route_cache
    assert cache is not None and len(cache) == 3
    assert (b"api", b"/v1/a", b"GET") in cache
    # Bounded: a flood of distinct paths empties the memo instead of growing it.
    for i in range(MAX_ROUTE_CACHE + 10):
        routed(d.view, b"api", b"/p%d" % i, b"GET", [], rng)
    assert len(cache) <= MAX_ROUTE_CACHE
    # A new table starts with an empty memo.
    d.update_table(t)
    assert d.view.route_cache == {}


def test_header_routes_are_matched_every_time_without_a_memo() -> None:
    t = table(route_cfg("canary", headers=[{"name": "x-canary", "exact": "1"}]))
    d = Directory(t)
    rng = random.Random(3)
    assert d.view.route_cache is None
    assert routed(d.view, b"api", b"/", b"GET", [(b"x-canary", b"1")], rng)[0] == "canary"
    assert routed(d.view, b"api", b"/", b"GET", [(b"x-canary", b"0")], rng)[0] == ""


def test_destination_weights_decide_the_cluster() -> None:
    split = route_cfg(
        "split",
        destinations=[
            {"service": "api", "weight": 90, "tags": ["v1"]},
            {"service": "api", "weight": 10, "tags": ["v2"]},
        ],
    )
    d = Directory(table(split))
    rng = random.Random(4)
    keys = [routed(d.view, b"api", b"/", b"GET", [], rng)[1] for _ in range(2000)]
    v2 = sum(k == ("api", ("v2",)) for k in keys)
    assert v2 + sum(k == ("api", ("v1",)) for k in keys) == 2000
    assert 100 < v2 < 300  # about 10 %


def test_dest_gathers_what_a_request_needs() -> None:
    eps = endpoints(2, inbound=("10.9.9.9", 4143))
    t = build_route_table({"api": service_cfg("api")}, {}, eps)
    d = Directory(t).view.dests[("api", ())]
    assert d.service == "api" and d.balancer is not None and d.fast
    assert d.pool_keys == (("api", "10.9.9.9", 4143), ("api", "10.9.9.9", 4143))
    assert d.mesh_lines[1] == (b"x-gossipmesh-dest: 10.0.0.1:80\r\nx-gossipmesh-service: api\r\n")
    assert d.host_line == b"host: 10.0.0.0:80\r\n"
    assert d.peers == d.states and len(d.states) == 2
    ring = service_cfg("api", load_balancer={"policy": "ring_hash"})
    d = Directory(build_route_table({"api": ring}, {}, eps)).view.dests[("api", ())]
    assert not d.fast  # ring hash needs the request's hash key: the general path picks


def test_endpoint_state_survives_a_table_swap_while_in_flight() -> None:
    d = Directory(table())
    st0, st1 = d.view.dests[("api", ())].states
    st0.inflight = 1
    st1.times_ejected = 3
    d.update_table(build_route_table({}, {}, {"api": [Endpoint("n0", "10.0.0.0", 80)]}))
    assert d.view.dests[("api", ())].states[0] is st0
    assert ("n1", "10.0.0.1", 80) not in d.states  # gone from the table and idle: forgotten
    st0.inflight = 0
    d.update_table(RouteTable())
    assert not d.states


def test_budget_and_breaker_are_per_service_and_follow_settings() -> None:
    d = Directory(table(api=service_cfg("api")))
    dest = d.view.dests[("api", ())]
    assert dest.breaker is d.breaker("api") and dest.budget is d.budgets["api"]
    d.update_table(table(api=service_cfg("api", retry={"budget_percent": 50})))
    assert d.view.dests[("api", ())].budget is not dest.budget
    assert d.view.dests[("api", ())].breaker is dest.breaker  # counters outlive tables


def test_inbound_reaches_only_registered_local_instances() -> None:
    d = Directory(RouteTable())
    d.update_local_services({"api": [("127.0.0.1", 8080)], "db": [("127.0.0.1", 5432)]})
    local = d.local
    assert inbound_instance(local, b" 127.0.0.1:8080 ", b"") == ("api", "127.0.0.1", 8080)
    assert inbound_instance(local, b"127.0.0.1:9999", b"api") is None  # not in the registry
    assert inbound_instance(local, b"10.0.0.1:8080", b"") is None  # never an open proxy
    # Without x-gossipmesh-dest: only if the Host names exactly one local instance.
    assert inbound_instance(local, b"", b"db:80") == ("db", "127.0.0.1", 5432)
    assert inbound_instance(local, b"", b"") is None
    d.update_local_services({"api": [("127.0.0.1", 8080), ("127.0.0.1", 8081)]})
    assert inbound_instance(d.local, b"", b"api") is None


def test_local_dest_has_no_balancer_and_is_cached() -> None:
    d = Directory(table(api=service_cfg("api", timeouts={"per_try_ms": 123})))
    d.update_local_services({"api": [("127.0.0.1", 8080)]})
    local = ("api", "127.0.0.1", 8080)
    dest = d.local_dest(local)
    assert dest.balancer is None and dest.mesh_lines == (b"",) and dest.fast
    assert dest.settings.per_try_ms == 123  # the service's own settings apply
    assert d.local_dest(local) is dest
    d.update_table(RouteTable())
    assert d.local_dest(local) is not dest and d.local_dest(local).settings.name == "api"


def canary_directory(v1: int = 80, v2: int = 20) -> Directory:
    """Route ``hello``: v1 and v2 of service api, one instance each (the issue's scenario)."""
    split = route_cfg(
        "hello",
        destinations=[
            {"service": "api", "weight": v1, "tags": ["v1"]},
            {"service": "api", "weight": v2, "tags": ["v2"]},
        ],
    )
    eps = {
        "api": [
            Endpoint("n1", "10.0.0.1", 80, tags=("v1",)),
            Endpoint("n2", "10.0.0.2", 80, tags=("v2",)),
        ]
    }
    return Directory(build_route_table({}, {"hello": split}, eps))


def test_a_split_destination_with_no_available_endpoint_yields_its_share_and_takes_it_back() -> (
    None
):
    d = canary_directory()
    v1 = d.view.dests[("api", ("v1",))]
    rng = random.Random(5)
    now_ns = 1_000
    horizon_ns = 0  # nothing ejected or down: the weights decide
    keys = [route(d.view, b"api", b"/", b"GET", [], rng, now_ns, horizon_ns)[1] for _ in range(200)]
    assert 100 < keys.count(("api", ("v1",))) < 200
    v1.states[0].ejected_until_ns = now_ns + 10  # ejected: v1 has nothing available
    keys = [
        route(d.view, b"api", b"/", b"GET", [], rng, now_ns, now_ns + 10)[1] for _ in range(200)
    ]
    assert set(keys) == {("api", ("v2",))}
    v1.states[0].ejected_until_ns = 0
    v1.states[0].down_until_ns = now_ns + 10  # a connect to it failed: the same
    assert split_destination(d.view.table.routes[0], d.view.dests, rng, now_ns) == ("api", ("v2",))
    # Back once the mark has passed.
    later = [
        route(d.view, b"api", b"/", b"GET", [], rng, now_ns + 11, now_ns + 10)[1]
        for _ in range(200)
    ]
    assert 100 < later.count(("api", ("v1",))) < 200
    # With no destination available anywhere, the operator's split stands.
    d.view.dests[("api", ("v2",))].states[0].down_until_ns = now_ns + 10
    keys = [
        route(d.view, b"api", b"/", b"GET", [], rng, now_ns, now_ns + 10)[1] for _ in range(200)
    ]
    assert set(keys) == {("api", ("v1",)), ("api", ("v2",))}


def test_dest_available_skips_tried_down_and_ejected_endpoints() -> None:
    d = Directory(table()).view.dests[("api", ())]
    a, b = d.states
    assert dest_available(d, 5) and dest_available(d, 5, {a.key})
    assert not dest_available(d, 5, {a.key, b.key})
    b.down_until_ns = 6
    assert not dest_available(d, 5, {a.key}) and dest_available(d, 6, {a.key})
    assert not dest_available(None, 5)
