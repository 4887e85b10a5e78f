"""The general path: one request from routing to the answer, with retries, on a task.

Theory of operation
-------------------
``exchange`` serves any request the fast path did not take: it parses the target, routes
(routing.py) and hands the ``Exchange`` to ``forward``, which runs the pipeline's remaining steps
in order (pipeline.py), each a short method here:

- admission: an endpoint exists and the service's breaker admits one more request
  (``overloaded`` answers 503 at once otherwise);
- ``prepare``: the body, held whole if it can be (then replayable) or else streamed, and the
  fields this hop adds, built once for every try (heads.py);
- ``next_try``: pick an endpoint (a retry may cross to another destination of the route:
  ``retry_destination``), get a connection, and ``attempt`` one try (relay.py);
- ``answered`` accounts for a response that reached the client; ``after`` asks ``after_try``
  what any other result means: retry (free, or paid from the budget) or the error to answer.

The fast path joins here with its ``Exchange`` when it meets something it does not handle
(``general``: picked, nothing sent; ``send_failed``: the pooled connection was dead; ``resume``:
sent, the response is not the fast shape), so errors, retries, timeouts and outlier accounting
are decided in one place.
"""

from __future__ import annotations

from random import Random

from gossipmesh.proxy.audit import Audit
from gossipmesh.proxy.authz import Denied, normalise_path
from gossipmesh.proxy.clock import NS_PER_MS, Clock
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.heads import (
    forward_fields,
    hop_fields,
    new_request_id,
    request_head,
    request_target,
)
from gossipmesh.proxy.http1 import RequestHead
from gossipmesh.proxy.limits import INBOUND
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pipeline import (
    ABORT,
    BUDGET_RETRY,
    CONNECT_FAILED,
    DONE,
    FREE_RETRY,
    IDEMPOTENT,
    PEER_CONNECT_FAILED,
    RETRY_STATUS,
    Accounting,
    Exchange,
    after_try,
    hash_key,
    pick_endpoint,
    retry_destination,
    take_body,
)
from gossipmesh.proxy.relay import Relay, TryResult
from gossipmesh.proxy.routing import Directory, inbound_instance, route
from gossipmesh.proxy.sockio import ConnectFailed
from gossipmesh.proxy.tunnels import Tunnels
from gossipmesh.proxy.upstream import Overloaded, Upstream, Upstreams


class Tries:
    """The retry state of one request on the general path."""

    __slots__ = (
        "tried",
        "left",
        "replayable",
        "idempotent",
        "deadline_ns",
        "hop",
        "fields",
        "detail",
    )

    def __init__(self, left: int, replayable: bool, idempotent: bool) -> None:
        self.tried: list[tuple[str, str, int]] = []  # endpoint keys tried so far
        self.left = left  # retries the service still allows
        self.replayable = replayable
        self.idempotent = idempotent
        self.deadline_ns = 0  # the whole request's deadline
        self.hop = b""  # the hop's trace and forwarding fields
        self.fields: list[bytes] = []  # the fields this hop adds, for every endpoint
        self.detail = ""  # why the last connect failed


class Forwarder:
    __slots__ = (
        "directory",
        "upstreams",
        "downstreams",
        "relay",
        "tunnels",
        "accounting",
        "metrics",
        "rng",
        "clock",
        "audit",
        "requests",
    )

    def __init__(
        self,
        directory: Directory,
        upstreams: Upstreams,
        downstreams: Downstreams,
        relay: Relay,
        tunnels: Tunnels,
        accounting: Accounting,
        rng: Random,
        clock: Clock,
    ) -> None:
        self.directory = directory
        self.upstreams = upstreams
        self.downstreams = downstreams
        self.relay = relay
        self.tunnels = tunnels
        self.accounting = accounting
        self.metrics: ProxyMetrics = accounting.metrics
        self.rng = rng
        self.clock = clock
        self.audit = Audit()  # the Proxy gives its own (the agent's structured log)
        self.requests = downstreams.requests  # the request log (request_log.py)

    # -- entry points ------------------------------------------------------------------------

    async def exchange(self, conn: Downstream, req: RequestHead) -> bool:
        """Serve one request; True if the client connection stays open."""
        start_ns = self.clock.now_ns()
        if conn.direction == INBOUND:
            return await self.exchange_inbound(conn, req, start_ns)
        reply = self.downstreams.reply_error
        parsed = request_target(req)
        if parsed is None:
            reason = "unsupported" if req.method == b"CONNECT" else "bad_request"
            detail = "request target must be origin-form or http:// absolute-form"
            return await reply(conn, req, reason, "", detail, start_ns=start_ns)
        target, authority, add_host = parsed
        if not authority:
            return await reply(conn, req, "bad_request", "", "no Host", start_ns=start_ns)
        if add_host and req.host:
            req.headers = [(n, v) for n, v in req.headers if n != b"host"]
        view = self.directory.view
        horizon_ns = self.accounting.horizon_ns
        r, key = route(
            view, authority, target, req.method, req.headers, self.rng, start_ns, horizon_ns
        )
        d = view.dests.get(key)
        if d is None:
            # The Host names no service: said in the answer, never made a metric label (a
            # client choosing Hosts would choose series) nor the log's service (its authority
            # field has it).
            return await reply(conn, req, "no_route", "", f"Host {key[0]!r}", start_ns=start_ns)
        name = r.name if r else ""
        x = Exchange(req, start_ns, name, d, target, add_host, route=r, dests=view.dests)
        return await self.forward(conn, x)

    async def exchange_inbound(self, conn: Downstream, req: RequestHead, start_ns: int) -> bool:
        directory = self.directory
        local = inbound_instance(directory.local, req.dest, req.host)
        if local is None:
            return await self.downstreams.reply_error(
                conn,
                req,
                "forbidden_destination",
                req.service.decode("latin-1"),
                req.dest.strip().decode("latin-1") or "no x-gossipmesh-dest",
                start_ns=start_ns,
            )
        d = directory.local_dest(local)
        connect = req.method == b"CONNECT"
        if conn.peer is not None and connect != conn.tunnel:
            # ALPN says what the connection carries: requests, or one TCP tunnel.
            detail = "a CONNECT needs ALPN " if connect else "a request needs ALPN "
            return await self.downstreams.reply_error(
                conn, req, "bad_request", d.service, detail + ("tunnel" if connect else "http"),
                keep=False, start_ns=start_ns,
            )  # fmt: skip
        url = req.url if req.url[:1] == b"/" else b"/"
        sp = directory.policies.get(d.service)
        if sp is not None:
            path = b""
            if connect:
                denied = sp.decide(conn.peer, None, path)
            else:
                if sp.uses_paths:
                    normal = normalise_path(url)
                    if normal is None:
                        detail = "ambiguous path (an encoded / or \\, or a bad escape)"
                        return await self.downstreams.reply_error(
                            conn, req, "bad_request", d.service, detail, start_ns=start_ns
                        )
                    path, url = normal
                denied = sp.decide(conn.peer, req.method, path)
            if denied is not None:
                return await self.deny(conn, req, d.service, denied, start_ns)
        if connect:
            return await self.tunnels.inbound_connect(conn, req, d.settings, d.endpoints[0])
        return await self.forward(conn, Exchange(req, start_ns, "", d, url))

    async def deny(
        self, conn: Downstream, req: RequestHead, service: str, denied: Denied, start_ns: int
    ) -> bool:
        """403 naming the policy; counted per policy and logged (bounded: audit.py)."""
        self.metrics.count(self.metrics.denied, service, denied.policy)
        peer = conn.peer
        self.audit(
            "request_denied",
            service=service,
            policy=denied.policy,
            caller=peer.spiffe if peer is not None else "",
            method=req.method.decode("latin-1"),
            target=req.url[:200].decode("latin-1"),
        )
        return await self.downstreams.reply_error(
            conn, req, "forbidden_by_policy", service, denied.detail, start_ns=start_ns,
            extra=((b"x-gossipmesh-policy", denied.policy.encode()),),
        )  # fmt: skip

    async def general(self, conn: Downstream, x: Exchange) -> bool:
        """The fast path picked ``x.idx`` but the general path must connect (nothing sent)."""
        return await self.forward(conn, x)

    async def send_failed(self, conn: Downstream, x: Exchange) -> bool:
        """The fast path's pooled connection was dead (the peer had closed it): a stale
        connection, retried for free with a new pick."""
        FastPath.undo_commit(x)
        assert x.up is not None
        self.upstreams.close(x.up)
        x.up = None
        x.idx = -1
        return await self.forward(conn, x)

    async def resume(self, conn: Downstream, x: Exchange, n: int) -> bool:
        """The fast path's try was sent; it continues here with the ``n`` response bytes received
        so far (in the client's upstream buffer)."""
        FastPath.undo_commit(x)
        upmv = conn.upmv
        return await self.forward(conn, x, upmv[:n] if n > 0 and upmv is not None else None, True)

    # -- the pipeline ------------------------------------------------------------------------

    async def forward(
        self,
        conn: Downstream,
        x: Exchange,
        prefed: memoryview | None = None,
        resumed: bool = False,
    ) -> bool:
        """Serve ``x`` through its destination with retries. ``resumed``: the first try was
        already sent on ``x.up`` (by the fast path) and ``prefed`` is its response so far."""
        d = x.dest
        if not d.endpoints:
            return await self.fail(conn, x, "no_healthy_endpoint")
        if not resumed:
            limit = d.breaker.admit_request(d.settings)
            if limit is not None:
                return await self.overloaded(conn, x, limit)
        tries = self.prepare(conn, x)
        x.tried = tries.tried
        x.out0 = conn.bytes_out
        d.budget.record_request(x.start_ns)
        d.breaker.inflight += 1
        try:
            result: TryResult | bool
            if resumed:
                assert x.up is not None
                result = await self.attempt(conn, x, tries, x.up, b"", x.start_ns, prefed)
            else:
                result = await self.next_try(conn, x, tries)
            while True:
                if type(result) is bool:
                    return result  # answered by the proxy
                outcome, status, keep = result
                if outcome == DONE:
                    return self.answered(conn, x, status, keep)
                answer = await self.after(conn, x, tries, outcome, status)
                if answer is not None:
                    return answer
                result = await self.next_try(conn, x, tries)
        finally:
            d.breaker.inflight -= 1

    def prepare(self, conn: Downstream, x: Exchange) -> Tries:
        """The body (held if it can be), the request id, and the fields every try sends."""
        req = x.req
        d = x.dest
        if x.body is None:
            x.body = take_body(conn.reader, req)
        if not x.rid:
            x.rid = req.request_id or new_request_id(self.rng)
        replayable = x.body is not None and not req.upgrade
        retries = d.settings.retry_attempts if d.balancer is not None else 0
        tries = Tries(retries, replayable, req.method in IDEMPOTENT)
        tries.hop = x.hop = hop_fields(req, conn.client_ip, x.rid, self.rng)
        self.set_fields(x, tries)
        tries.deadline_ns = x.start_ns + d.settings.request_ms * NS_PER_MS
        return tries

    @staticmethod
    def set_fields(x: Exchange, tries: Tries) -> None:
        """The fields every try to ``x.dest`` sends (its Host line differs per destination)."""
        body_len = len(x.body) if x.body is not None else 0
        tries.fields = forward_fields(
            x.req, tries.hop, x.add_host, x.dest.host_line, tries.replayable, body_len
        )

    async def next_try(self, conn: Downstream, x: Exchange, tries: Tries) -> TryResult | bool:
        """Pick an endpoint (the fast path's pick first), connect, and try; a bool: answered."""
        d = x.dest
        now_ns = self.clock.now_ns()
        idx = x.idx
        if idx < 0 or tries.tried:
            tried = tries.tried
            if tried:
                d = retry_destination(x, self.rng, now_ns, tried)
                if d is not x.dest:
                    x.dest = d
                    self.set_fields(x, tries)
            key = hash_key(x.req, d.settings, x.rid)
            horizon_ns = self.accounting.horizon_ns
            skip = [i for i, st in enumerate(d.states) if st.key in tried] if tried else None
            idx = pick_endpoint(d, self.rng, now_ns, horizon_ns, skip, key)
            if idx < 0:
                return await self.fail(conn, x, "no_healthy_endpoint")
            x.idx = idx
        head = request_head(x.req, x.target, tries.fields, d.mesh_lines[idx])
        check_stale = not (tries.replayable and tries.idempotent)
        try:
            up = await self.upstreams.acquire(d, idx, now_ns, check_stale, conn.caller)
        except Overloaded as e:
            return await self.overloaded(conn, x, e.limit)
        except ConnectFailed as e:
            tries.tried.append(d.states[idx].key)
            tries.detail = str(e)
            return CONNECT_FAILED, 0, False
        return await self.attempt(conn, x, tries, up, head, None, None)

    async def attempt(
        self,
        conn: Downstream,
        x: Exchange,
        tries: Tries,
        up: Upstream,
        head: bytes,
        sent_ns: int | None,
        prefed: memoryview | None,
    ) -> TryResult:
        """One try on ``up`` to endpoint ``x.idx``, with its deadline and in-flight count."""
        d = x.dest
        st = d.states[x.idx]
        tries.tried.append(st.key)
        now_ns = self.clock.now_ns()
        x.try_ns = now_ns if sent_ns is None else sent_ns  # the request log's upstream time
        per_try_ns = now_ns + d.settings.per_try_ms * NS_PER_MS
        up.io.deadline_ns = min(per_try_ns, tries.deadline_ns)
        retry_connect = tries.replayable and tries.left > 0 and d.settings.retry_on_connect_failure
        can_retry = tries.idempotent and tries.replayable and tries.left > 0
        st.inflight += 1
        try:
            return await self.relay.try_once(
                conn, x, up, head, can_retry, sent_ns, prefed, retry_connect
            )
        finally:
            st.inflight -= 1

    def answered(self, conn: Downstream, x: Exchange, status: int, keep: bool) -> bool:
        """A response reached the client: account for it."""
        d = x.dest
        now_ns = self.clock.now_ns()
        if d.peers or d.balancer is None:
            self.accounting.record(d.states[x.idx], status >= 500, now_ns, d)
        self.metrics.observe(
            d.service, x.route_name, status, conn.direction, now_ns - x.start_ns, d.label,
            d.nodes[x.idx],
        )  # fmt: skip
        if self.requests.on:
            self.requests.done(conn, x.req, x, d.service, x.route_name, status, x.start_ns,
                               now_ns, conn.bytes_out - x.out0)  # fmt: skip
        return keep

    async def after(
        self, conn: Downstream, x: Exchange, tries: Tries, outcome: int, status: int
    ) -> bool | None:
        """A try that did not reach the client: None to try again, else the answer sent."""
        d = x.dest
        now_ns = self.clock.now_ns()
        step = after_try(
            outcome,
            tries.replayable and tries.idempotent,
            tries.left,
            d.settings.retry_on_connect_failure,
            now_ns < tries.deadline_ns,
            tries.replayable,
        )
        if outcome in (CONNECT_FAILED, PEER_CONNECT_FAILED):
            self.accounting.connect_failed(d.states[x.idx], now_ns, d)
        elif step.failed:
            self.accounting.record(d.states[x.idx], True, now_ns, d)
        if step.retry == FREE_RETRY:
            return None
        if step.retry == BUDGET_RETRY and self.accounting.may_retry(d, now_ns):
            tries.left -= 1
            return None
        if outcome == ABORT:
            self.metrics.observe(
                d.service, x.route_name, 0, conn.direction, now_ns - x.start_ns, d.label,
                d.nodes[x.idx],
            )  # fmt: skip
            if self.requests.on:
                self.requests.done(conn, x.req, x, d.service, x.route_name, 0, x.start_ns,
                                   now_ns, conn.bytes_out - x.out0, "client_aborted")  # fmt: skip
            return False
        detail = ""
        if outcome == RETRY_STATUS:
            # No retry left: the upstream's answer was consumed; report it as ours.
            detail = f"upstream answered {status}"
        elif outcome == CONNECT_FAILED:
            detail = tries.detail
        elif outcome == PEER_CONNECT_FAILED:
            detail = "the endpoint's agent could not connect to it"
        return await self.fail(conn, x, step.reason, detail)

    async def overloaded(self, conn: Downstream, x: Exchange, limit: str) -> bool:
        """The service's breaker refused (``limit``): 503 at once, never a queue."""
        self.metrics.breaker_trip(x.dest.service, limit)
        extra = ((b"x-gossipmesh-overloaded", limit.encode()),)
        return await self.fail(conn, x, "overloaded", limit, extra)

    async def fail(
        self,
        conn: Downstream,
        x: Exchange,
        reason: str,
        detail: str = "",
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> bool:
        """Answer ``x`` with a proxy error."""
        return await self.downstreams.reply_error(
            conn,
            x.req,
            reason,
            x.dest.service,
            detail,
            route=x.route_name,
            start_ns=x.start_ns,
            extra=extra,
            exchange=x,
        )


__all__ = ["Forwarder", "Tries"]
