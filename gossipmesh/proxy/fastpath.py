"""The fast path's decisions: the common exchange planned, committed and finished inline.

Theory of operation
-------------------
Most requests are a keep-alive HTTP/1.1 request in origin form, with no body or a Content-Length
body already parsed, no Expect/Upgrade, to an endpoint with an idle pooled raw-socket connection;
and most responses arrive whole in one receive: HTTP/1.1, keep-alive, Content-Length, a status
that is neither 1xx/204/304 nor one the service retries on. For those, three plain calls (no
await) carry the whole exchange, and both the event engine (engine.py) and the task path
(tasks.py) drive them; they only differ in how they wait for the bytes:

- ``plan``: the pipeline's route, destination and endpoint (routing.py, pipeline.py), on the
  inbound side the caller's authorization (authz.py), and the pooled connection, before a byte
  moves. None: not the fast shape (``Forwarder.exchange``
  serves it); ``x.up`` None: picked, but the general path must connect (``Forwarder.general``).
- ``commit``: the request head (heads.py), the body taken off the reader, the in-flight counts
  and the try's deadline.
- ``finish``: the response bytes for the client (``heads.fast_reply``), the upstream back in the
  pool and the exchange accounted (latency, outlier detection, budget, metrics). None: the
  response is not the fast shape; the sent try goes on in ``Forwarder.resume`` with the bytes
  received so far, so error statuses, timeouts, retries and outlier accounting stay in one place.

The clock is read twice per exchange: in ``plan`` (the start) and in ``finish`` (the end, kept
in ``x.end_ns`` for the caller's next idle deadline).
"""

from __future__ import annotations

from random import Random

from gossipmesh.proxy.authz import plain_path
from gossipmesh.proxy.clock import NS_PER_MS, Clock
from gossipmesh.proxy.downstream import Downstream
from gossipmesh.proxy.heads import (
    fast_reply,
    forward_fields,
    hop_fields,
    new_request_id,
    request_head,
)
from gossipmesh.proxy.http1 import RequestHead
from gossipmesh.proxy.limits import INBOUND
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pipeline import (
    IDEMPOTENT,
    Accounting,
    Exchange,
    pick_endpoint,
    take_whole_body,
    whole_body_end,
)
from gossipmesh.proxy.request_log import RequestLog
from gossipmesh.proxy.routing import Directory, inbound_instance, route
from gossipmesh.proxy.upstream import PoolKey, Upstreams


class FastPath:
    __slots__ = (
        "directory",
        "upstreams",
        "accounting",
        "metrics",
        "rng",
        "clock",
        "use_connector",
        "served",
        "requests",
    )

    def __init__(
        self,
        directory: Directory,
        upstreams: Upstreams,
        accounting: Accounting,
        rng: Random,
        clock: Clock,
    ) -> None:
        self.directory = directory
        self.upstreams = upstreams
        self.accounting = accounting
        self.metrics: ProxyMetrics = accounting.metrics
        self.rng = rng
        self.clock = clock
        # A hop to a peer goes through the Connector when there is one: not a raw socket.
        self.use_connector = upstreams.connector is not None
        self.served = 0  # exchanges completed here (tests use it to see which path ran)
        self.requests = RequestLog()  # the Proxy gives its own (access log, tap, spans)

    def plan(self, conn: Downstream, req: RequestHead) -> Exchange | None:
        """Everything decided before a byte moves, or None if ``req`` is not the fast shape."""
        if (
            req.upgrade
            or req.expect_continue
            or req.chunked
            or not req.keep_alive
            or req.version != "1.1"
        ):
            return None
        url = req.url
        if url[:1] != b"/":
            return None
        end_pos = whole_body_end(conn.reader)
        if end_pos < 0:
            return None
        now_ns = self.clock.now_ns()
        directory = self.directory
        if conn.direction == INBOUND:
            local = inbound_instance(directory.local, req.dest, req.host)
            if local is None or conn.tunnel:
                return None
            sp = directory.policies.get(local[0])
            if sp is not None:
                # Authorization (authz.py): a denial, or a path to normalise, is answered by
                # the general path, which says why.
                path = plain_path(url)
                if path is None or sp.decide(conn.peer, req.method, path) is not None:
                    return None
            d = directory.local_dests.get(local) or directory.local_dest(local)
            r = None
            dests = None
        else:
            host = req.host
            if not host:
                return None
            view = directory.view
            dests = view.dests
            horizon_ns = self.accounting.horizon_ns
            r, key = route(view, host, url, req.method, req.headers, self.rng, now_ns, horizon_ns)
            found = dests.get(key)
            if found is None:
                return None
            d = found
        if not d.fast or d.breaker.inflight >= d.settings.max_requests:
            return None
        idx = pick_endpoint(d, self.rng, now_ns, self.accounting.horizon_ns)
        if idx < 0:
            return None
        x = Exchange(req, now_ns, r.name if r else "", d, url, b"", idx, end_pos, r, dests)
        if self.use_connector and d.endpoints[idx].inbound is not None:
            return x
        pk: PoolKey = d.pool_keys[idx]
        if conn.caller:
            pk = (*pk, conn.caller)
        x.up = self.upstreams.take_idle_socket(
            pk, now_ns, req.method not in IDEMPOTENT, d.settings.idle_ms
        )
        return x

    def commit(self, conn: Downstream, x: Exchange) -> bytes:
        """Take the request off the reader; the bytes to send on ``x.up``."""
        req = x.req
        d = x.dest
        body = x.body = take_whole_body(conn.reader, req, x.end_pos)
        x.rid = rid = req.request_id or new_request_id(self.rng)
        hop = x.hop = hop_fields(req, conn.client_ip, rid, self.rng)
        x.try_ns = x.start_ns  # sent inline with its planning: no queue on this path
        fields = forward_fields(req, hop, b"", d.host_line, True, len(body))
        head = request_head(req, x.target, fields, d.mesh_lines[x.idx])
        if body:
            head += body
        d.breaker.inflight += 1
        d.states[x.idx].inflight += 1
        settings = d.settings
        assert x.up is not None
        x.up.io.deadline_ns = x.start_ns + min(settings.per_try_ms, settings.request_ms) * NS_PER_MS
        return head

    @staticmethod
    def undo_commit(x: Exchange) -> None:
        """Give back the in-flight counts ``commit`` took: the exchange leaves the fast path
        (``Forwarder.forward`` takes its own) or its connection closed."""
        x.dest.breaker.inflight -= 1
        x.dest.states[x.idx].inflight -= 1

    def finish(self, conn: Downstream, x: Exchange, n: int) -> bytes | int | None:
        """The bytes for the client for the ``n`` response bytes in ``conn.upbuf``, with the
        upstream released and the exchange accounted; None: not the fast shape (then
        ``Forwarder.resume``); an int: a Content-Length body that fits the buffer is still
        coming, call again once that many bytes are in."""
        d = x.dest
        settings = d.settings
        upmv = conn.upmv
        assert upmv is not None and x.up is not None
        reply = fast_reply(conn.upbuf, upmv, n, settings.retry_on_status, x.req.method == b"HEAD")
        if not isinstance(reply, tuple):
            return reply
        status, out = reply
        now_ns = self.clock.now_ns()
        self.upstreams.release(x.up, True, settings.idle_ms, now_ns)
        st = d.states[x.idx]
        if settings.policy == "peak_ewma":
            st.observe_rtt(now_ns - x.start_ns, now_ns)
        d.breaker.inflight -= 1
        st.inflight -= 1
        if (d.peers or d.balancer is None) and (
            status >= 500 or st.consecutive_failures or st.times_ejected
        ):
            self.accounting.record(st, status >= 500, now_ns, d)
        d.budget.record_request(x.start_ns)
        self.metrics.observe(
            d.service, x.route_name, status, conn.direction, now_ns - x.start_ns, d.label,
            d.nodes[x.idx],
        )  # fmt: skip
        if self.requests.on:
            self.requests.done(conn, x.req, x, d.service, x.route_name, status, x.start_ns,
                               now_ns, len(out))  # fmt: skip
        self.served += 1
        x.end_ns = now_ns
        return out


__all__ = ["FastPath"]
