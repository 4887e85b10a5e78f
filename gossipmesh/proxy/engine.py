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

Each downstream connection is a state machine of its own (engine_conn.py: ``Conn``), whose
decisions are the fast path's (fastpath.py: ``plan`` / ``commit`` / ``finish``), the same calls
the task path makes. This file is the loop and the registrations: listeners, connections, and
pooled upstreams (``UpReg``, which wakes the connection waiting on it).

Anything outside that shape goes to the task path (``TaskLoop.serve``): the connection is
unregistered first, then a task runs ``Forwarder.exchange`` / ``general`` / ``send_failed`` /
``resume`` or ``Downstreams.reply_error`` with the bytes already read, exactly as the task path
would. So errors, retries, 502/503/504 and ejection stay in one place. When that exchange ends
with the connection kept and nothing buffered, the task hands the connection back (``adopt``).

Timeouts ride the watchdog (deadlines.py): every socket keeps its ``deadline_ns``; a socket the
engine owns carries ``owner`` and the watchdog calls ``owner.on_timeout`` after closing it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections.abc import Awaitable, Callable

import trio

from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.engine_conn import READ, Conn
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.forward import Forwarder
from gossipmesh.proxy.tasks import First, TaskLoop
from gossipmesh.proxy.tls import TlsIO
from gossipmesh.proxy.upstream import Upstream, Upstreams

log = logging.getLogger("gossipmesh.proxy")

HAVE_EPOLL = hasattr(select, "epoll") and hasattr(select, "EPOLLET")
MAX_EVENTS = 128
ACCEPT_BATCH = 64
if HAVE_EPOLL:
    MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    LISTEN_MASK = select.EPOLLIN | select.EPOLLET
    READ_MASK = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    READ_WAIT = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
else:  # pragma: no cover - the proxy falls back to the task path
    MASK = LISTEN_MASK = READ_MASK = READ_WAIT = 0


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

    def add_listener(
        self,
        lsock: socket.socket,
        direction: str,
        caller: str = "",
        handshake: Handshake | None = None,
    ) -> None:
        """Accept on ``lsock``; ``caller``: the identity its requests present on the mesh hop;
        ``handshake``: a task that takes each accepted connection over once it has sent its
        first byte (mTLS, handshakes.py: ``Handshakes.greet``)."""
        acc = Acceptor(self, lsock, direction, caller, handshake)
        self.handlers[lsock.fileno()] = acc.on_event
        self.ep.register(lsock.fileno(), LISTEN_MASK)

    def accept(self, sock: socket.socket, addr: object, direction: str, caller: str = "") -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.downstreams.open(sock, addr, direction)
        conn.caller = caller
        try:
            self.adopt(conn)
        except (OSError, ValueError):
            self.downstreams.close(conn)

    def greet(
        self, sock: socket.socket, addr: object, direction: str, handshake: Handshake
    ) -> None:
        """Count ``sock`` and wait for its first byte here, without a task (a bare connection
        then costs a few small objects, not a task and its frames); ``handshake`` takes it over
        then. Its head deadline runs from now."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.downstreams.open(sock, addr, direction)
        g = Greeting(self, conn, handshake)
        try:
            self.handlers[g.fd] = g.on_event
            conn.io.owner = g
            self.ep.register(g.fd, READ_WAIT)  # a byte already there raises the first event
        except (OSError, ValueError):
            self.handlers.pop(g.fd, None)
            conn.io.owner = None
            self.downstreams.close(conn)

    def adopt(self, conn: Downstream) -> None:
        """Serve ``conn`` from now on (a new one, or one handed back by a task)."""
        c = Conn(self, conn)
        self.conns.add(c)
        fd = c.fd
        self.handlers[fd] = c.on_down
        conn.io.owner = c
        # Registering reports the current readiness: bytes already there raise the first event.
        self.ep.register(fd, MASK)
        c.wait_client(self.clock.now_ns())
        if c.tls and c.sock.pending():  # type: ignore[attr-defined]
            self.ready.append(c)  # plaintext inside OpenSSL raises no event: run it next turn

    def hand_over(self, conn: Downstream, first: First) -> None:
        """The task path takes ``conn`` over, starting with ``first()``."""
        self.nursery.start_soon(self.tasks.serve, conn, first)

    def track_upstream(self, up: Upstream) -> UpReg:
        reg = up.reg
        if reg is None:
            fd = up.io.sock.fileno()  # type: ignore[union-attr]
            reg = UpReg(self, fd, up)
            up.reg = reg
            self.handlers[fd] = reg.on_event
            try:
                self.ep.register(fd, MASK)
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
            for h in list(handlers.values()):
                greeting = getattr(h, "__self__", None)
                if isinstance(greeting, Greeting):
                    self.downstreams.close(greeting.conn)
            ep.close()


Handshake = Callable[[Downstream], Awaitable[None]]


class Acceptor:
    __slots__ = ("engine", "lsock", "direction", "caller", "handshake")

    def __init__(
        self,
        engine: Engine,
        lsock: socket.socket,
        direction: str,
        caller: str = "",
        handshake: Handshake | None = None,
    ) -> None:
        self.engine = engine
        self.lsock = lsock
        self.direction = direction
        self.caller = caller
        self.handshake = handshake

    def on_event(self, ev: int) -> None:
        engine = self.engine
        admit = engine.downstreams.admit
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
            refused = admit(self.direction)
            if refused is not None:
                Downstreams.refuse(sock, refused, http=self.handshake is None)
                continue
            if self.handshake is not None:
                engine.greet(sock, addr, self.direction, self.handshake)
                continue
            engine.accept(sock, addr, self.direction, self.caller)
        # The edge may hold more connections: come back after a checkpoint.
        engine.nursery.start_soon(self.later)

    async def later(self) -> None:
        await trio.lowlevel.checkpoint()
        self.on_event(0)


class Greeting:
    """An accepted connection that has not spoken yet: registered for readability only."""

    __slots__ = ("engine", "conn", "fd", "handshake")

    def __init__(self, engine: Engine, conn: Downstream, handshake: Handshake) -> None:
        self.engine = engine
        self.conn = conn
        self.fd = conn.io.sock.fileno()
        self.handshake = handshake

    def on_event(self, ev: int) -> None:
        """A byte (or the end) arrived: the handshake's task takes the connection over."""
        self.engine.forget(self.fd, self)
        self.conn.io.owner = None
        self.engine.nursery.start_soon(self.handshake, self.conn)

    def on_timeout(self, io: object) -> None:
        """Silent until its head deadline: the watchdog closed it."""
        self.engine.forget(self.fd, self)
        self.engine.downstreams.close(self.conn)


class UpReg:
    """A pooled upstream registered once; ``owner`` is the connection waiting on it, if any.

    An idle pooled connection that becomes readable received bytes nobody asked for (a response
    past the one its exchange ended with, or the peer's FIN): it is closed at once, so no later
    request can read them as its own answer."""

    __slots__ = ("engine", "fd", "owner", "up")

    def __init__(self, engine: Engine, fd: int, up: Upstream) -> None:
        self.engine = engine
        self.fd = fd
        self.owner: Conn | None = None
        self.up = up

    def on_event(self, ev: int) -> None:
        owner = self.owner
        if owner is not None:
            owner.on_up()
        elif (
            ev & READ_MASK
            and self.up.idle
            and (type(self.up.io) is not TlsIO or self.up.io.is_stale())
        ):
            self.engine.upstreams.close(self.up)

    def forget(self) -> None:
        self.owner = None
        self.engine.forget(self.fd, self)


__all__ = ["HAVE_EPOLL", "Engine"]
