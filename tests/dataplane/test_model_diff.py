"""layout() and classify(): what an external proxy is given, and runtime change vs reload."""

from __future__ import annotations

from dataplane_helpers import table

from gossipmesh.config.schema import ServiceConfig, Timeouts
from gossipmesh.dataplane.diff import classify
from gossipmesh.dataplane.model import LocalInstance, layout, local_instances
from gossipmesh.proxy.table import Endpoint

REMOTE = ("127.0.0.3", 4143)


def ep(node: str, port: int, weight: int = 1, remote: bool = True) -> Endpoint:
    return Endpoint(node, "10.0.0.1", port, (), weight, REMOTE if remote else None)


def test_servers_are_named_by_dest_and_dialled_at_the_inbound_or_directly() -> None:
    lay = layout(table({"web": [ep("a", 80), ep("b", 81, remote=False)]})[0])
    (web,) = lay.backends
    assert [(s.dest, s.host, s.port, s.remote) for s in web.servers] == [
        ("10.0.0.1:80", "127.0.0.3", 4143, True),
        ("10.0.0.1:81", "10.0.0.1", 81, False),
    ]


def test_unique_dests_keeps_one_server_per_dest_and_says_which_it_left_out() -> None:
    tab = table({"web": [ep("a", 80), ep("b", 80)]})[0]
    assert len(layout(tab).backends[0].servers) == 2
    lay = layout(tab, unique_dests=True)
    assert [s.node for s in lay.backends[0].servers] == ["a"]
    assert lay.skipped == ("web 10.0.0.1:80 b",)


def test_routes_keep_their_configured_weights_while_the_table_moves_an_empty_share() -> None:
    split = {"hosts": ["x.example"], "destinations": [{"service": "web", "weight": 9},
             {"service": "api", "weight": 1}]}  # fmt: skip
    tab, routes = table({"web": [], "api": [ep("a", 80)]}, {"split": split})
    lay = layout(tab, routes)
    assert lay.routes[0].cum_weights == (9, 10)  # what HAProxy draws with (it sees emptiness)
    assert lay.table_routes[0].cum_weights == (0, 1)  # what nginx is given (it reloads anyway)


def test_endpoint_changes_are_runtime_operations() -> None:
    old = layout(table({"web": [ep("a", 80), ep("b", 81)]})[0])
    new = layout(table({"web": [ep("a", 80, weight=5), ep("c", 82)]})[0])
    change = classify(old, new)
    assert not change.reload
    assert [(op.kind, op.server.dest) for op in change.ops] == [
        ("remove", "10.0.0.1:81"),
        ("weight", "10.0.0.1:80"),
        ("add", "10.0.0.1:82"),
    ]


def test_the_same_dest_reached_elsewhere_is_an_address_change() -> None:
    old = layout(table({"web": [ep("a", 80)]})[0])
    new = layout(table({"web": [ep("a", 80, remote=False)]})[0])
    assert [(op.kind, op.server.host) for op in classify(old, new).ops] == [("addr", "10.0.0.1")]


def test_structure_changes_need_a_reload_with_reasons() -> None:
    base = table({"web": [ep("a", 80)]})[0]
    assert classify(None, layout(base)).reload_reasons == ("first configuration",)
    more = layout(table({"web": [ep("a", 80)], "api": []})[0])
    assert classify(layout(base), more).reload_reasons == ("new backends: api",)
    slow = ServiceConfig("web", timeouts=Timeouts(connect_ms=50))
    tuned = layout(table({"web": [ep("a", 80)]}, services={"web": slow})[0])
    assert classify(layout(base), tuned).reload_reasons == ("service settings: web",)
    route = {"hosts": ["x.example"], "destinations": [{"service": "web"}]}
    routed = layout(*table({"web": [ep("a", 80)]}, {"r": route}))
    assert classify(layout(base), routed).reload_reasons == ("routes changed",)
    one = (LocalInstance("web", "127.0.0.1", 80),)
    assert classify(layout(base), layout(base), (), one).reload


def test_nothing_changed_is_empty() -> None:
    lay = layout(table({"web": [ep("a", 80)]})[0])
    assert classify(lay, lay).empty


def test_local_instances_are_sorted_and_unique() -> None:
    got = local_instances({"web": [("127.0.0.1", 81), ("127.0.0.1", 80), ("127.0.0.1", 80)]})
    assert [i.dest for i in got] == ["127.0.0.1:80", "127.0.0.1:81"]
