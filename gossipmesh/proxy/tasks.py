"""The task path: a downstream connection served by one trio task, request after request.

Theory of operation
-------------------
One task per connection serves its requests strictly in order (so pipelining needs no extra
machinery) and does all upstream I/O for them itself: no task is spawned per request. It serves
a whole connection when the event engine is off (``Proxy(engine="tasks")`` or no epoll), and
otherwise takes over a connection the engine handed it (``first``: the exchange to start with)
and gives it back once nothing is buffered.

Each request tries the fast path's three calls (fastpath.py) with awaits where the engine would
wait for an edge, and falls back to ``Forwarder.exchange``. Sockets are try-first: where a reply
is certainly not there yet (the response right after sending, the next request right after
answering) the task parks *first* instead of making a syscall that will fail. A connection that
never has to wait (pipelined requests, all buffered) yields every ``fairness_every`` requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from gossipmesh.proxy.clock import Clock
from gossipmesh.proxy.detect import HTTP1, sniff
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.fastpath import FastPath
from gossipmesh.proxy.forward import Forwarder
from gossipmesh.proxy.http1 import HeaderLimitError, ParseError, RequestHead
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.sockio import ConnLost, wait_readable
from gossipmesh.proxy.tls import TlsIO

log = logging.getLogger("gossipmesh.proxy")

First = Callable[[], Awaitable[bool]]  # the exchange a handed-over connection starts with


class Detected(Protocol):
    """Where a connection whose first bytes may be the HTTP/2 preface goes (h2serve.H2Front)."""

    async def detected(self, conn: Downstream, first: bytes) -> bool: ...


class TaskLoop:
    __slots__ = ("limits", "clock", "downstreams", "fast", "forwarder", "adopt", "h2")

    def __init__(
        self,
        limits: ProxyLimits,
        clock: Clock,
        downstreams: Downstreams,
        fast: FastPath,
        forwarder: Forwarder,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.downstreams = downstreams
        self.fast = fast
        self.forwarder = forwarder
        # The running event engine's ``adopt``: where a handed-over connection goes back.
        self.adopt: Callable[[Downstream], None] | None = None
        # HTTP/2 on the same listeners (the Proxy sets it): a connection's first read decides.
        self.h2: Detected | None = None

    def give_back(self, conn: Downstream) -> bool:
        """Return ``conn`` to the engine if one runs and nothing is buffered; True if it did."""
        adopt = self.adopt
        if adopt is None or conn.reader.pending() or conn.io.closed:
            return False
        adopt(conn)
        return True

    async def serve(self, conn: Downstream, first: First | None = None) -> None:
        """Serve ``conn``: the whole connection, or from ``first()`` on for one the engine
        handed over (then it goes back to the engine once nothing is buffered)."""
        down = conn.io
        reader = conn.reader
        mv = conn.mv
        fairness = self.limits.fairness_every
        downstreams = self.downstreams
        reply_error = downstreams.reply_error
        served = 0
        wait_first = False
        handed_back = False
        try:
            if first is not None:
                kept = await first()
                conn.release_buffer()
                if not kept:
                    return
                wait_first = True
                if self.give_back(conn):
                    handed_back = True
                    return
            while True:
                if not reader.pending():
                    downstreams.await_request(conn, self.clock.now_ns())
                    n = await down.recv_into(mv, wait_first)
                    if n == 0:
                        break
                    conn.bytes_in += n
                    h2 = self.h2
                    # "P" of a first read: the HTTP/2 preface, perhaps (detect.py).
                    if conn.bytes_in == n and mv[0] == 0x50 and h2 and sniff(mv[:n]) != HTTP1:
                        if not await h2.detected(conn, bytes(mv[:n])):
                            break
                        continue
                    try:
                        reader.feed(mv[:n])
                    except HeaderLimitError:
                        await reply_error(conn, None, "headers_too_large", keep=False)
                        break
                    except ParseError as e:
                        await reply_error(conn, None, "bad_request", "", str(e), keep=False)
                        break
                    continue
                ev = reader.pop()
                if type(ev) is not RequestHead:
                    continue  # leftovers of a message whose exchange already gave up on it
                Downstreams.started(conn)
                keep = await self.fast_exchange(conn, ev)
                if keep is None:
                    keep = await self.forwarder.exchange(conn, ev)
                conn.release_buffer()
                if not keep:
                    break
                served += 1
                wait_first = True
                if first is not None and self.give_back(conn):
                    handed_back = True
                    return
                if served % fairness == 0:
                    await trio.lowlevel.checkpoint()
        except ConnLost:
            pass
        except Exception:
            log.exception("proxy %s connection from %s failed", conn.direction, conn.addr)
        finally:
            if not handed_back:
                self.downstreams.close(conn)

    async def fast_exchange(self, conn: Downstream, req: RequestHead) -> bool | None:
        """The fast path with awaits: None if ``req`` is not its shape (nothing was done)."""
        fast = self.fast
        forwarder = self.forwarder
        x = fast.plan(conn, req)
        if x is None:
            return None
        up = x.up
        if up is None:
            return await forwarder.general(conn, x)
        head = fast.commit(conn, x)
        io = up.io
        usock = io.sock  # type: ignore[union-attr]
        try:
            try:
                sent = usock.send(head)
            except BlockingIOError:
                sent = 0
            if sent != len(head):
                await io.send_all(memoryview(head)[sent:])
        except (OSError, ConnLost):
            return await forwarder.send_failed(conn, x)
        upmv = conn.upstream_buffer(self.limits.recv_buffer_bytes)
        try:
            if type(io) is not TlsIO or not usock.pending():  # type: ignore[union-attr]
                await wait_readable(usock)
            n = usock.recv_into(upmv)
        except (OSError, trio.ClosedResourceError, ValueError):
            n = -1  # BlockingIOError included: Relay.response_head waits again
        if n > 0:
            out = fast.finish(conn, x, n)
            if type(out) is int:
                # The body is still coming (the upstream sent head and body apart): wait for
                # the rest while it fits the buffer. A failure resumes with what arrived.
                try:
                    while n < out:
                        if type(io) is not TlsIO or not usock.pending():  # type: ignore[union-attr]
                            await wait_readable(usock)
                        got = usock.recv_into(upmv[n:])
                        if got == 0:
                            break
                        n += got
                except (OSError, trio.ClosedResourceError, ValueError):
                    pass
                out = fast.finish(conn, x, n)
            if type(out) is bytes:
                down = conn.io
                try:
                    try:
                        k = down.sock.send(out)
                    except BlockingIOError:
                        k = 0
                    if k != len(out):
                        await down.send_all(memoryview(out)[k:])
                except (OSError, ConnLost):
                    return False
                conn.bytes_out += len(out)
                return True
        return await forwarder.resume(conn, x, n)


__all__ = ["First", "TaskLoop"]
