"""Retry budget, outlier detector, breaker counters, pool decisions, error responses."""

from __future__ import annotations

from gossipmesh.proxy.balancer import EndpointState
from gossipmesh.proxy.clock import NS_PER_MS
from gossipmesh.proxy.errors import error_response
from gossipmesh.proxy.pool import PoolDecisions
from gossipmesh.proxy.resilience import BreakerCounters, RetryBudget, record_outcome
from gossipmesh.proxy.table import ServiceSettings

MS = NS_PER_MS  # every instant here is in ns, written as a count of ms


def test_budget_allows_min_per_second_when_quiet() -> None:
    b = RetryBudget(percent=20, min_per_s=10)
    allowed = sum(b.try_withdraw(0) for _ in range(200))
    assert allowed == 100  # 10/s over the 10 s window


def test_budget_scales_with_requests_and_slides() -> None:
    b = RetryBudget(percent=20, min_per_s=0)
    for _ in range(1000):
        b.record_request(0)
    assert sum(b.try_withdraw(500 * MS) for _ in range(1000)) == 200
    # Ten seconds later the window has slid past both the requests and the retries.
    assert not b.try_withdraw(10_500 * MS)
    for _ in range(100):
        b.record_request(10_500 * MS)
    assert sum(b.try_withdraw(10_600 * MS) for _ in range(100)) == 20


def test_budget_cannot_amplify_an_outage() -> None:
    b = RetryBudget(percent=20, min_per_s=10)
    retries = 0
    for t in range(0, 60_000, 10):  # 100 req/s for a minute, every request wants a retry
        b.record_request(t * MS)
        retries += b.try_withdraw(t * MS)
    # 20% of 6000 + 10/s * 60 s = 1800 at most (the window boundary can add one window's worth).
    assert retries <= 1200 + 600 + 100


def s(**kw: int) -> ServiceSettings:
    return ServiceSettings(name="api", **kw)  # type: ignore[arg-type]


def test_outlier_ejects_after_consecutive_failures_with_growing_time() -> None:
    peers = [EndpointState(("n", f"a{i}", 1)) for i in range(4)]
    e = peers[0]
    cfg = s(consecutive_failures=3, base_ejection_ms=1000, max_ejection_ms=2500)
    assert not record_outcome(e, True, 0, cfg, peers)
    assert not record_outcome(e, False, 0, cfg, peers)  # success resets the count
    for _ in range(2):
        assert not record_outcome(e, True, 0, cfg, peers)
    assert record_outcome(e, True, 0, cfg, peers)
    assert e.ejected_until_ns == 1000 * MS and e.times_ejected == 1
    for _ in range(3):
        ejected = record_outcome(e, True, 1500 * MS, cfg, peers)
    assert ejected and e.ejected_until_ns == (1500 + 2000) * MS
    for _ in range(3):
        ejected = record_outcome(e, True, 4000 * MS, cfg, peers)
    assert ejected and e.ejected_until_ns == (4000 + 2500) * MS  # capped


def test_outlier_respects_max_ejected_percent() -> None:
    peers = [EndpointState(("n", f"a{i}", 1)) for i in range(4)]
    cfg = s(consecutive_failures=1, max_ejected_percent=50)
    assert record_outcome(peers[0], True, 0, cfg, peers)
    assert record_outcome(peers[1], True, 0, cfg, peers)
    assert not record_outcome(peers[2], True, 0, cfg, peers)  # would be 75%
    assert peers[2].ejected_until_ns == 0


def test_outlier_forgets_multiplier_after_healthy_spell() -> None:
    peers = [EndpointState(("n", f"a{i}", 1)) for i in range(2)]
    cfg = s(consecutive_failures=1, base_ejection_ms=100, max_ejection_ms=1000)
    record_outcome(peers[0], True, 0, cfg, peers)
    assert peers[0].times_ejected == 1
    record_outcome(peers[0], False, 5000 * MS, cfg, peers)
    assert peers[0].times_ejected == 0


def test_breaker_limits() -> None:
    cfg = s(max_requests=2, max_pending=1, max_connections=3)
    b = BreakerCounters()
    assert b.admit_request(cfg) is None
    b.inflight = 2
    assert b.admit_request(cfg) == "max_requests"
    b.pending = 1
    assert b.admit_pending(cfg) == "max_pending"
    b.connections = 3
    assert b.admit_connection(cfg) == "max_connections"


def test_pool_lifo_expiry_and_cap() -> None:
    p: PoolDecisions[str] = PoolDecisions(max_idle_per_key=2)
    assert p.checkout("k", 0) == (None, [])
    assert p.checkin("k", "c1", 0, 100) == []
    assert p.checkin("k", "c2", 10, 100) == []
    assert p.checkin("k", "c3", 20, 100) == ["c1"]  # over the cap: oldest goes
    conn, close = p.checkout("k", 50)
    assert conn == "c3" and close == []  # most recently used first
    p.checkin("k", "c3", 60, 100)
    # At 115, c2 (expires 110) is stale; c3 (expires 160) is fine.
    assert p.sweep(115) == ["c2"]
    assert p.idle_count("k") == 1
    conn, close = p.checkout("k", 200)
    assert conn is None and close == ["c3"]


def test_pool_discard_and_drain() -> None:
    p: PoolDecisions[str] = PoolDecisions()
    p.checkin("a", "x", 0, 100)
    p.checkin("b", "y", 0, 100)
    assert p.discard("a", "x") and not p.discard("a", "x")
    assert p.drain() == ["y"] and p.idle_count() == 0


def test_error_responses_are_marked_and_name_the_service() -> None:
    status, data = error_response("no_healthy_endpoint", "api", keep_alive=False)
    assert status == 503
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"x-gossipmesh-error: no_healthy_endpoint" in head
    assert b"connection: close" in head
    assert b"'api'" in body
    status, data = error_response("upstream_timeout", "api", head_only=True)
    assert status == 504 and data.endswith(b"\r\n\r\n")
