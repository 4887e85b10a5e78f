"""Windows of traffic merged across agents (gossipmesh/traffic_stats.py): sums, shares,
percentiles from summed histograms, configured next to observed splits, hostile rows skipped."""

from __future__ import annotations

from typing import Any

from gossipmesh.traffic_stats import merge, quantile

BOUNDS = [1.0, 10.0, 100.0]


def window(counts: list[list[Any]], latency: list[list[Any]], w: float = 10.0,
           routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"ok": True, "window_s": w, "bounds_ms": BOUNDS, "counts": counts,
            "latency": latency, "routes": routes or []}  # fmt: skip


def test_quantile_interpolates_within_the_bucket() -> None:
    assert quantile(BOUNDS, [0, 0, 0, 0], 0.5) is None
    assert quantile(BOUNDS, [10, 0, 0, 0], 0.5) == 0.5  # half of the first bucket, 0..1 ms
    assert quantile(BOUNDS, [0, 10, 0, 0], 0.9) == 1 + 9 * 0.9
    assert quantile(BOUNDS, [50, 0, 50, 0], 0.99) == 10 + 90 * 0.98
    assert quantile(BOUNDS, [0, 0, 0, 5], 0.5) == 100.0  # above the last bound: the bound


def test_two_agents_add_up_and_the_split_is_shown_next_to_its_weights() -> None:
    routes = [{"route": "canary", "destinations": [
        {"destination": "api@v1", "weight": 80}, {"destination": "api@v2", "weight": 20}]}]  # fmt: skip
    a = window([["outbound", "api", "canary", "api@v1", "n2", 70, 70],
                ["outbound", "api", "canary", "api@v2", "n3", 30, 27],
                ["inbound", "web", "", "web", "local", 5, 5]],
               [["outbound", "api", "api@v1", [0, 70, 0, 0]],
                ["outbound", "api", "api@v2", [0, 0, 30, 0]]], 10.0, routes)  # fmt: skip
    b = window([["outbound", "api", "canary", "api@v1", "n2", 10, 10]],
               [["outbound", "api", "api@v1", [10, 0, 0, 0]]], 5.0, routes)  # fmt: skip
    a["denied"] = [["api", "deny-admin", 4]]
    b["denied"] = [["api", "deny-admin", 1], ["web", "internal-only", 2]]
    m = merge({"n1": a, "n4": b, "n5": {"ok": False, "error": "unreachable"}})
    assert m["denied"] == [{"service": "api", "policy": "deny-admin", "requests": 5},
                           {"service": "web", "policy": "internal-only", "requests": 2}]  # fmt: skip
    assert m["nodes"] == ["n1", "n4"] and m["unreachable"] == ["n5"] and m["bad_rows"] == 0
    api = next(s for s in m["services"] if s["service"] == "api")
    assert api["requests"] == 110 and api["success_rate"] == round(107 / 110, 4)
    assert api["rps"] == 7.0 + 3.0 + 2.0  # each agent's requests over its own window
    v2 = next(d for d in m["destinations"] if d["destination"] == "api@v2")
    assert v2["share"] == round(30 / 110, 4) and v2["p50_ms"] == 10 + 90 * 0.5
    [route] = m["routes"]
    assert [(d["destination"], d["configured_share"], d["requests"], d["observed_share"])
            for d in route["destinations"]] == [
        ("api@v1", 0.8, 80, round(80 / 110, 4)), ("api@v2", 0.2, 30, round(30 / 110, 4))]  # fmt: skip
    assert m["paths"][0]["destination"] == "api@v1" and m["paths"][0]["node"] == "n2"
    assert merge({"n1": a}, service="web")["services"] == [
        {"direction": "inbound", "service": "web", "requests": 5, "rps": 0.5,
         "success_rate": 1.0, "p50_ms": None, "p95_ms": None, "p99_ms": None}]  # fmt: skip


def test_rows_of_the_wrong_shape_are_skipped_and_counted() -> None:
    bad = window([["outbound", "api", "r", "api", "n2", -1, 0],  # negative
                  ["outbound", "api", "r", "api", "n2", True, 0],  # a bool is no count
                  ["outbound", 7, "r", "api", "n2", 1, 1],
                  "nonsense",
                  ["outbound", "api", "r", "api", "n2", 4, 4]],
                 [["outbound", "api", "api", ["x"]], ["outbound", "api", "api", [1, 2, 1, 0]]])  # fmt: skip
    bad["routes"] = [{"route": 5}, "x"]
    m = merge({"n1": bad, "n2": "not a dict", "n3": {"window_s": float("nan"), "counts": 5}})
    assert m["bad_rows"] == 4 + 1 + 2  # counts, latency, routes
    assert [s["requests"] for s in m["services"]] == [4]
    assert [d["p50_ms"] for d in m["destinations"]] == [1 + 9 * 0.5]
    assert m["unreachable"] == ["n2"] and m["nodes"] == ["n1", "n3"]
