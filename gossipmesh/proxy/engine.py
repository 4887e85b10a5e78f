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

A downstream connection (``Conn``) is READ (parsing requests), UP (its request went to a pooled
upstream; waiting for the response) or WRITE (the response did not fit the socket buffer in one
send). The decisions are the fast path's (fastpath.py: ``plan`` / ``commit`` / ``finish``), the
same calls the task path makes. Edge-triggered reads follow nginx: a receive shorter than the
buffer emptied the socket (the next byte raises a new edge); a full one may have left bytes
behind, so the connection reads again before it waits.

Anything outside that shape goes to the task path (``TaskLoop.serve``): the connection is
unregistered first, then a task runs ``Forwarder.exchange`` / ``general`` / ``send_failed`` /
``resume`` or ``Downstreams.reply_error`` with the bytes already read, exactly as the task path
would. So errors, retries, 502/503/504 and ejection stay in one place. When that exchange ends
with the connection kept and nothing buffered, the task hands the connection back (``adopt``).

Timeouts ride the watchdog (deadlines.py): every socket keeps its ``deadline_ns``; a socket the
engine owns carries ``owner`` and the watchdog calls ``owner.on_timeout`` after closing it (the
client's idle timeout closes the connection; an upstream's per-try timeout resumes the general
path, which answers 504 or retries). The clock is read when a request starts and when its
response is relayed (fastpath.py); the idle deadline after a response reuses the second reading,
and a fresh one is taken only when bytes of a next request arrived without completing it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections.abc import Callable
from functools import partial

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.forward import Forwarder
from gossipmesh.proxy.http1 import HeaderLimitError, ParseError, RequestHead
from gossipmesh.proxy.pipeline import Exchange
from gossipmesh.proxy.sockio import ConnLost, SockIO
from gossipmesh.proxy.tasks import First, TaskLoop
from gossipmesh.proxy.upstream import Upstream, Upstreams

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
    __slots__ = (
        "fast",
        "forwarder",
        "downstreams",
        "upstreams",
        "tasks",
        "clock",
        "limits",
        "nursery",
        "ep",
        "handlers",
        "ready",
        "wake",
        "conns",
    )

    def __init__(
        self,
        fast: FastPath,
        forwarder: Forwarder,
        downstreams: Downstreams,
        upstreams: Upstreams,
        tasks: TaskLoop,
        nursery: trio.Nursery,
    ) -> None:
        self.fast = fast
        self.forwarder = forwarder
        self.downstreams = downstreams
        self.upstreams = upstreams
        self.tasks = tasks
        self.clock = fast.clock
        self.limits = tasks.limits
        self.nursery = nursery
        self.ep = select.epoll()
        # fd -> callable(events): a listener, a downstream connection or an upstream.
        self.handlers: dict[int, Callable[[int], None]] = {}
        # Connections with work left over from a batch (fairness), run at the next turn.
        self.ready: list[Conn] = []
        self.conns: set[Conn] = set()  # the connections the engine serves right now
        self.wake = False

    # -- registration ----------------------------------------------------------------------

    def add_listener(self, lsock: socket.socket, direction: str) -> None:
        acc = Acceptor(self, lsock, direction)
        self.handlers[lsock.fileno()] = acc.on_event
        self.ep.register(lsock.fileno(), _LISTEN_MASK)

    def accept(self, sock: socket.socket, addr: object, direction: str) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.downstreams.open(sock, addr, direction)
        try:
            self.adopt(conn)
        except (OSError, ValueError):
            self.downstreams.close(conn)

    def adopt(self, conn: Downstream) -> None:
        """Serve ``conn`` from now on (a new one, or one handed back by a task)."""
        c = Conn(self, conn)
        self.conns.add(c)
        fd = c.fd
        self.handlers[fd] = c.on_down
        conn.io.owner = c
        # Registering reports the current readiness: bytes already there raise the first event.
        self.ep.register(fd, _MASK)
        c.wait_client(self.clock.now_ns())

    def hand_over(self, conn: Downstream, first: First) -> None:
        """The task path takes ``conn`` over, starting with ``first()``."""
        self.nursery.start_soon(self.tasks.serve, conn, first)

    def track_upstream(self, up: Upstream) -> UpReg:
        reg = up.reg
        if reg is None:
            fd = up.io.sock.fileno()  # type: ignore[union-attr]
            reg = UpReg(self, fd)
            up.reg = reg
            self.handlers[fd] = reg.on_event
            try:
                self.ep.register(fd, _MASK)
            except OSError:
                self.handlers.pop(fd, None)
                up.reg = None
                raise
        assert isinstance(reg, UpReg)
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
                if self.ready or self.wake:
                    self.wake = False
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
                            if isinstance(owner, Conn):
                                owner.close()
                if len(events) == MAX_EVENTS:
                    self.wake = True  # more may be ready: take them after a checkpoint
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


class Acceptor:
    __slots__ = ("engine", "lsock", "direction")

    def __init__(self, engine: Engine, lsock: socket.socket, direction: str) -> None:
        self.engine = engine
        self.lsock = lsock
        self.direction = direction

    def on_event(self, ev: int) -> None:
        engine = self.engine
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                # EMFILE and friends: try again at the next turn rather than spin.
                log.warning("accept on %s failed: %s", self.direction, e)
                engine.nursery.start_soon(self.later)
                return
            engine.accept(sock, addr, self.direction)
        # The edge may hold more connections: come back after a checkpoint.
        engine.nursery.start_soon(self.later)

    async def later(self) -> None:
        await trio.lowlevel.checkpoint()
        self.on_event(0)


class UpReg:
    """A pooled upstream registered once; ``owner`` is the connection waiting on it, if any."""

    __slots__ = ("engine", "fd", "owner")

    def __init__(self, engine: Engine, fd: int) -> None:
        self.engine = engine
        self.fd = fd
        self.owner: Conn | None = None

    def on_event(self, ev: int) -> None:
        owner = self.owner
        if owner is not None:
            owner.on_up()

    def forget(self) -> None:
        self.owner = None
        self.engine.forget(self.fd, self)


class Conn:
    """One downstream connection served by the engine."""

    __slots__ = (
        "engine",
        "conn",
        "sock",
        "fd",
        "state",
        "more",
        "hup",
        "fed",
        "last_ns",
        "x",
        "n",
        "out",
    )

    def __init__(self, engine: Engine, conn: Downstream) -> None:
        self.engine = engine
        self.conn = conn
        self.sock = conn.io.sock
        self.fd = self.sock.fileno()
        self.state = READ
        self.more = True  # the socket may hold unread bytes
        self.hup = False  # the peer's FIN (or an error) was reported: read until EOF/EAGAIN
        self.fed = False  # bytes arrived since the last request started
        self.last_ns = 0  # the last clock reading for this connection
        self.x: Exchange | None = None  # the exchange waiting for its upstream
        self.n = 0  # response bytes received for it so far
        self.out: memoryview | None = None  # response bytes the client socket did not take yet

    def wait_client(self, now_ns: int) -> None:
        self.last_ns = now_ns
        self.conn.io.deadline_ns = now_ns + self.engine.limits.client_idle_ms * NS_PER_MS

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
        conn = self.conn
        reader = conn.reader
        budget = self.engine.limits.fairness_every
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
                conn.io.deadline_ns = NEVER_NS
                self.fed = False
                self.start(ev)
                continue
            if not self.more:
                # A next request begun but not complete: its idle time starts now.
                self.wait_client(self.engine.clock.now_ns() if self.fed else self.last_ns)
                return
            mv = conn.mv
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
            self.fed = True
            conn.bytes_in += n
            try:
                reader.feed(mv[:n])
            except HeaderLimitError:
                reply = self.engine.downstreams.reply_error
                self.hand_over(partial(reply, conn, None, "headers_too_large", keep=False))
                return
            except ParseError as e:
                reply = self.engine.downstreams.reply_error
                self.hand_over(partial(reply, conn, None, "bad_request", "", str(e), keep=False))
                return

    def start(self, req: RequestHead) -> None:
        engine = self.engine
        conn = self.conn
        forwarder = engine.forwarder
        x = engine.fast.plan(conn, req)
        if x is None:
            self.hand_over(partial(forwarder.exchange, conn, req))
            return
        self.last_ns = x.start_ns
        up = x.up
        if up is None:
            self.hand_over(partial(forwarder.general, conn, x))
            return
        head = engine.fast.commit(conn, x)
        self.x = x
        try:
            reg = engine.track_upstream(up)
            sent = up.io.sock.send(head)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except (OSError, ValueError):
            self.hand_over(partial(forwarder.send_failed, conn, x))
            return
        if sent != len(head):
            rest = memoryview(head)[sent:]
            self.hand_over(partial(self.send_rest_then_resume, up, rest))
            return
        reg.owner = self
        up.io.owner = self  # type: ignore[union-attr]
        self.n = 0
        self.state = UP
        conn.upstream_buffer(engine.limits.recv_buffer_bytes)

    async def send_rest_then_resume(self, up: Upstream, rest: memoryview) -> bool:
        forwarder = self.engine.forwarder
        x = self.x
        assert x is not None
        try:
            await up.io.send_all(rest)
        except ConnLost:
            return await forwarder.send_failed(self.conn, x)
        return await forwarder.resume(self.conn, x, 0)

    def on_up(self) -> None:
        if self.state != UP:
            return
        conn = self.conn
        x = self.x
        assert x is not None and x.up is not None
        upmv = conn.upmv
        assert upmv is not None
        usock = x.up.io.sock  # type: ignore[union-attr]
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
            out = self.engine.fast.finish(conn, x, n)
            if out is None:
                self.resume(n)
                return
            if type(out) is int:
                # A Content-Length body still coming: read on until EAGAIN. A short read does
                # not prove the peer's FIN is not already queued behind it (same edge).
                continue
            assert type(out) is bytes
            self.reply(out)
            return

    def reply(self, out: bytes) -> None:
        x = self.x
        assert x is not None and x.up is not None
        up = x.up
        if up.reg is not None:
            up.reg.owner = None
        up.io.owner = None  # type: ignore[union-attr]
        self.x = None
        self.last_ns = x.end_ns
        conn = self.conn
        try:
            k = self.sock.send(out)
        except BlockingIOError:
            k = 0
        except OSError:
            self.close()
            return
        conn.bytes_out += len(out)
        if k != len(out):
            self.out = memoryview(out)[k:]
            self.state = WRITE
            self.wait_client(x.end_ns)
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
        self.conn.io.deadline_ns = NEVER_NS
        self.run()

    def resume(self, n: int) -> None:
        """The response is not the fast shape: the general path goes on with the bytes so far."""
        x = self.x
        assert x is not None
        self.hand_over(partial(self.engine.forwarder.resume, self.conn, x, n))

    def on_timeout(self, io: SockIO) -> None:
        if io is self.conn.io:
            self.close()
        elif self.state == UP:
            self.resume(self.n)

    # -- leaving the engine ----------------------------------------------------------------

    def detach(self) -> None:
        x = self.x
        if x is not None and x.up is not None:
            if x.up.reg is not None:
                x.up.reg.owner = None
            x.up.io.owner = None  # type: ignore[union-attr]
        self.conn.io.owner = None
        self.engine.forget(self.fd, self)
        self.engine.conns.discard(self)

    def hand_over(self, first: First) -> None:
        """The task path takes the connection over, starting with ``first()``."""
        if self.state == GONE:
            return
        self.detach()
        self.state = GONE
        self.engine.hand_over(self.conn, first)

    def close(self) -> None:
        if self.state == GONE:
            return
        x = self.x
        in_flight = self.state == UP and x is not None and x.up is not None
        self.detach()
        self.state = GONE
        if in_flight:
            assert x is not None and x.up is not None
            FastPath.undo_commit(x)
            self.engine.upstreams.close(x.up)
        self.engine.downstreams.close(self.conn)


__all__ = ["HAVE_EPOLL", "Engine"]
