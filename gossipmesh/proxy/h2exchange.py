"""The HTTP/2 exchange: one stream from routing to its answer, with retries, on its own task.

Theory of operation
-------------------
Each request stream of an HTTP/2 client connection (h2serve.py) is served here by the same
decision pipeline as an HTTP/1 request: the stream's header block becomes a ``RequestHead``
(h2heads.py), then ``route`` / ``inbound_instance`` and the destination's policies
(routing.py, authz.py), then an ``Exchange`` whose tries ``pick_endpoint`` /
``retry_destination`` place and ``after_try`` / ``Accounting`` judge (pipeline.py), counted by
``ProxyMetrics.observe`` like any request. Only the bytes move differently: each try opens a
stream on a shared upstream connection (h2pool.py), a pump task forwards the request body while
this task waits for the response headers, then relays body and trailers. Per-request load
balancing falls out: every stream picks its own endpoint.

Retries happen only while nothing reached the client (before the response headers are sent on).
A request body is replayable while it fits ``h2_replay_bytes`` (a unary gRPC call nearly always
does); its chunks are then acknowledged to the client as they are held, the others only once
the upstream took them (flow control bounds both). Outcomes: a RST_STREAM REFUSED_STREAM or a
GOAWAY that never covered the stream is STALE (nothing was processed: a free retry even for a
POST); a trailers-only gRPC answer whose ``grpc-status`` the service retries on (default
UNAVAILABLE) is RETRY_STATUS; a peer agent's "could not connect to its instance" is
PEER_CONNECT_FAILED, as on HTTP/1.

Deadlines: the service's ``request_ms`` (all tries) and ``per_try_ms`` bound the wait for the
response headers; a gRPC call's ``grpc-timeout`` bounds it too, and the whole call. Failures the
proxy answers itself are gRPC errors for gRPC calls (grpc.py: trailers-only, ``grpc-status``),
HTTP errors with ``x-gossipmesh-error`` otherwise. After the headers went out a failure can only
end the stream: gRPC trailers UNAVAILABLE (or DEADLINE_EXCEEDED), else RST_STREAM.
"""

from __future__ import annotations

from random import Random

import trio

from gossipmesh.proxy.audit import Audit
from gossipmesh.proxy.authz import normalise_path
from gossipmesh.proxy.clock import NS_PER_MS, Clock
from gossipmesh.proxy.downstream import Downstream
from gossipmesh.proxy.grpc import (
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    grpc_trailers,
    is_grpc,
    parse_timeout,
)
from gossipmesh.proxy.grpc import status_of as grpc_status_of
from gossipmesh.proxy.h2call import Call, answer_error
from gossipmesh.proxy.h2frames import ErrorCodes
from gossipmesh.proxy.h2heads import (
    Headers,
    Malformed,
    field,
    forward_headers,
    request_head,
    response_headers,
    status_of,
)
from gossipmesh.proxy.h2link import H2Link, LinkGone, Stream
from gossipmesh.proxy.h2pool import H2Pool
from gossipmesh.proxy.heads import hop_fields, new_request_id
from gossipmesh.proxy.http1 import RequestHead
from gossipmesh.proxy.limits import INBOUND, ProxyLimits
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pipeline import (
    ABORT,
    BUDGET_RETRY,
    CONNECT_FAILED,
    DONE,
    FREE_RETRY,
    IDEMPOTENT,
    PEER_CONNECT_FAILED,
    RESET,
    RETRY_STATUS,
    STALE,
    TIMEOUT,
    Accounting,
    Exchange,
    after_try,
    hash_key,
    pick_endpoint,
    retry_destination,
)
from gossipmesh.proxy.request_log import RequestLog
from gossipmesh.proxy.routing import Directory, inbound_instance, route
from gossipmesh.proxy.sockio import ConnectFailed, trio_deadline
from gossipmesh.proxy.upstream import Overloaded

Outcome = tuple[int, int]  # (pipeline outcome, HTTP status)
ANSWERED = (-1, 0)  # the proxy answered the request itself


class H2Exchange:
    __slots__ = (
        "directory",
        "pool",
        "accounting",
        "metrics",
        "rng",
        "clock",
        "limits",
        "audit",
        "requests",
    )

    def __init__(
        self,
        directory: Directory,
        pool: H2Pool,
        accounting: Accounting,
        rng: Random,
        clock: Clock,
        limits: ProxyLimits,
        audit: Audit,
        requests: RequestLog,
    ) -> None:
        self.directory = directory
        self.pool = pool
        self.accounting = accounting
        self.metrics: ProxyMetrics = accounting.metrics
        self.rng = rng
        self.clock = clock
        self.limits = limits
        self.audit = audit
        self.requests = requests  # the request log (request_log.py): access log, tap, spans

    # -- routing ---------------------------------------------------------------------------

    async def serve(self, conn: Downstream, dl: H2Link, s: Stream) -> None:
        """Serve the request on client stream ``s`` of ``dl``."""
        c = Call(conn, dl, s, self.clock.now_ns())
        headers = s.headers or []
        c.grpc = is_grpc(field(headers, b"content-type"))
        try:
            req = request_head(headers, s.ended)
        except Malformed:
            m = self.metrics.h2_protocol_errors
            m[conn.direction] = m.get(conn.direction, 0) + 1
            dl.reset(s.sid, ErrorCodes.PROTOCOL_ERROR)
            return
        if isinstance(req, str):
            await self.fail(c, "bad_request", req)
            return
        c.req = req
        x = await (self.inbound(c, req) if conn.direction == INBOUND else self.outbound(c, req))
        if x is not None:
            await self.forward(c, x)

    async def outbound(self, c: Call, req: RequestHead) -> Exchange | None:
        view = self.directory.view
        horizon_ns = self.accounting.horizon_ns
        r, key = route(
            view, req.host, req.url, req.method, req.headers, self.rng, c.start_ns, horizon_ns
        )
        d = view.dests.get(key)
        if d is None:
            await self.fail(c, "no_route", f"Host {key[0]!r}")  # no label: as forward.py
            return None
        return Exchange(req, c.start_ns, r.name if r else "", d, req.url, route=r, dests=view.dests)

    async def inbound(self, c: Call, req: RequestHead) -> Exchange | None:
        """Only a local instance, and only if the destination's policies let the caller in."""
        directory = self.directory
        local = inbound_instance(directory.local, req.dest, req.host)
        if local is None:
            detail = req.dest.strip().decode("latin-1") or "no x-gossipmesh-dest"
            service = req.service.decode("latin-1")
            await self.fail(c, "forbidden_destination", detail, service=service)
            return None
        d = directory.local_dest(local)
        sp = directory.policies.get(d.service)
        if sp is not None:
            path = b""
            if sp.uses_paths:
                normal = normalise_path(req.url)
                if normal is None:
                    detail = "ambiguous path (an encoded / or \\, or a bad escape)"
                    await self.fail(c, "bad_request", detail, service=d.service)
                    return None
                path, req.url = normal
            peer = c.conn.peer
            denied = sp.decide(peer, req.method, path)
            if denied is not None:
                self.metrics.count(self.metrics.denied, d.service, denied.policy)
                self.audit(
                    "request_denied",
                    service=d.service,
                    policy=denied.policy,
                    caller=peer.spiffe if peer is not None else "",
                    method=req.method.decode("latin-1"),
                    target=req.url[:200].decode("latin-1"),
                )
                extra = ((b"x-gossipmesh-policy", denied.policy.encode()),)
                await self.fail(c, "forbidden_by_policy", denied.detail, extra, d.service)
                return None
        return Exchange(req, c.start_ns, "", d, req.url)

    # -- tries -----------------------------------------------------------------------------

    async def forward(self, c: Call, x: Exchange) -> None:
        d = x.dest
        req = x.req
        c.x = x
        c.service = d.service
        c.route = x.route_name
        if not d.endpoints:
            await self.fail(c, "no_healthy_endpoint")
            return
        limit = d.breaker.admit_request(d.settings)
        if limit is not None:
            await self.overloaded(c, limit)
            return
        x.rid = c.rid = req.request_id or new_request_id(self.rng)
        c.left = d.settings.retry_attempts if d.balancer is not None else 0
        c.idempotent = req.method in IDEMPOTENT
        c.deadline_ns = c.start_ns + d.settings.request_ms * NS_PER_MS
        if c.grpc:
            timeout_ns = parse_timeout(field(req.headers, b"grpc-timeout"))
            if timeout_ns is not None:
                c.call_deadline_ns = c.start_ns + timeout_ns
                c.deadline_ns = min(c.deadline_ns, c.call_deadline_ns)
        authority = req.host or d.host_line[6:-2]
        x.hop = hop_fields(req, c.conn.client_ip, c.rid, self.rng)
        x.tried = c.tried
        base = forward_headers(req, b"http", authority, x.hop, None)
        d.budget.record_request(c.start_ns)
        d.breaker.inflight += 1
        try:
            while True:
                outcome, status = await self.next_try(c, x, base)
                if outcome == DONE or outcome == ANSWERED[0]:
                    return
                if not await self.after(c, x, outcome, status):
                    return
        finally:
            d.breaker.inflight -= 1

    async def next_try(self, c: Call, x: Exchange, base: Headers) -> Outcome:
        d = x.dest
        now_ns = self.clock.now_ns()
        tried = c.tried
        if tried:
            d = retry_destination(x, self.rng, now_ns, tried)
            if d is not x.dest:
                x.dest = d
                c.service = d.service
        key = hash_key(x.req, d.settings, x.rid)
        skip = [i for i, st in enumerate(d.states) if st.key in tried] if tried else None
        idx = pick_endpoint(d, self.rng, now_ns, self.accounting.horizon_ns, skip, key)
        if idx < 0:
            await self.fail(c, "no_healthy_endpoint")
            return ANSWERED
        x.idx = idx
        try:
            link = await self.pool.acquire(d, idx, c.conn.caller)
        except Overloaded as e:
            await self.overloaded(c, e.limit)
            return ANSWERED
        except ConnectFailed as e:
            tried.append(d.states[idx].key)
            c.detail = str(e)
            return CONNECT_FAILED, 0
        return await self.attempt(c, x, link, base)

    async def attempt(self, c: Call, x: Exchange, link: H2Link, base: Headers) -> Outcome:
        """One try of ``x`` on ``link`` to endpoint ``x.idx``."""
        d = x.dest
        ep = d.endpoints[x.idx]
        st = d.states[x.idx]
        c.tried.append(st.key)
        headers = base
        if ep.inbound is not None:
            mesh = [(b"x-gossipmesh-dest", ep.dest.encode()), (b"x-gossipmesh-service", d.service.encode())]  # fmt: skip
            headers = [*base, *mesh]
        s = c.s
        end_now = s.ended and not s.chunks and not c.replay and s.trailers is None
        try:
            us = link.open_stream(headers, end_now)
        except LinkGone:
            return STALE, 0  # the link was closing: nothing was sent
        us.partner = s
        s.partner = us
        st.inflight += 1
        x.try_ns = sent_ns = self.clock.now_ns()
        try:
            if end_now:  # nothing to pump: no nursery (and its cancel scope) to pay for
                return await self.response(c, x, link, us, sent_ns)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.pump, c, link, us)
                result = await self.response(c, x, link, us, sent_ns)
                nursery.cancel_scope.cancel()
            return result
        finally:
            st.inflight -= 1
            s.partner = None
            link.reset(us.sid)  # RST_STREAM CANCEL if the stream is still open; forgets it
            self.pool.idle(link, d.settings.idle_ms)

    async def pump(self, c: Call, link: H2Link, us: Stream) -> None:
        """Forward the client's request body (after what a retry replays) to ``us``."""
        s = c.s
        dl = c.dl
        limit = self.limits.h2_replay_bytes
        try:
            for data in list(c.replay):
                await link.send_data(us.sid, data, False)
            while True:
                if s.chunks:
                    data, flow = s.chunks.popleft()
                    kept = c.keep(data, limit)
                    if kept:
                        dl.ack(s.sid, flow)
                    await link.send_data(us.sid, data, False)
                    if not kept:
                        dl.ack(s.sid, flow)
                    continue
                if s.trailers is not None:
                    link.send_headers(us.sid, response_headers(s.trailers), True)
                    return
                if s.ended:
                    await link.send_data(us.sid, b"", True)
                    return
                if s.reset is not None:
                    us.wake()  # the task waiting on the response hears the client left
                    return
                await s.changed()
        except LinkGone:
            return  # the upstream stream ended: the response side reports it

    async def response(
        self, c: Call, x: Exchange, link: H2Link, us: Stream, sent_ns: int
    ) -> Outcome:
        """Wait for the response headers of this try; relay them and the rest if they are
        the answer, else say what the try came to."""
        d = x.dest
        settings = d.settings
        s = c.s
        head_ns = min(self.clock.now_ns() + settings.per_try_ms * NS_PER_MS, c.deadline_ns)
        with trio.CancelScope(deadline=trio_deadline(head_ns, self.clock)) as cs:
            while us.headers is None and us.reset is None and s.reset is None:
                await us.changed()
        if s.reset is not None:
            return ABORT, 0
        headers = us.headers
        if headers is None:
            if cs.cancelled_caught:
                return TIMEOUT, 0
            return (STALE if us.refused else RESET), 0
        status = status_of(headers)
        now_ns = self.clock.now_ns()
        if settings.policy == "peak_ewma":
            d.states[x.idx].observe_rtt(now_ns - sent_ns, now_ns)
        can_retry = c.replayable and c.left > 0
        if (
            can_retry
            and settings.retry_on_connect_failure
            and d.endpoints[x.idx].inbound is not None
            and field(headers, b"x-gossipmesh-error") == b"upstream_connect_failure"
        ):
            return PEER_CONNECT_FAILED, status
        if c.grpc:
            code = grpc_status_of(headers) if us.ended and not us.chunks else None
            if can_retry and code is not None and code in settings.retry_on_grpc_status:
                return RETRY_STATUS, status
        elif can_retry and c.idempotent and status in settings.retry_on_status:
            return RETRY_STATUS, status
        await self.relay(c, x, link, us, headers, status)
        return DONE, status

    async def relay(
        self, c: Call, x: Exchange, link: H2Link, us: Stream, headers: Headers, status: int
    ) -> None:
        """The answer: headers, body and trailers to the client, then its accounting."""
        d = x.dest
        dl = c.dl
        s = c.s
        sid = s.sid
        idle_ns = d.settings.idle_ms * NS_PER_MS
        code = None
        failed = status >= 500
        try:
            only = us.ended and not us.chunks and us.trailers is None
            dl.send_headers(sid, response_headers(headers), only)
            if only:
                code = grpc_status_of(headers)
            while not only:
                if us.chunks:
                    data, flow = us.chunks.popleft()
                    # The last chunk of an ended body carries END_STREAM itself (one frame less).
                    last = us.ended and not us.chunks and us.trailers is None
                    await dl.send_data(sid, data, last)
                    c.sent += len(data)
                    link.ack(us.sid, flow)
                    if last:
                        break
                    continue
                if us.trailers is not None:
                    code = grpc_status_of(us.trailers)
                    dl.send_headers(sid, response_headers(us.trailers), True)
                    break
                if us.ended:
                    await dl.send_data(sid, b"", True)
                    break
                if s.reset is not None:
                    break  # the client left: the try's end resets the upstream stream
                if us.reset is not None:
                    failed = True
                    if c.grpc:
                        code = UNAVAILABLE
                        dl.send_headers(sid, grpc_trailers(code, "gossipmesh: upstream reset"), True)  # fmt: skip
                    else:
                        dl.reset(sid, us.reset if us.reset > 0 else ErrorCodes.INTERNAL_ERROR)
                    break
                wait_ns = min(self.clock.now_ns() + idle_ns, c.call_deadline_ns)
                with trio.CancelScope(deadline=trio_deadline(wait_ns, self.clock)) as cs:
                    await us.changed()
                if cs.cancelled_caught:
                    if c.grpc and self.clock.now_ns() >= c.call_deadline_ns:
                        code = DEADLINE_EXCEEDED
                        dl.send_headers(sid, grpc_trailers(code, "gossipmesh: deadline"), True)
                    else:
                        failed = True
                        dl.reset(sid, ErrorCodes.CANCEL)
                    break
            if not s.ended and s.reset is None:
                dl.reset(sid, ErrorCodes.NO_ERROR)  # answered: the rest of the body is unwanted
        except LinkGone:
            pass  # the client's stream or connection ended mid-answer
        now_ns = self.clock.now_ns()
        if code == UNAVAILABLE:
            failed = True
        if d.peers or d.balancer is None:
            self.accounting.record(d.states[x.idx], failed, now_ns, d)
        self.done(c, x, status, now_ns)
        if c.grpc and code is not None:
            self.metrics.grpc(d.service, code, c.conn.direction)

    async def after(self, c: Call, x: Exchange, outcome: int, status: int) -> bool:
        """A try that did not reach the client: True to try again, else it was answered."""
        d = x.dest
        now_ns = self.clock.now_ns()
        # A stream the peer never processed may go again whatever its method.
        safe = c.replayable and (c.idempotent or outcome == STALE)
        step = after_try(
            outcome, safe, c.left, d.settings.retry_on_connect_failure,
            now_ns < c.deadline_ns, c.replayable,
        )  # fmt: skip
        if outcome in (CONNECT_FAILED, PEER_CONNECT_FAILED):
            self.accounting.connect_failed(d.states[x.idx], now_ns, d)
        elif step.failed:
            self.accounting.record(d.states[x.idx], True, now_ns, d)
        if step.retry == FREE_RETRY:
            return True
        if step.retry == BUDGET_RETRY and self.accounting.may_retry(d, now_ns):
            c.left -= 1
            return True
        if outcome == ABORT:
            self.done(c, x, 0, now_ns, "client_aborted")
            return False
        detail = ""
        if outcome == RETRY_STATUS:
            detail = f"upstream answered {status}"
        elif outcome == CONNECT_FAILED:
            detail = c.detail
        elif outcome == PEER_CONNECT_FAILED:
            detail = "the endpoint's agent could not connect to it"
        elif outcome == TIMEOUT and now_ns >= c.call_deadline_ns:
            detail = "grpc-timeout"
        await self.fail(c, step.reason, detail)
        return False

    # -- the proxy's own answers -----------------------------------------------------------

    async def overloaded(self, c: Call, limit: str) -> None:
        self.metrics.breaker_trip(c.service, limit)
        await self.fail(c, "overloaded", limit, ((b"x-gossipmesh-overloaded", limit.encode()),))

    async def fail(
        self,
        c: Call,
        reason: str,
        detail: str = "",
        extra: tuple[tuple[bytes, bytes], ...] = (),
        service: str | None = None,
    ) -> None:
        """Answer with a proxy error (h2call.py)."""
        status = await answer_error(self.metrics, c, reason, detail, extra, service)
        self.done(c, c.x, status, self.clock.now_ns(), reason)

    def done(self, c: Call, x: Exchange | None, status: int, now_ns: int, reason: str = "") -> None:
        """A finished request: its metrics (by destination and endpoint once routed) and the
        request log, as ``Forwarder.answered`` does for HTTP/1."""
        dest = node = ""
        if x is not None:
            d = x.dest
            dest = d.label
            node = d.nodes[x.idx] if x.idx >= 0 else ""
        direction = c.conn.direction
        self.metrics.observe(c.service, c.route, status, direction, now_ns - c.start_ns, dest, node)
        if self.requests.on:
            self.requests.done(c.conn, c.req, x, c.service, c.route, status, c.start_ns, now_ns,
                               c.sent, reason)  # fmt: skip


__all__ = ["H2Exchange"]
