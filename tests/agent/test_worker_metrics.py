"""A worker's counters across the channel, and several processes' counters shown as one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gossipmesh.agent.worker_channel import ChannelError
from gossipmesh.agent.worker_metrics import (
    FIELDS,
    MAX_ROWS,
    combined,
    merge_states,
    render_all,
    restore,
    snapshot,
)
from gossipmesh.proxy.metrics import ProxyMetrics

STATE = {"inflight": 1, "ewma_ms": 0.5, "ejected": 0.0, "down": 0.0, "ejected_until_ms": 0,
         "times_ejected": 0, "consecutive_failures": 0}  # fmt: skip


def busy(worker: str = "") -> ProxyMetrics:
    m = ProxyMetrics(worker=worker)
    m.observe("api", "r1", 200, "outbound", 400_000, "api", "n2")
    m.observe("api", "r1", 503, "outbound", 9_000_000, "api", "n2")
    m.error("api", "no_endpoint")
    m.count(m.tls_handshakes, "outbound", "ok")
    m.count(m.denied, "api", "no-post")
    m.bytes_in["outbound"] += 123
    return m


def test_a_snapshot_restores_to_the_same_counters() -> None:
    m = busy()
    states = {("n2", "10.0.0.2", 8080): dict(STATE)}
    got, got_states = restore(snapshot(m, states), "1")
    for name in FIELDS:
        assert getattr(got, name) == getattr(m, name), name
    assert got.worker == "1" and got_states == states


def good() -> dict[str, Any]:
    return snapshot(busy(), {("n2", "10.0.0.2", 8080): dict(STATE)})


def hostile() -> list[dict[str, Any]]:
    cases = []
    for mutate in (
        lambda d: d.update(requests="nope"),
        lambda d: d["requests"].append(["a", "b", "c", "d", 200, "outbound"]),  # short row
        lambda d: d["requests"].append(["a", "b", "c", "d", 5000, "outbound", 1]),  # status
        lambda d: d["requests"].append(["a", "b", "c", "d", 200, "outbound", -1]),  # negative
        lambda d: d["requests"].append(["a", "b", "c", "d", 200, "outbound", True]),
        lambda d: d["requests"].append(["a", "b", "c", "d", 200, "outbound", 2**64]),
        lambda d: d["requests"].append([1, "b", "c", "d", 200, "outbound", 1]),  # not a string
        lambda d: d["latency"].append(["a", "b", "outbound", [1, 2]]),  # bucket count
        lambda d: d["bytes_in"].extend([[f"k{i}", 1] for i in range(MAX_ROWS + 1)]),
        lambda d: d["endpoints"].append(["n", "a", 70000, 0, 0, 0, 0, 0, 0, 0]),  # port
        lambda d: d["endpoints"].append(["n", "a", 80, 0, 0, 0, 0, 0, 0]),  # short
        lambda d: d["endpoints"].append(["n", "a", 80, 0, "x", 0, 0, 0, 0, 0]),
        lambda d: d.update(endpoints={"n": 1}),
    ):
        d = copy.deepcopy(good())
        mutate(d)
        cases.append(d)
    return cases


@pytest.mark.parametrize("data", hostile())
def test_a_hostile_snapshot_is_refused_whole(data: dict[str, Any]) -> None:
    with pytest.raises(ChannelError):
        restore(data, "1")


def test_one_exposition_names_each_family_once_with_every_worker() -> None:
    text = render_all([busy("0"), busy("1"), busy("2")]).decode()
    assert text.count("# TYPE gossipmesh_proxy_requests_total counter") == 1
    assert text.count("# HELP gossipmesh_proxy_requests_total") == 1
    for w in "012":
        assert f'status_class="2xx",worker="{w}"' in text


def test_traffic_sums_and_states_merge() -> None:
    total = combined([busy(), busy(), busy()])
    assert total.requests[("api", "r1", "api", "n2", 200, "outbound")] == 3
    assert sum(total.latency[("api", "api", "outbound")]) == 6
    assert total.denied[("api", "no-post")] == 3
    key = ("n2", "10.0.0.2", 8080)
    ejected = {**STATE, "ejected": 1.0, "times_ejected": 2}
    merged = merge_states([{key: dict(STATE)}, {key: ejected}, {}])
    assert merged[key]["ejected"] == 1.0 and merged[key]["inflight"] == 2
    assert merged[key]["times_ejected"] == 2
