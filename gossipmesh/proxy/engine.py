"""An event-driven engine for the proxy's fast path: nginx's shape inside trio.

Theory of operation
-------------------
One private ``select.epoll`` in edge-triggered mode. Every downstream connection, every HTTP
listener and every pooled raw-socket upstream the engine has used is registered once, for
EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET, and stays registered until it is closed or handed over. One
trio task waits for the epoll fd to become readable, takes up to ``MAX_EVENTS`` ready fds with
``poll(0)`` and runs each connection's state machine inline as plain method calls: no coroutine
switch, no task per connection, no ``epoll_ctl`` per wait. Between batches it yields to trio
(``wait_readable`` or a checkpoint), so the admin API and SWIM in the same process keep running.

A downstream connection (``_Conn``) is READ (parsing requests), UP (its request went to a pooled
upstream; waiting for the response) or WRITE (the response did not fit the socket buffer in one
send). The decisions are the proxy's own: ``Proxy._fast_plan`` / ``_fast_commit`` /
``_fast_finish``, the same code the task path's ``_fast`` runs. Edge-triggered reads follow
nginx: a receive shorter than the buffer emptied the socket (the next byte raises a new edge);
a full one may have left bytes behind, so the connection reads again before it waits.

Anything outside that shape goes to the general task code (``Proxy._http_task``): the connection
is unregistered first, then a task runs ``_exchange`` / ``_forward(picked=...)`` /
``_forward(resume=...)`` / ``_reply_error`` with the bytes already read, exactly as the task path
would. So errors, retries, 502/503/504 and ejection stay in one place. When that exchange ends
with the connection kept and nothing buffered, the task hands the connection back here.

Timeouts ride the proxy's watchdog: every socket keeps its ``deadline``; a socket the engine owns
carries ``owner`` and the watchdog calls ``owner.on_timeout`` after closing it (the client's idle
timeout closes the connection; an upstream's per-try timeout resumes the general path, which
answers 504 or retries).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from gossipmesh.proxy.http1 import HeaderLimitError, ParseError, RequestHead
from gossipmesh.proxy.sockio import INF, ConnLost, _now

if TYPE_CHECKING:
    from gossipmesh.proxy.server import Proxy, Upstream, _Ctx, _Plan
    from gossipmesh.proxy.sockio import SockIO

log = logging.getLogger("gossipmesh.proxy")

HAVE_EPOLL = hasattr(select, "epoll") and hasattr(select, "EPOLLET")
MAX_EVENTS = 128
ACCEPT_BATCH = 64
if HAVE_EPOLL:
    _MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    _LISTEN_MASK = select.EPOLLIN | select.EPOLLET
    _OUT = select.EPOLLOUT
    _HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
else:  # pragma: no cover - the proxy falls back to the task path
    _MASK = _LISTEN_MASK = _OUT = _HUP = 0

READ, UP, WRITE, GONE = range(4)


class Engine:
    __slots__ = ("proxy", "nursery", "ep", "handlers", "ready", "_wake", "conns")

    def __init__(self, proxy: Proxy, nursery: trio.Nursery) -> None:
        self.proxy = proxy
        self.nursery = nursery
        self.ep = select.epoll()
        # fd -> callable(events): a listener, a downstream connection or an upstream.
        self.handlers: dict[int, Callable[[int], None]] = {}
        # Connections with work left over from a batch (fairness), run at the next turn.
        self.ready: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self._wake = False

    # -- registration ----------------------------------------------------------------------

    def add_listener(self, lsock: socket.socket, direction: str) -> None:
        acc = _Acceptor(self, lsock, direction)
        self.handlers[lsock.fileno()] = acc.on_event
        self.ep.register(lsock.fileno(), _LISTEN_MASK)

    def adopt(self, ctx: _Ctx) -> None:
        """Serve ``ctx``'s connection from now on (a new one, or one handed back by a task)."""
        conn = _Conn(self, ctx)
        self.conns.add(conn)
        fd = ctx.down.sock.fileno()
        self.handlers[fd] = conn.on_down
        ctx.down.owner = conn
        # Registering reports the current readiness: bytes already there raise the first event.
        self.ep.register(fd, _MASK)
        conn.wait_client()

    def track_upstream(self, up: Upstream) -> _UpReg:
        reg = up.reg
        if reg is None:
            fd = up.io.sock.fileno()  # type: ignore[union-attr]
            reg = up.reg = _UpReg(self, fd)
            self.handlers[fd] = reg.on_event
            try:
                self.ep.register(fd, _MASK)
            except OSError:
                self.handlers.pop(fd, None)
                up.reg = None
                raise
        return reg

    def forget(self, fd: int, handler: object) -> None:
        """Unregister ``fd`` if ``handler`` still owns it (the number may be reused already)."""
        h = self.handlers.get(fd)
        if h is not None and getattr(h, "__self__", None) is handler:
            del self.handlers[fd]
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        ep = self.ep
        epfd = ep.fileno()
        poll = ep.poll
        handlers = self.handlers
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        try:
            while True:
                if self.ready or self._wake:
                    self._wake = False
                    await checkpoint()
                else:
                    await wait_readable(epfd)
                events = poll(0, MAX_EVENTS)
                for fd, ev in events:
                    h = handlers.get(fd)
                    if h is not None:
                        try:
                            h(ev)
                        except Exception:
                            log.exception("proxy engine: handler for fd %d failed", fd)
                            owner = getattr(h, "__self__", None)
                            if isinstance(owner, _Conn):
                                owner.close()
                if len(events) == MAX_EVENTS:
                    self._wake = True  # more may be ready: take them after a checkpoint
                if self.ready:
                    ready, self.ready = self.ready, []
                    for conn in ready:
                        if conn.state == READ:
                            try:
                                conn.run()
                            except Exception:
                                log.exception("proxy engine: connection failed")
                                conn.close()
        finally:
            for conn in list(self.conns):
                conn.close()
            ep.close()


class _Acceptor:
    __slots__ = ("engine", "lsock", "direction")

    def __init__(self, engine: Engine, lsock: socket.socket, direction: str) -> None:
        self.engine = engine
        self.lsock = lsock
        self.direction = direction

    def on_event(self, ev: int) -> None:
        proxy = self.engine.proxy
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                # EMFILE and friends: try again at the next turn rather than spin.
                log.warning("accept on %s failed: %s", self.direction, e)
                self.engine.nursery.start_soon(self._later)
                return
            proxy._engine_accept(sock, addr, self.direction)
        # The edge may hold more connections: come back after a checkpoint.
        self.engine.nursery.start_soon(self._later)

    async def _later(self) -> None:
        await trio.lowlevel.checkpoint()
        self.on_event(0)


class _UpReg:
    """A pooled upstream registered once; ``owner`` is the connection waiting on it, if any."""

    __slots__ = ("engine", "fd", "owner")

    def __init__(self, engine: Engine, fd: int) -> None:
        self.engine = engine
        self.fd = fd
        self.owner: _Conn | None = None

    def on_event(self, ev: int) -> None:
        owner = self.owner
        if owner is not None:
            owner.on_up()

    def forget(self) -> None:
        self.owner = None
        self.engine.forget(self.fd, self)


class _Conn:
    """One downstream connection served by the engine."""

    __slots__ = (
        "engine",
        "proxy",
        "ctx",
        "sock",
        "fd",
        "state",
        "more",
        "hup",
        "req",
        "plan",
        "n",
        "out",
    )

    def __init__(self, engine: Engine, ctx: _Ctx) -> None:
        self.engine = engine
        self.proxy = engine.proxy
        self.ctx = ctx
        self.sock = ctx.down.sock
        self.fd = self.sock.fileno()
        self.state = READ
        self.more = True  # the socket may hold unread bytes
        self.hup = False  # the peer's FIN (or an error) was reported: read until EOF/EAGAIN
        self.req: RequestHead | None = None
        self.plan: _Plan | None = None
        self.n = 0
        self.out: memoryview | None = None

    def wait_client(self) -> None:
        self.ctx.down.deadline = _now() + self.proxy.limits.client_idle_ms / 1000

    # -- events ----------------------------------------------------------------------------

    def on_down(self, ev: int) -> None:
        state = self.state
        self.more = True
        if ev & _HUP:
            self.hup = True
        if state == READ:
            self.run()
        elif state == WRITE and ev & _OUT:
            self.flush()

    def run(self) -> None:
        """Serve what is buffered, reading while the socket may hold more."""
        ctx = self.ctx
        reader = ctx.reader
        budget = self.proxy.limits.fairness_every
        while self.state == READ:
            if reader.pos < len(reader.events):
                ev = reader.events[reader.pos]
                reader.pos += 1
                if type(ev) is not RequestHead:
                    continue  # leftovers of a message whose exchange already gave up on it
                budget -= 1
                if budget < 0:
                    reader.pos -= 1
                    self.engine.ready.append(self)
                    return
                ctx.down.deadline = INF
                self.start(ev)
                continue
            if not self.more:
                self.wait_client()
                return
            mv = ctx.mv
            try:
                n = self.sock.recv_into(mv)
            except BlockingIOError:
                self.more = False
                continue
            except OSError:
                self.close()
                return
            if n == 0:
                self.close()
                return
            self.more = n == len(mv) or self.hup
            ctx.bytes_in += n
            try:
                reader.feed(mv[:n])
            except HeaderLimitError:
                self.hand_over(
                    lambda: self.proxy._reply_error(ctx, None, "headers_too_large", "", keep=False)
                )
                return
            except ParseError as e:
                self.hand_over(
                    partial(
                        self.proxy._reply_error, ctx, None, "bad_request", "", str(e), keep=False
                    )
                )
                return

    def start(self, req: RequestHead) -> None:
        proxy = self.proxy
        ctx = self.ctx
        plan = proxy._fast_plan(ctx, req)
        if plan is None:
            self.hand_over(lambda: proxy._exchange(ctx, req))
            return
        if plan.up is None:
            self.hand_over(lambda: proxy._fast_general(ctx, req, plan))
            return
        up = plan.up
        head = proxy._fast_commit(ctx, req, plan)
        self.req = req
        self.plan = plan
        try:
            reg = self.engine.track_upstream(up)
            sent = up.io.sock.send(head)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except (OSError, ValueError):
            self.hand_over(lambda: proxy._fast_send_failed(ctx, req, plan))
            return
        if sent != len(head):
            rest = memoryview(head)[sent:]
            self.hand_over(lambda: self._send_rest_then_resume(up, rest))
            return
        reg.owner = self
        up.io.owner = self  # type: ignore[union-attr]
        self.n = 0
        self.state = UP
        if ctx.upmv is None:
            ctx.upbuf = bytearray(proxy.limits.recv_buffer_bytes)
            ctx.upmv = memoryview(ctx.upbuf)

    async def _send_rest_then_resume(self, up: Upstream, rest: memoryview) -> bool:
        proxy = self.proxy
        req = self.req
        plan = self.plan
        assert req is not None and plan is not None
        try:
            await up.io.send_all(rest)
        except ConnLost:
            return await proxy._fast_send_failed(self.ctx, req, plan)
        return await proxy._fast_resume(self.ctx, req, plan, 0)

    def on_up(self) -> None:
        if self.state != UP:
            return
        ctx = self.ctx
        plan = self.plan
        req = self.req
        assert plan is not None and plan.up is not None and req is not None
        upmv = ctx.upmv
        assert upmv is not None
        usock = plan.up.io.sock  # type: ignore[union-attr]
        n = self.n
        while True:
            space = len(upmv) - n
            if space <= 0:
                self.resume(n)
                return
            try:
                got = usock.recv_into(upmv[n:])
            except BlockingIOError:
                self.n = n
                return  # wait for the next edge
            except (OSError, ValueError):
                got = -1
            if got <= 0:
                self.resume(n)
                return
            n += got
            out = self.proxy._fast_finish(ctx, req, plan, n)
            if out is None:
                self.resume(n)
                return
            if type(out) is int:
                # A Content-Length body still coming: read on until EAGAIN. A short read does
                # not prove the peer's FIN is not already queued behind it (same edge).
                continue
            assert type(out) is bytes
            self._reply(out)
            return

    def _reply(self, out: bytes) -> None:
        plan = self.plan
        assert plan is not None and plan.up is not None
        up = plan.up
        if up.reg is not None:
            up.reg.owner = None
        up.io.owner = None  # type: ignore[union-attr]
        self.plan = None
        self.req = None
        ctx = self.ctx
        try:
            k = self.sock.send(out)
        except BlockingIOError:
            k = 0
        except OSError:
            self.close()
            return
        ctx.bytes_out += len(out)
        if k != len(out):
            self.out = memoryview(out)[k:]
            self.state = WRITE
            ctx.down.deadline = _now() + self.proxy.limits.client_idle_ms / 1000
            return
        self.state = READ
        self.run()

    def flush(self) -> None:
        out = self.out
        assert out is not None
        try:
            k = self.sock.send(out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if k != len(out):
            self.out = out[k:]
            return
        self.out = None
        self.state = READ
        self.ctx.down.deadline = INF
        self.run()

    def resume(self, n: int) -> None:
        """The response is not the fast shape: ``_try`` continues with the bytes so far."""
        proxy = self.proxy
        ctx = self.ctx
        req = self.req
        plan = self.plan
        assert req is not None and plan is not None
        self.hand_over(lambda: proxy._fast_resume(ctx, req, plan, n))

    def on_timeout(self, io: SockIO) -> None:
        if io is self.ctx.down:
            self.close()
        elif self.state == UP:
            self.resume(self.n)

    # -- leaving the engine ----------------------------------------------------------------

    def _detach(self) -> None:
        plan = self.plan
        if plan is not None and plan.up is not None:
            if plan.up.reg is not None:
                plan.up.reg.owner = None
            plan.up.io.owner = None  # type: ignore[union-attr]
        self.ctx.down.owner = None
        self.engine.forget(self.fd, self)
        self.engine.conns.discard(self)

    def hand_over(self, first: Callable[[], Awaitable[bool]]) -> None:
        """The general task code takes the connection over, starting with ``first()``."""
        if self.state == GONE:
            return
        self._detach()
        self.state = GONE
        self.proxy._engine_handover(self.ctx, first)

    def close(self) -> None:
        if self.state == GONE:
            return
        plan = self.plan
        in_flight = self.state == UP and plan is not None and plan.up is not None
        self._detach()
        self.state = GONE
        if in_flight:
            assert plan is not None and plan.up is not None
            plan.d.breaker.inflight -= 1
            plan.st.inflight -= 1
            self.proxy._close_upstream(plan.up)
        self.proxy._close_down(self.ctx)


__all__ = ["HAVE_EPOLL", "Engine"]
