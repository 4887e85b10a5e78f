"""One downstream connection served by the event engine: its state machine.

Theory of operation
-------------------
A connection is READ (parsing requests), UP (its request went to a pooled upstream; waiting for
the response), WRITE (the response did not fit the socket buffer in one send) or GONE (closed, or
handed to the task path). Each event runs it as plain calls: ``on_down`` (the client socket),
``on_up`` (its upstream), ``on_timeout`` (the watchdog). Edge-triggered reads follow nginx: a
receive shorter than the buffer emptied the socket (the next byte raises a new edge); a full one
may have left bytes behind, so the connection reads again before it waits. At most
``fairness_every`` requests run per turn; the rest wait for the engine's next turn (``ready``).

Anything outside the fast path's shape is handed over (``hand_over``): the connection leaves the
engine and a task goes on from exactly where it stopped (``Forwarder.exchange`` / ``general`` /
``send_failed`` / ``resume``, or ``Downstreams.reply_error``).

The clock is read when a request starts and when its response is relayed (fastpath.py); the idle
deadline after a response reuses the second reading, and a fresh one is taken only when bytes of
a next request arrived without completing it.
"""

from __future__ import annotations

import select
from functools import partial
from typing import Protocol

from gossipmesh.proxy.clock import NEVER_NS, Clock
from gossipmesh.proxy.detect import HTTP1, sniff
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.forward import Forwarder
from gossipmesh.proxy.http1 import HeaderLimitError, ParseError, RequestHead
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.pipeline import Exchange
from gossipmesh.proxy.sockio import ConnLost, SockIO
from gossipmesh.proxy.tasks import First, TaskLoop
from gossipmesh.proxy.tls import TlsIO
from gossipmesh.proxy.upstream import Registration, Upstream, Upstreams

EV_OUT = getattr(select, "EPOLLOUT", 0)
EV_HUP = (
    getattr(select, "EPOLLRDHUP", 0)
    | getattr(select, "EPOLLHUP", 0)
    | getattr(select, "EPOLLERR", 0)
)

READ, UP, WRITE, GONE = range(4)
started = Downstreams.started


class Loop(Protocol):
    """What a connection needs from the engine that serves it (engine.Engine)."""

    limits: ProxyLimits
    clock: Clock
    fast: FastPath
    forwarder: Forwarder
    downstreams: Downstreams
    upstreams: Upstreams
    ready: list[Conn]
    conns: set[Conn]
    tasks: TaskLoop

    def track_upstream(self, up: Upstream) -> Registration: ...

    def forget(self, fd: int, handler: object) -> None: ...

    def hand_over(self, conn: Downstream, first: First) -> None: ...


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
        "tls",
        "full",
    )

    def __init__(self, engine: Loop, conn: Downstream) -> None:
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
        # ``full``: a read this long may have left bytes behind. A TLS socket keeps the same
        # promise (a short read emptied the socket and left no record inside, tls.py);
        # ``tls``: bytes may wait inside it when it is adopted.
        self.tls = type(conn.io) is TlsIO
        self.full = len(conn.mv)

    def wait_client(self, now_ns: int) -> None:
        self.last_ns = now_ns
        self.engine.downstreams.await_request(self.conn, now_ns)

    # -- events ----------------------------------------------------------------------------

    def on_down(self, ev: int) -> None:
        state = self.state
        self.more = True
        if ev & EV_HUP:
            self.hup = True
        if state == READ:
            self.run()
        elif state == WRITE and ev & EV_OUT:
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
                started(conn)
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
            self.more = n >= self.full or self.hup
            self.fed = True
            conn.bytes_in += n
            if conn.bytes_in == n and mv[0] == 0x50:  # "P": the HTTP/2 preface, perhaps
                h2 = self.engine.tasks.h2
                if h2 is not None and sniff(mv[:n]) != HTTP1:
                    self.hand_over(partial(h2.detected, conn, bytes(mv[:n])))
                    return
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
        self.conn.release_buffer()  # ``out`` holds its own copy
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


__all__ = ["GONE", "READ", "UP", "WRITE", "Conn", "Loop"]
