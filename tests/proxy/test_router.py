"""Route matching and the route table: precedence, regex, headers, hosts, weights."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.schema import validate_entity
from gossipmesh.proxy.router import choose_destination, match, normalise_host
from gossipmesh.proxy.table import Endpoint, build_route_table


def route(name: str, **body: object):
    body.setdefault("destinations", [{"service": name}])
    return validate_entity("route", name, body)


def table(*routes, endpoints=None):
    return build_route_table({}, {r.name: r for r in routes}, endpoints or {})


def pick(t, host="api", path="/", method="GET", headers=()):
    r = match(t.index, normalise_host(host), path, method, list(headers))
    return r.name if r else None


def test_no_routes_means_no_match():
    t = table()
    assert pick(t) is None


def test_exact_beats_regex_beats_longer_prefix_beats_shorter():
    t = table(
        route("short", path={"prefix": "/"}),
        route("long", path={"prefix": "/api/v1"}),
        route("re", path={"regex": "/api/v[0-9]+/users"}),
        route("exact", path={"exact": "/api/v1/users"}),
    )
    assert pick(t, path="/api/v1/users") == "exact"
    assert pick(t, path="/api/v2/users") == "re"
    assert pick(t, path="/api/v1/other") == "long"
    assert pick(t, path="/other") == "short"


def test_regex_is_a_full_match():
    t = table(route("re", path={"regex": "/v[0-9]+"}))
    assert pick(t, path="/v12") == "re"
    assert pick(t, path="/v12/x") is None


def test_priority_wins_before_specificity():
    t = table(
        route("exact", path={"exact": "/x"}),
        route("catchall", path={"prefix": "/"}, priority=5),
    )
    assert pick(t, path="/x") == "catchall"


def test_more_headers_then_methods_then_hosts_then_name():
    t = table(
        route("plain"),
        route("canary", headers=[{"name": "x-canary", "exact": "1"}]),
        route("posts", methods=["POST"]),
        route("hosted", hosts=["api"]),
    )
    assert pick(t, headers=[(b"x-canary", b"1")], method="POST") == "canary"
    assert pick(t, headers=[(b"x-canary", b"0")], method="POST") == "posts"
    assert pick(t, method="GET", host="api") == "hosted"
    assert pick(t, method="GET", host="other") == "plain"


def test_header_regex_and_present():
    t = table(
        route("re", headers=[{"name": "x-user", "regex": "u[0-9]+"}]),
        route("present", headers=[{"name": "x-debug", "present": True}], priority=-1),
    )
    assert pick(t, headers=[(b"x-user", b"u42")]) == "re"
    assert pick(t, headers=[(b"x-user", b"u42x")]) is None
    assert pick(t, headers=[(b"x-debug", b"")]) == "present"


def test_hosts_case_insensitive_port_ignored_and_wildcards():
    t = table(
        route("exact", hosts=["api.example"]),
        route("wild", hosts=["*.example"]),
    )
    assert pick(t, host="API.Example:8080") == "exact"
    assert pick(t, host="web.example") == "wild"
    assert pick(t, host="example") is None
    assert pick(t, host="other.org") is None
    # The unknown-host memo gives the same answers the second time.
    assert pick(t, host="web.example") == "wild"


def test_normalise_host():
    assert normalise_host("API:80") == "api"
    assert normalise_host("[::1]:80") == "::1"
    assert normalise_host("api") == "api"


def test_table_clusters_follow_tags_and_defaults():
    eps = {
        "api": [
            Endpoint("n1", "10.0.0.1", 80, tags=("v1",)),
            Endpoint("n2", "10.0.0.2", 80, tags=("v2", "canary")),
        ]
    }
    r = route(
        "split",
        destinations=[
            {"service": "api", "weight": 90, "tags": ["v1"]},
            {"service": "api", "weight": 10, "tags": ["canary", "v2"]},
        ],
    )
    t = table(r, endpoints=eps)
    assert [e.node for e in t.clusters[("api", ("v1",))].endpoints] == ["n1"]
    assert [e.node for e in t.clusters[("api", ("canary", "v2"))].endpoints] == ["n2"]
    assert len(t.clusters[("api", ())].endpoints) == 2
    assert t.services["api"].policy == "least_request"  # defaults without service/api


def test_service_settings_flattened():
    svc = validate_entity(
        "service", "api", {"load_balancer": {"policy": "ring_hash", "hash_header": "X-User"}}
    )
    t = build_route_table({"api": svc}, {}, {"api": [Endpoint("n", "1.2.3.4", 1)]})
    s = t.services["api"]
    assert s.policy == "ring_hash" and s.hash_header == "x-user"
    assert t.clusters[("api", ())].ring is not None


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=4).filter(
        lambda ws: sum(ws) > 0
    ),
    seed=st.integers(0, 2**32),
)
def test_weighted_destinations_honoured(weights: list[int], seed: int) -> None:
    r = route(
        "split",
        destinations=[{"service": f"s{i}", "weight": w} for i, w in enumerate(weights)],
    )
    t = table(r)
    rng = random.Random(seed)
    n = 4000
    counts = Counter(choose_destination(t.routes[0], rng)[0] for _ in range(n))
    total = sum(weights)
    for i, w in enumerate(weights):
        share = counts[f"s{i}"] / n
        if w == 0:
            assert share == 0
        else:
            assert abs(share - w / total) < 0.05, (weights, counts)


def _canary_table(v1_alive: bool, v2_alive: bool):
    canary = route(
        "api",
        destinations=[
            {"service": "api", "weight": 90, "tags": ["v1"]},
            {"service": "api", "weight": 10, "tags": ["v2"]},
        ],
    )
    eps = []
    if v1_alive:
        eps.append(Endpoint("n1", "127.0.0.1", 9001, tags=("v1",)))
    if v2_alive:
        eps.append(Endpoint("n2", "127.0.0.1", 9002, tags=("v2",)))
    table = build_route_table({}, {"api": canary}, {"api": eps})
    r = match(table.index, "api", "/", "GET", [])
    assert r is not None
    return r


def test_canary_share_of_a_destination_with_no_endpoint_goes_to_the_others() -> None:
    rng = random.Random(7)
    r = _canary_table(v1_alive=False, v2_alive=True)
    picks = Counter(choose_destination(r, rng) for _ in range(2000))
    assert picks == Counter({("api", ("v2",)): 2000})
    r = _canary_table(v1_alive=True, v2_alive=False)
    picks = Counter(choose_destination(r, rng) for _ in range(2000))
    assert picks == Counter({("api", ("v1",)): 2000})


def test_canary_weights_stay_when_every_destination_is_empty_or_all_are_served() -> None:
    rng = random.Random(7)
    for alive in (False, True):
        r = _canary_table(v1_alive=alive, v2_alive=alive)
        picks = Counter(choose_destination(r, rng) for _ in range(4000))
        assert 0.86 < picks[("api", ("v1",))] / 4000 < 0.94, picks


def test_route_regexes_run_on_re2_and_a_catastrophic_pattern_does_not_hold_the_loop():
    import re2
    import trio

    t = table(
        route("evil", path={"regex": "/(a+)+$"}, headers=[{"name": "x-id", "regex": "(a|aa)+$"}])
    )
    (compiled,) = t.routes
    assert isinstance(compiled.path_regex, re2._Regexp)
    assert isinstance(compiled.headers[0].regex, re2._Regexp)
    path = "/" + "a" * 25 + "!"  # 27 characters: 5.8 s of backtracking on Python's re
    value = "a" * 64 + "!"

    def catastrophic() -> str | None:
        return pick(t, path=path, headers=[(b"x-id", value.encode())])

    async def on_a_worker_thread() -> str | None:
        # A generous bound, not a benchmark: backtracking would take minutes to hours here.
        with trio.fail_after(30):
            return await trio.to_thread.run_sync(catastrophic, abandon_on_cancel=True)

    assert trio.run(on_a_worker_thread) is None
    assert pick(t, path="/aaa", headers=[(b"x-id", b"aaa")]) == "evil"
