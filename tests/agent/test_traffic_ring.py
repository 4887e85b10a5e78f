"""The counters' ring behind /v1/stats: a window is the difference between now and the newest
snapshot at least that old, and says how long it really is."""

from __future__ import annotations

from gossipmesh.agent.traffic import EVERY_S, KEEP, TrafficRing
from gossipmesh.proxy.metrics import ProxyMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_windows_are_differences_over_the_last_seconds() -> None:
    m, clock = ProxyMetrics(), Clock()
    ring = TrafficRing(lambda: m, clock)
    ring.started_s = clock.t
    for second in range(30):  # one request a second to v1, and from t=120 one more to v2
        ring.take()
        m.observe("api", "r", 200, "outbound", 1_000_000, "api@v1", "n1")
        if second >= 20:
            m.observe("api", "r", 503, "outbound", 1_000_000, "api@v2", "n2")
        m.count(m.denied, "api", "deny-admin")
        clock.t += EVERY_S
    span, requests, latency, denied = ring.window(10)
    assert span == 10.0
    assert requests == {("api", "r", "api@v1", "n1", 200, "outbound"): 10,
                        ("api", "r", "api@v2", "n2", 503, "outbound"): 10}  # fmt: skip
    assert sum(latency[("api", "api@v2", "outbound")]) == 10
    assert denied == {("api", "deny-admin"): 10}
    span, requests, _, _ = ring.window(5)
    assert span == 5.0 and requests[("api", "r", "api@v1", "n1", 200, "outbound")] == 5
    # Asked for more than the agent has seen: everything since the first snapshot, 30 s.
    span, requests, _, _ = ring.window(60)
    assert span == 30.0 and requests[("api", "r", "api@v1", "n1", 200, "outbound")] == 30


def test_the_ring_is_bounded_and_a_proxyless_agent_has_empty_windows() -> None:
    m, clock = ProxyMetrics(), Clock()
    ring = TrafficRing(lambda: m, clock)
    for _ in range(KEEP * 3):
        ring.take()
        clock.t += EVERY_S
    assert len(ring.ring) == KEEP
    empty = TrafficRing(lambda: None, clock)
    empty.take()
    clock.t += 3
    assert empty.window(10)[1:] == ({}, {}, {})
