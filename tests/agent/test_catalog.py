"""The catalog join (pure): which instances become endpoints, and what bad input does."""

from __future__ import annotations

import random
import time

from gossipmesh.agent.catalog import build_catalog, route_table
from gossipmesh.crdt.records import (
    Health,
    RecordBody,
    ServiceInstance,
    SignedRecord,
    make_record,
)
from gossipmesh.ids import Address
from gossipmesh.proxy.table import Endpoint
from gossipmesh.swim.member import Member, MemberState

LOCAL = "node-a"


def member(name: str, state: MemberState = MemberState.ALIVE, i: int = 1) -> Member:
    return Member(name, Address(f"127.0.0.{i}", 7946), 1, state, b"")


def inst(
    name: str = "api",
    port: int = 8080,
    health: Health = "passing",
    tags: tuple[str, ...] = (),
    weight: int = 1,
    address: str = "127.0.0.1",
) -> ServiceInstance:
    return ServiceInstance(name, address, port, tags, weight, health)


def body(*services: ServiceInstance, proxy: tuple[str, int] | None = None) -> RecordBody:
    return RecordBody(tuple(services), proxy)


def fake_sign(owner: str, version: int, body: bytes) -> tuple[bytes, bytes]:
    return b"\0" * 32, b"\0" * 64  # (signer fingerprint, signature): the catalog never checks


ROUTE_API = {"destinations": [{"service": "api"}]}


def test_suspect_kept_dead_left_unknown_dropped() -> None:
    members = [
        member(LOCAL),
        member("b", MemberState.SUSPECT, 2),
        member("c", MemberState.DEAD, 3),
        member("d", MemberState.LEFT, 4),
    ]
    records = [
        (owner, body(inst(), proxy=(f"127.0.0.{i}", 4143)))
        for i, owner in enumerate(["b", "c", "d", "e"], start=2)
    ]
    cat = build_catalog(members, records, LOCAL, [])
    assert [e.node for e in cat.endpoints["api"]] == ["b"]
    by_node = {i.node: i for i in cat.instances}
    assert by_node["b"].routable and by_node["b"].member_state == "suspect"
    assert not by_node["c"].routable and by_node["c"].member_state == "dead"
    assert not by_node["d"].routable and by_node["d"].member_state == "left"
    # "e" has a record but SWIM does not know it (reaped, or not joined yet): not routable.
    assert not by_node["e"].routable and by_node["e"].member_state == "unknown"


def test_only_passing_health_routes() -> None:
    records = [
        (
            "b",
            body(
                inst(port=1, health="passing"),
                inst(port=2, health="warning"),
                inst(port=3, health="critical"),
                inst(port=4, health="unknown"),
                proxy=("127.0.0.2", 4143),
            ),
        )
    ]
    cat = build_catalog([member("b")], records, LOCAL, [])
    assert [e.port for e in cat.endpoints["api"]] == [1]
    assert [(i.port, i.health, i.routable) for i in cat.instances] == [
        (1, "passing", True),
        (2, "warning", False),
        (3, "critical", False),
        (4, "unknown", False),
    ]


def test_local_instances_dial_directly_remote_through_inbound() -> None:
    members = [member(LOCAL), member("b", i=2)]
    records = [
        (LOCAL, body(inst(port=8080), proxy=("127.0.0.1", 4143))),
        ("b", body(inst(port=8080), proxy=("127.0.0.2", 4143))),
    ]
    eps = build_catalog(members, records, LOCAL, []).endpoints["api"]
    assert {e.node: e.inbound for e in eps} == {LOCAL: None, "b": ("127.0.0.2", 4143)}


def test_local_node_routes_even_if_swim_has_not_listed_it() -> None:
    cat = build_catalog([], [(LOCAL, body(inst()))], LOCAL, [])
    assert [e.node for e in cat.endpoints["api"]] == [LOCAL]
    assert cat.instances[0].member_state == "unknown"


def test_remote_without_proxy_address_is_not_routable() -> None:
    cat = build_catalog([member("b")], [("b", body(inst(), proxy=None))], LOCAL, [])
    assert "api" not in cat.endpoints
    assert not cat.instances[0].routable


def test_invalid_entities_are_skipped_and_reported() -> None:
    items = [
        ("route/bad", {"destinations": [{"service": "api", "weigth": 3}]}),
        ("route/good", ROUTE_API),
        ("route/notadict", ["x"]),
        ("service/api", {"timeouts": {"per_try_ms": 20000, "request_ms": 1000}}),
        ("service/web", {"protocol": "http"}),
        ("widget/x", {}),
        ("policy/p", {"to": "api"}),
    ]
    cat = build_catalog([member("b")], [("b", body(inst(), proxy=("h", 1)))], LOCAL, items)
    assert list(cat.routes) == ["good"]
    assert list(cat.services) == ["web"]
    assert list(cat.policies) == ["p"]
    assert [(x.key, x.field) for x in cat.invalid] == [
        ("route/bad", "route.destinations[0].weigth"),
        ("route/notadict", "route"),
        ("service/api", "service.timeouts.per_try_ms"),
        ("widget/x", "key"),
    ]
    # The table still builds and still routes the good route.
    table = route_table(cat)
    assert [r.name for r in table.routes] == ["good"]
    assert len(table.clusters[("api", ())].endpoints) == 1


def test_signed_records_decode_and_higher_version_wins() -> None:
    old = make_record("b", 1, body(inst(port=1), proxy=("127.0.0.2", 4143)), fake_sign)
    new = make_record("b", 2, body(inst(port=2), proxy=("127.0.0.2", 4143)), fake_sign)
    junk = SignedRecord("c", 5, b"\xc1 not msgpack", b"\0" * 64, b"\0" * 32)
    cat = build_catalog([member("b"), member("c")], [new, junk, old], LOCAL, [])
    assert [e.port for e in cat.endpoints["api"]] == [2]
    assert [x.key for x in cat.invalid] == ["record/c"]


def test_duplicate_instance_in_one_record_counts_once() -> None:
    cat = build_catalog([member("b")], [("b", body(inst(), inst(), proxy=("h", 1)))], LOCAL, [])
    assert len(cat.endpoints["api"]) == 1
    assert len(cat.instances) == 1


def _scenario(n_nodes: int) -> tuple[list[Member], list[tuple[str, RecordBody]]]:
    states = [MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT]
    health: list[Health] = ["passing", "passing", "critical", "unknown"]
    members, records = [], []
    for n in range(n_nodes):
        name = f"n{n:04d}"
        members.append(member(name, states[n % 4]))
        services = [
            inst(f"svc{(n + k) % 7}", 8000 + k, health[(n + k) % 4], (f"v{k % 2}",))
            for k in range(5)
        ]
        records.append((name, body(*services, proxy=(f"10.0.{n // 250}.{n % 250}", 4143))))
    return members, records


def test_deterministic_whatever_the_input_order() -> None:
    members, records = _scenario(40)
    items = [("route/a", ROUTE_API), ("service/svc1", {}), ("route/b", {"bad": 1})]
    first = build_catalog(members, records, "n0003", items)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(members)
        rng.shuffle(records)
        rng.shuffle(items)
        again = build_catalog(members, records, "n0003", items)
        assert again == first
        assert list(again.endpoints) == list(first.endpoints)
        assert list(again.routes) == list(first.routes)
    assert list(first.endpoints) == sorted(first.endpoints)
    for eps in first.endpoints.values():
        assert list(eps) == sorted(eps, key=lambda e: e.key)
    assert list(first.instances) == sorted(first.instances, key=lambda i: i.sort_key)


def test_thousand_instances_is_cheap() -> None:
    members, records = _scenario(200)  # 1,000 instances
    start = time.perf_counter()
    cat = build_catalog(members, records, "n0000", [("route/a", ROUTE_API)])
    table = route_table(cat)
    elapsed_s = time.perf_counter() - start
    assert len(cat.instances) == 1000
    assert sum(len(eps) for eps in cat.endpoints.values()) > 0
    assert table.clusters
    # Generous: the point is to catch a quadratic join, not to benchmark a shared machine.
    assert elapsed_s < 1.0


def test_tag_subsets_pick_the_right_instances() -> None:
    members = [member(LOCAL), member("b", i=2), member("c", MemberState.SUSPECT, 3)]
    records = [
        (LOCAL, body(inst(port=1, tags=("v1",)))),
        ("b", body(inst(port=2, tags=("v2", "zone=eu")), proxy=("127.0.0.2", 4143))),
        ("c", body(inst(port=3, tags=("v2",)), proxy=("127.0.0.3", 4143))),
    ]
    items = [
        (
            "route/canary",
            {
                "destinations": [
                    {"service": "api", "weight": 90, "tags": ["v1"]},
                    {"service": "api", "weight": 10, "tags": ["v2"]},
                ]
            },
        ),
        (
            "route/eu",
            {
                "hosts": ["eu.api"],
                "destinations": [{"service": "api", "tags": ["zone=eu", "v2"]}],
            },
        ),
        ("service/api", {"load_balancer": {"policy": "round_robin"}}),
    ]
    table = route_table(build_catalog(members, records, LOCAL, items), version=3)
    assert table.version == 3
    assert table.services["api"].policy == "round_robin"

    def ports(tags: tuple[str, ...]) -> list[int]:
        return sorted(e.port for e in table.clusters[("api", tags)].endpoints)

    assert ports(()) == [1, 2, 3]
    assert ports(("v1",)) == [1]
    assert ports(("v2",)) == [2, 3]
    assert ports(("v2", "zone=eu")) == [2]
    assert table.clusters[("api", ("v1",))].endpoints == (
        Endpoint(LOCAL, "127.0.0.1", 1, ("v1",), 1, None),
    )


def test_instances_the_services_config_does_not_allow_are_listed_but_not_routed() -> None:
    members = [member(LOCAL), member("api-1", i=2), member("web-1", i=3)]
    records = [
        ("api-1", body(inst("api", weight=50), proxy=("127.0.0.2", 4143))),
        ("web-1", body(inst("api", port=9000), proxy=("127.0.0.3", 4143))),  # not an api node
        (LOCAL, body(inst("api", port=9001, weight=10_000), inst("db", weight=101))),
    ]
    config = [("service/api", {"nodes": ["api-*", LOCAL], "weight_max": 200})]
    cat = build_catalog(members, records, LOCAL, config)
    assert [(e.node, e.port) for e in cat.endpoints["api"]] == [("api-1", 8080)]
    refused = {(i.node, i.service): i.refused for i in cat.refused}
    assert refused == {
        ("web-1", "api"): "node web-1 is not in service/api nodes",
        (LOCAL, "api"): "weight 10000 is above service/api weight_max 200",
        # no service/db entity: the default weight_max of 100 still applies
        (LOCAL, "db"): "weight 101 is above service/db weight_max 100",
    }
    assert "db" not in cat.endpoints and all(not i.routable for i in cat.refused)


def test_local_instances_through_own_inbound_when_policies_are_enforced_there() -> None:
    # The native proxy enforces policies at the destination's inbound: a neighbour's call must
    # pass there too, or a deny policy would not apply to callers on the same node.
    members = [member(LOCAL), member("b", i=2)]
    records = [
        (LOCAL, body(inst(port=8080), proxy=("127.0.0.1", 4143))),
        ("b", body(inst(port=8080), proxy=("127.0.0.2", 4143))),
    ]
    eps = build_catalog(members, records, LOCAL, [], local_via_inbound=True).endpoints["api"]
    assert {e.node: e.inbound for e in eps} == {
        LOCAL: ("127.0.0.1", 4143),
        "b": ("127.0.0.2", 4143),
    }
