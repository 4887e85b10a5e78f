"""Endpoint and outcome: the decision pipeline after routing (routing.py), for both paths.

Theory of operation
-------------------
A request is one ``Exchange``: its head, start time, route, destination and, once decided, the
endpoint, the body it holds and the request id it carries. The event engine's fast path
(fastpath.py) and the task path (forward.py) take the same decisions, in this order, through the
functions here; only the byte moving differs.

3. **Body** (``whole_body`` / ``take_body``): a request can be retried only if it can be replayed:
   no body, or all of it already parsed (at most one receive buffer, then held). A body still
   streaming is forwarded as it arrives and never held.
4. **Endpoint** (``pick_endpoint``): the balancer over the cluster's states, leaving out ejected
   and down endpoints (while any may be) and those this request tried already. A retry first
   asks ``retry_destination``: when the current destination has no endpoint left that is
   available and untried, the retry crosses to another destination of the same route that has
   one (the route's weights among those), so one dead canary instance costs a retry, not a 502.
5. **Outcome** (``after_try`` and ``Accounting``): what one try's result means. ``after_try`` is a
   table from the try's outcome, whether the request may be replayed and the tries left, to
   whether the endpoint failed, whether to retry (free: a pooled connection the peer had closed;
   or paid from the service's retry budget) and the error to answer otherwise. ``Accounting``
   applies it: outlier detection with the ejection horizon, budget withdrawals, their counters.

Retry rules. Connect failures are retried regardless of method or body, because nothing was
sent; so is a peer agent's 502 ``upstream_connect_failure`` when the body is held (the peer could
not reach its instance: the app never saw the request). Both mark the endpoint down for
``DOWN_NS`` (balancer.py), which also moves the accounting's horizon. Status and timeout retries need an idempotent method, a replayable body, a try left and
the service's retry budget. No try starts once the request's own deadline (``request_ms``, all
tries together) has passed. Each try goes to an endpoint this request has not tried yet when
there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from random import Random

from gossipmesh.proxy.balancer import DOWN_NS, EndpointState
from gossipmesh.proxy.heads import header
from gossipmesh.proxy.http1 import END, RequestHead, RequestReader
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.resilience import record_outcome
from gossipmesh.proxy.router import CompiledRoute
from gossipmesh.proxy.routing import Dest, dest_available, split_destination
from gossipmesh.proxy.table import ClusterKey, ServiceSettings
from gossipmesh.proxy.upstream import Upstream

log = logging.getLogger("gossipmesh.proxy")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# What one try came to.
DONE = 0  # a response (or a tunnel) reached the client
RETRY_STATUS = 1  # the upstream answered a status the service retries on; nothing was relayed
TIMEOUT = 2  # the per-try or request deadline passed before the response head
RESET = 3  # the upstream failed before the response head
STALE = 4  # a reused pooled connection the peer had closed, before any response byte
ABORT = 5  # the client went away, or its streamed body broke off
CONNECT_FAILED = 6  # no connection to the endpoint
PEER_CONNECT_FAILED = 7  # the endpoint's agent answered 502: it could not connect to the instance

NO_RETRY, FREE_RETRY, BUDGET_RETRY = range(3)


class Exchange:
    """One request through the pipeline. ``idx``: the endpoint of its current try (-1: none
    picked yet). ``body``: the body held whole (replayable); None while it is still in the reader
    and when it streams. ``up``: the connection the fast path sent it on."""

    __slots__ = (
        "req",
        "start_ns",
        "route_name",
        "dest",
        "target",
        "add_host",
        "idx",
        "end_pos",
        "body",
        "rid",
        "up",
        "end_ns",
        "route",
        "dests",
        "hop",
        "tried",
        "try_ns",
        "out0",
    )

    def __init__(
        self,
        req: RequestHead,
        start_ns: int,
        route_name: str,
        dest: Dest,
        target: bytes,
        add_host: bytes = b"",
        idx: int = -1,
        end_pos: int = 0,
        route: CompiledRoute | None = None,
        dests: Mapping[ClusterKey, Dest] | None = None,
    ) -> None:
        self.req = req
        self.start_ns = start_ns
        self.route_name = route_name
        self.route = route  # the route that chose ``dest`` (None: the Host's service, inbound)
        self.dests = dests  # the view's destinations, where a retry may cross to
        self.dest = dest
        self.target = target
        self.add_host = add_host  # a Host to send (absolute form): the client's is dropped
        self.idx = idx
        self.end_pos = end_pos  # the fast path: reader position after this request's END
        self.body: bytes | None = None
        self.rid = b""  # the x-request-id this request carries (the client's or ours)
        self.up: Upstream | None = None
        self.end_ns = 0  # when the fast path completed it
        # For the request log (request_log.py), kept by the paths as they go: the trace and
        # forwarding fields this hop sent (heads.hop_fields), the endpoint keys tried (the
        # general path's list), when the last try was sent, and the client's bytes_out before.
        self.hop = b""
        self.tried: list[tuple[str, str, int]] | None = None
        self.try_ns = 0
        self.out0 = 0

    def __repr__(self) -> str:
        return (
            f"<Exchange {self.req.method!r} {self.target!r} -> {self.dest.service}"
            f" route={self.route_name!r} idx={self.idx}>"
        )


# -- body ------------------------------------------------------------------------------------


def whole_body_end(reader: RequestReader) -> int:
    """For the fast path: the reader position just past the current request's END if its body
    (possibly none) is already parsed whole, else -1."""
    events = reader.events
    pos = reader.pos
    n = len(events)
    if pos >= n:
        return -1
    if events[pos] is END:
        return pos + 1
    end = pos
    while end < n and type(events[end]) is bytes:
        end += 1
    if end >= n or events[end] is not END:
        return -1
    return end + 1


def take_whole_body(reader: RequestReader, req: RequestHead, end_pos: int) -> bytes:
    """Take the body that ``whole_body_end`` found off the reader."""
    parts = reader.events[reader.pos : end_pos - 1]  # the body chunks, END left out
    body = b"".join(parts) if parts else b""  # type: ignore[arg-type]
    reader.pos = end_pos
    req.body_done = True
    return body


def take_body(reader: RequestReader, req: RequestHead) -> bytes | None:
    """The general path: the whole body if it can be held (None: it streams, not replayable)."""
    if req.has_body:
        if not reader.body_complete_buffered():
            return None
        parts = []
        while True:
            ev = reader.pop()
            if ev is END:
                break
            parts.append(ev)
        req.body_done = True
        return b"".join(parts)  # type: ignore[arg-type]
    if reader.pending() and reader.events[reader.pos] is END:
        reader.pos += 1
        req.body_done = True
    return b""


# -- endpoint --------------------------------------------------------------------------------


def hash_key(req: RequestHead, settings: ServiceSettings, rid: bytes) -> bytes | None:
    """What a ring-hash service hashes: the configured header (x-request-id: ours if none)."""
    if settings.policy != "ring_hash":
        return None
    name = settings.hash_header.encode("latin-1")
    if name == b"x-request-id":
        return rid
    return header(req.headers, name) or None


def pick_endpoint(
    d: Dest,
    rng: Random,
    now_ns: int,
    ejected_until_ns: int,
    tried: Sequence[int] | None = None,
    key: bytes | None = None,
) -> int:
    """An index into ``d.endpoints``, or -1 when none may take the request.
    ``ejected_until_ns``: no endpoint is ejected from then on (``Accounting.horizon_ns``)."""
    balancer = d.balancer
    if balancer is None:
        return 0
    return balancer.pick(d.states, rng, now_ns, now_ns < ejected_until_ns, tried, key)


def retry_destination(
    x: Exchange, rng: Random, now_ns: int, tried: Collection[tuple[str, str, int]]
) -> Dest:
    """Where the next try of ``x`` goes: its destination while that has an endpoint available
    and not in ``tried`` (endpoint keys); else another destination of its route that has one,
    drawn by the route's weights; else its destination still (nothing better is known)."""
    d = x.dest
    r = x.route
    if r is None or x.dests is None or len(r.clusters) < 2 or dest_available(d, now_ns, tried):
        return d
    key = split_destination(r, x.dests, rng, now_ns, tried)
    return d if key is None else x.dests[key]


# -- outcome ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AfterTry:
    failed: bool  # the endpoint failed (outlier detection counts it)
    retry: int  # NO_RETRY, FREE_RETRY or BUDGET_RETRY
    reason: str  # the error to answer when there is no retry ("": none, the client is gone)


_FAIL = {
    CONNECT_FAILED: "upstream_connect_failure",
    PEER_CONNECT_FAILED: "upstream_connect_failure",
    RETRY_STATUS: "upstream_reset",
    TIMEOUT: "upstream_timeout",
    RESET: "upstream_reset",
    ABORT: "",
}


def after_try(
    outcome: int,
    replayable_idempotent: bool,
    tries_left: int,
    retry_connect: bool,
    time_left: bool = True,
    replayable: bool = True,
) -> AfterTry:
    """What a try that did not reach the client means (``outcome`` is not DONE).

    ``replayable_idempotent``: the method is idempotent and the body is held;
    ``tries_left``: retries the service still allows this request; ``retry_connect``: the
    service retries connect failures; ``time_left``: the request's own deadline (``request_ms``,
    all tries together) has not passed, else no try follows; ``replayable``: the body is held
    (a peer's connect failure consumed it: it can be sent again only if held)."""
    if outcome == STALE:
        free = replayable_idempotent and time_left
        return AfterTry(False, FREE_RETRY if free else NO_RETRY, "upstream_reset")
    if outcome == CONNECT_FAILED:
        may = retry_connect
    elif outcome == PEER_CONNECT_FAILED:
        may = retry_connect and replayable
    elif outcome == RETRY_STATUS:
        may = True  # only tried with a retry in hand (see relay.Relay.try_once's can_retry)
    elif outcome in (TIMEOUT, RESET):
        may = replayable_idempotent
    elif outcome == ABORT:
        may = False
    else:
        raise ValueError(f"no decision after outcome {outcome!r}")
    retry = BUDGET_RETRY if may and tries_left > 0 and time_left else NO_RETRY
    return AfterTry(True, retry, _FAIL[outcome])


class Accounting:
    """Outcome accounting: outlier detection and its ejection horizon, retry budget withdrawals,
    with their counters. Time is passed in (``now_ns``)."""

    __slots__ = ("metrics", "horizon_ns")

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        # No endpoint is ejected at or after this instant: while now is past it, a pick skips
        # building the eligibility mask.
        self.horizon_ns = 0

    def record(self, st: EndpointState, failed: bool, now_ns: int, d: Dest) -> None:
        """One result of ``st`` (an endpoint of ``d``); ejects it when the detector says so."""
        if not failed and st.consecutive_failures == 0 and not st.times_ejected:
            return
        if record_outcome(st, failed, now_ns, d.settings, d.peers or (st,)):
            self.metrics.bump(self.metrics.ejections, d.service)
            log.info("ejected %s from %s until %d ns", st.key, d.service, st.ejected_until_ns)
            self.horizon_ns = max(self.horizon_ns, st.ejected_until_ns)

    def connect_failed(self, st: EndpointState, now_ns: int, d: Dest) -> None:
        """A connect to ``st`` failed (here, or at its agent): down for ``DOWN_NS``, and one
        failure for the outlier detector."""
        st.down_until_ns = now_ns + DOWN_NS
        self.horizon_ns = max(self.horizon_ns, st.down_until_ns)
        self.record(st, True, now_ns, d)

    def may_retry(self, d: Dest, now_ns: int) -> bool:
        """Withdraw one retry from the service's budget, counting either answer."""
        if d.budget.try_withdraw(now_ns):
            self.metrics.bump(self.metrics.retries, d.service)
            return True
        self.metrics.bump(self.metrics.budget_exhausted, d.service)
        return False


__all__ = [
    "ABORT",
    "BUDGET_RETRY",
    "CONNECT_FAILED",
    "DONE",
    "FREE_RETRY",
    "IDEMPOTENT",
    "NO_RETRY",
    "PEER_CONNECT_FAILED",
    "RESET",
    "RETRY_STATUS",
    "STALE",
    "TIMEOUT",
    "Accounting",
    "AfterTry",
    "Exchange",
    "after_try",
    "hash_key",
    "pick_endpoint",
    "retry_destination",
    "take_body",
    "take_whole_body",
    "whole_body_end",
]
