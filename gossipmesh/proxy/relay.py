"""One try on the task path: send the request upstream, read the response head, relay the body.

Theory of operation
-------------------
``Relay.try_once`` moves the bytes of one try and reports what it came to (an outcome from
pipeline.py); deciding what that means (retry, eject, answer 502/504) is the caller's, through
``after_try``. Three steps:

1. ``send``: the head and a held body in one ``send``; a streamed body follows as it arrives
   from the client (``stream_request_body``), after ``100 Continue`` if the client asked for it.
2. ``response_head``: read until the final head (1xx other than 101 are dropped). A failure here
   is still retryable: nothing reached the client. A reused connection that fails before any
   response byte was closed by the peer while idle (STALE, a free retry).
3. ``relay_response``: head then body, reframed for the client (``heads.response_framing``);
   a chunked body is re-chunked as it streams. From the first byte sent to the client on, the
   try is DONE whatever happens: a failure mid-body can only be signalled by closing the client.
   The upstream goes back to the pool only if its response ended cleanly with keep-alive.

Both directions relay bodies through ``drain_body``; memory per connection stays one receive
buffer each way.
"""

from __future__ import annotations

from typing import Any

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, Clock
from gossipmesh.proxy.downstream import Downstream
from gossipmesh.proxy.heads import response_framing
from gossipmesh.proxy.http1 import (
    CONTINUE_100,
    END,
    LAST_CHUNK,
    ParseError,
    RequestHead,
    ResponseHead,
    chunk,
)
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.pipeline import (
    ABORT,
    DONE,
    PEER_CONNECT_FAILED,
    RESET,
    RETRY_STATUS,
    STALE,
    TIMEOUT,
    Exchange,
)
from gossipmesh.proxy.sockio import IO, ConnLost
from gossipmesh.proxy.table import ServiceSettings
from gossipmesh.proxy.tunnels import Tunnels
from gossipmesh.proxy.upstream import Upstream, Upstreams

TryResult = tuple[int, int, bool]  # (outcome, status, the client connection may go on)
# How a peer agent's inbound side says it could not connect to its instance (errors.py).
PEER_CONNECT_MARK = b"\r\nx-gossipmesh-error: upstream_connect_failure"


def drain_body(reader: Any, chunked: bool, out: list[bytes]) -> bool:
    """Move the body bytes parsed so far into ``out``, framed for the other side (re-chunked when
    it is chunked); True once the message ended."""
    while reader.pending():
        ev = reader.pop()
        if ev is END:
            if chunked:
                out.append(LAST_CHUNK)
            return True
        if type(ev) is bytes:
            out.append(chunk(ev) if chunked else ev)
    return False


class Relay:
    __slots__ = ("limits", "clock", "upstreams", "tunnels")

    def __init__(
        self, limits: ProxyLimits, clock: Clock, upstreams: Upstreams, tunnels: Tunnels
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.upstreams = upstreams
        self.tunnels = tunnels

    async def try_once(
        self,
        conn: Downstream,
        x: Exchange,
        up: Upstream,
        head: bytes,
        can_retry: bool,
        sent_ns: int | None = None,
        prefed: memoryview | None = None,
        retry_connect: bool = False,
    ) -> TryResult:
        """One try of ``x`` on ``up`` (its deadline already set) to endpoint ``x.idx``.

        ``sent_ns`` given: the request was already sent then (by the fast path), and
        ``prefed`` holds the response bytes received for it so far, if any. ``can_retry``: a
        status the service retries on is not relayed; ``retry_connect``: nor is the endpoint's
        agent saying it could not connect to the instance (PEER_CONNECT_FAILED)."""
        upmv = conn.upstream_buffer(self.limits.recv_buffer_bytes)
        if sent_ns is None:
            sent_ns = self.clock.now_ns()
            failed = await self.send(conn, x, up, head)
            if failed is not None:
                return failed, 0, False
        rh = await self.response_head(up, upmv, prefed)
        if type(rh) is int:
            return rh, 0, True
        assert type(rh) is ResponseHead
        d = x.dest
        settings = d.settings
        if settings.policy == "peak_ewma":
            now_ns = self.clock.now_ns()
            d.states[x.idx].observe_rtt(now_ns - sent_ns, now_ns)
        if (
            rh.status == 502
            and retry_connect
            and d.endpoints[x.idx].inbound is not None
            and PEER_CONNECT_MARK in rh.raw
        ):
            self.upstreams.close(up)
            return PEER_CONNECT_FAILED, 502, True
        if can_retry and rh.status in settings.retry_on_status:
            self.upstreams.close(up)
            return RETRY_STATUS, rh.status, True
        if rh.upgrade and x.req.upgrade:
            await self.tunnels.after_upgrade(conn, up, rh)
            return DONE, 101, False
        return await self.relay_response(conn, x.req, up, rh, settings, upmv)

    async def send(self, conn: Downstream, x: Exchange, up: Upstream, head: bytes) -> int | None:
        """Send the request; None if it went, else the outcome."""
        req = x.req
        io = up.io
        try:
            if x.body is not None:
                await io.send_all(head + x.body if x.body else head)
            else:
                await io.send_all(head)
                if req.expect_continue:
                    await conn.io.send_all(CONTINUE_100)
                if req.has_body:
                    ok = await self.stream_request_body(conn, req, io)
                    req.body_done = ok
                    if not ok:
                        self.upstreams.close(up)
                        return ABORT
        except ConnLost:
            timed_out = io.timed_out
            self.upstreams.close(up)
            if conn.io.closed:
                return ABORT
            if timed_out:
                return TIMEOUT
            return STALE if up.reused else RESET
        return None

    async def response_head(
        self, up: Upstream, upmv: memoryview, prefed: memoryview | None
    ) -> ResponseHead | int:
        """The final response head, or the outcome of a failure before it."""
        rr = up.reader
        io = up.io
        wait_first = True
        try:
            if prefed is not None:
                rr.feed(prefed)
            while True:
                if not rr.pending():
                    n = await io.recv_into(upmv, wait_first)
                    wait_first = False
                    if n == 0:
                        raise ConnLost("upstream closed before the response head")
                    rr.feed(upmv[:n])
                    continue
                ev = rr.pop()
                if type(ev) is ResponseHead and not (100 <= ev.status < 200 and ev.status != 101):
                    return ev
        except (ConnLost, ParseError):
            timed_out = io.timed_out
            seen_bytes = rr.mid_message()
            self.upstreams.close(up)
            if timed_out:
                return TIMEOUT
            return STALE if up.reused and not seen_bytes else RESET

    async def relay_response(
        self,
        conn: Downstream,
        req: RequestHead,
        up: Upstream,
        rh: ResponseHead,
        settings: ServiceSettings,
        upmv: memoryview,
    ) -> TryResult:
        framing = response_framing(req, rh)
        status = rh.status
        rr = up.reader
        io = up.io
        down = conn.io
        out = [framing.head]
        done = False
        if req.method == b"HEAD":
            rr.reset()  # llhttp cannot be told a HEAD response has no body
            done = True
        idle_ns = settings.idle_ms * NS_PER_MS
        reusable = rh.keep_alive
        try:
            while True:
                if drain_body(rr, framing.chunked, out):
                    done = True  # (a HEAD answer is done before any body event)
                if out:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    out = []
                    await down.send_all(data)
                    conn.bytes_out += len(data)
                if done:
                    break
                io.deadline_ns = self.clock.now_ns() + idle_ns
                try:
                    n = await io.recv_into(upmv)
                except ConnLost:
                    n = -1
                if n <= 0:
                    if n == 0 and framing.close_delimited:
                        reusable = False
                        done = True
                        if framing.chunked:
                            out.append(LAST_CHUNK)
                        continue
                    # Upstream died mid-body: the client has a partial response; only closing
                    # the downstream connection tells it so.
                    self.upstreams.close(up)
                    return DONE, status, False
                rr.feed(upmv[:n])
        except (ConnLost, ParseError):
            self.upstreams.close(up)
            return DONE, status, False
        now_ns = self.clock.now_ns()
        self.upstreams.release(up, reusable and not rr.pending(), settings.idle_ms, now_ns)
        return DONE, status, not framing.close_after

    async def stream_request_body(self, conn: Downstream, req: RequestHead, io: IO) -> bool:
        """Forward the rest of the request body as it arrives; False if the client vanished."""
        reader = conn.reader
        down = conn.io
        mv = conn.mv
        chunked = req.chunked
        idle_ns = self.limits.client_idle_ms * NS_PER_MS
        while True:
            out: list[bytes] = []
            done = drain_body(reader, chunked, out)
            if out:
                await io.send_all(b"".join(out))
            if done:
                return True
            down.deadline_ns = self.clock.now_ns() + idle_ns
            n = await down.recv_into(mv)
            down.deadline_ns = NEVER_NS
            if n == 0:
                return False
            try:
                reader.feed(mv[:n])
            except ParseError:
                return False


__all__ = ["Relay", "TryResult", "drain_body"]
