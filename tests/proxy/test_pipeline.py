"""Endpoint and outcome (pipeline.py): the decisions both paths take after routing.
No sockets: request bodies come from a parser fed bytes, endpoints are states in a table."""

from __future__ import annotations

import random

import pytest

from gossipmesh.config.schema import ServiceConfig, validate_entity
from gossipmesh.proxy.balancer import DOWN_NS
from gossipmesh.proxy.clock import NS_PER_MS
from gossipmesh.proxy.http1 import RequestHead, RequestReader
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pipeline import (
    ABORT,
    BUDGET_RETRY,
    CONNECT_FAILED,
    DONE,
    FREE_RETRY,
    NO_RETRY,
    PEER_CONNECT_FAILED,
    RESET,
    RETRY_STATUS,
    STALE,
    TIMEOUT,
    Accounting,
    AfterTry,
    Exchange,
    after_try,
    hash_key,
    pick_endpoint,
    retry_destination,
    take_body,
    take_whole_body,
    whole_body_end,
)
from gossipmesh.proxy.routing import Dest, Directory
from gossipmesh.proxy.table import Endpoint, ServiceSettings, build_route_table


def reader_with(raw: bytes) -> tuple[RequestReader, RequestHead]:
    r = RequestReader()
    r.feed(raw)
    head = r.pop()
    assert isinstance(head, RequestHead)
    return r, head


def dest(n: int = 3, **settings: object) -> Dest:
    eps = {"api": [Endpoint(f"n{i}", f"10.0.0.{i}", 80) for i in range(n)]}
    cfg = validate_entity("service", "api", dict(settings))
    assert isinstance(cfg, ServiceConfig)
    return Directory(build_route_table({"api": cfg}, {}, eps)).view.dests[("api", ())]


# -- body ------------------------------------------------------------------------------------


def test_a_body_parsed_whole_is_held_and_replayable() -> None:
    r, req = reader_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    end = whole_body_end(r)
    assert end == len(r.events)
    assert take_whole_body(r, req, end) == b"hello" and req.body_done and not r.pending()
    r, req = reader_with(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    r.feed(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert take_body(r, req) == b"abcde" and req.body_done and not r.pending()


def test_a_body_still_coming_streams_and_is_not_held() -> None:
    r, req = reader_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
    assert whole_body_end(r) == -1
    assert take_body(r, req) is None and not req.body_done
    assert r.pending()  # the part that arrived is still there, to be streamed


def test_no_body_and_pipelined_requests() -> None:
    r, req = reader_with(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    end = whole_body_end(r)
    assert take_whole_body(r, req, end) == b""
    nxt = r.pop()
    assert isinstance(nxt, RequestHead) and nxt.url == b"/2"
    assert take_body(r, nxt) == b"" and nxt.body_done and not r.pending()


# -- endpoint --------------------------------------------------------------------------------


def test_pick_endpoint_skips_ejected_endpoints_until_the_horizon() -> None:
    d = dest(3, load_balancer={"policy": "round_robin"})
    rng = random.Random(1)
    d.states[0].ejected_until_ns = 100
    picks = {pick_endpoint(d, rng, 50, 100) for _ in range(12)}
    assert picks == {1, 2}
    assert {pick_endpoint(d, rng, 100, 100) for _ in range(12)} == {0, 1, 2}
    # Already tried endpoints are left out while any other is left.
    assert {pick_endpoint(d, rng, 100, 100, [0, 1]) for _ in range(6)} == {2}


def test_pick_endpoint_of_a_local_instance_is_the_instance() -> None:
    directory = Directory(build_route_table({}, {}, {}))
    d = directory.local_dest(("api", "127.0.0.1", 8080))
    assert d.balancer is None and pick_endpoint(d, random.Random(2), 0, 10**18, [0]) == 0


def test_hash_key_for_ring_hash_only() -> None:
    _, req = reader_with(b"GET / HTTP/1.1\r\nHost: a\r\nx-user: u42\r\n\r\n")
    ring = ServiceSettings(name="api", policy="ring_hash")
    assert hash_key(req, ring, b"rid") == b"rid"  # x-request-id: the request's (or ours)
    assert hash_key(req, ServiceSettings("api", policy="ring_hash", hash_header="x-user"), b"") == (
        b"u42"
    )
    assert (
        hash_key(req, ServiceSettings("api", policy="ring_hash", hash_header="x-no"), b"") is None
    )
    assert hash_key(req, ServiceSettings(name="api"), b"rid") is None


# -- outcome ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "replayable_idempotent", "tries_left", "retry_connect", "expected"),
    [
        # A pooled connection the peer had closed: free retry if the request can be replayed.
        (STALE, True, 0, True, AfterTry(False, FREE_RETRY, "upstream_reset")),
        (STALE, False, 2, True, AfterTry(False, NO_RETRY, "upstream_reset")),
        # Connect failures: nothing was sent, so any request, if the service retries them.
        (CONNECT_FAILED, False, 1, True, AfterTry(True, BUDGET_RETRY, "upstream_connect_failure")),
        (CONNECT_FAILED, False, 1, False, AfterTry(True, NO_RETRY, "upstream_connect_failure")),
        (CONNECT_FAILED, True, 0, True, AfterTry(True, NO_RETRY, "upstream_connect_failure")),
        # A retryable status (only asked for with a retry in hand).
        (RETRY_STATUS, True, 1, True, AfterTry(True, BUDGET_RETRY, "upstream_reset")),
        (RETRY_STATUS, True, 0, True, AfterTry(True, NO_RETRY, "upstream_reset")),
        # Timeouts and resets before the response head: idempotent and replayable only.
        (TIMEOUT, True, 1, True, AfterTry(True, BUDGET_RETRY, "upstream_timeout")),
        (TIMEOUT, False, 1, True, AfterTry(True, NO_RETRY, "upstream_timeout")),
        (TIMEOUT, True, 0, True, AfterTry(True, NO_RETRY, "upstream_timeout")),
        (RESET, True, 2, False, AfterTry(True, BUDGET_RETRY, "upstream_reset")),
        (RESET, False, 2, True, AfterTry(True, NO_RETRY, "upstream_reset")),
        # The client went away: nothing to answer, no retry.
        (ABORT, True, 2, True, AfterTry(True, NO_RETRY, "")),
    ],
)
def test_after_try(
    outcome: int,
    replayable_idempotent: bool,
    tries_left: int,
    retry_connect: bool,
    expected: AfterTry,
) -> None:
    assert after_try(outcome, replayable_idempotent, tries_left, retry_connect) == expected


@pytest.mark.parametrize("outcome", [STALE, CONNECT_FAILED, RETRY_STATUS, TIMEOUT, RESET])
def test_no_try_follows_once_the_request_deadline_passed(outcome: int) -> None:
    step = after_try(outcome, True, 2, True, time_left=False)
    assert step.retry == NO_RETRY and step.reason
    assert after_try(outcome, True, 2, True, time_left=True).retry != NO_RETRY


def test_after_try_has_no_decision_for_an_answered_try() -> None:
    with pytest.raises(ValueError):
        after_try(DONE, True, 1, True)


def test_accounting_ejects_and_moves_the_horizon() -> None:
    m = ProxyMetrics()
    acc = Accounting(m)
    d = dest(4, outlier_detection={"consecutive_failures": 2, "base_ejection_ms": 1000})
    st = d.states[0]
    acc.record(st, False, 0, d)  # a clean success changes nothing
    assert st.consecutive_failures == 0 and acc.horizon_ns == 0
    acc.record(st, True, 5 * NS_PER_MS, d)
    assert acc.horizon_ns == 0 and st.consecutive_failures == 1
    acc.record(st, True, 6 * NS_PER_MS, d)
    assert st.ejected_until_ns == (6 + 1000) * NS_PER_MS == acc.horizon_ns
    assert m.ejections == {"api": 1}
    # While the horizon lies ahead, picks avoid the ejected endpoint.
    rng = random.Random(3)
    assert 0 not in {pick_endpoint(d, rng, 7 * NS_PER_MS, acc.horizon_ns) for _ in range(40)}


def test_accounting_withdraws_retries_from_the_budget_and_counts_both_answers() -> None:
    m = ProxyMetrics()
    acc = Accounting(m)
    d = dest(2, retry={"budget_percent": 0, "budget_min_per_s": 1})
    allowed = sum(acc.may_retry(d, 0) for _ in range(20))
    assert allowed == 10  # 1/s over the 10 s window, nothing earned by requests
    assert m.retries == {"api": 10} and m.budget_exhausted == {"api": 10}


def test_a_retry_crosses_to_another_destination_when_its_own_has_nothing_left() -> None:
    from test_routing import canary_directory

    d = canary_directory()
    view = d.view
    v1, v2 = view.dests[("api", ("v1",))], view.dests[("api", ("v2",))]
    req = RequestHead()
    r = view.table.routes[0]
    x = Exchange(req, 0, "hello", v1, b"/", route=r, dests=view.dests)
    rng = random.Random(1)
    # v1's only instance just failed this request: the retry goes to v2.
    assert retry_destination(x, rng, 10, [v1.states[0].key]) is v2
    # Nothing tried, nothing down: it stays.
    assert retry_destination(x, rng, 10, []) is v1
    # v2 down too: nothing better is known, it stays on v1.
    v2.states[0].down_until_ns = 20
    assert retry_destination(x, rng, 10, [v1.states[0].key]) is v1
    # Without a route (the Host's service) there is nowhere to cross to.
    plain = Exchange(req, 0, "", v1, b"/")
    assert retry_destination(plain, rng, 10, [v1.states[0].key]) is v1


def test_a_connect_failure_marks_the_endpoint_down_and_moves_the_horizon() -> None:
    t = build_route_table({}, {}, {"api": [Endpoint("n1", "10.0.0.1", 80)]})
    d = Directory(t).view.dests[("api", ())]
    acc = Accounting(ProxyMetrics())
    acc.connect_failed(d.states[0], 1_000, d)
    assert d.states[0].down_until_ns == 1_000 + DOWN_NS == acc.horizon_ns
    assert d.states[0].consecutive_failures == 1


def test_a_peers_connect_failure_retries_any_method_whose_body_is_held() -> None:
    assert after_try(PEER_CONNECT_FAILED, False, 1, True) == AfterTry(
        True, BUDGET_RETRY, "upstream_connect_failure"
    )
    assert after_try(PEER_CONNECT_FAILED, False, 1, True, replayable=False).retry == NO_RETRY
    assert after_try(PEER_CONNECT_FAILED, True, 1, False).retry == NO_RETRY
