"""The proxy's byte movers: sockets with try-first syscalls, the stream wrapper for connectors,
and the listen/connect helpers.

Theory of operation
-------------------
The hot path never awaits when a syscall can succeed at once: ``SockIO`` tries ``send``/``recv``
first and only parks on ``wait_readable``/``wait_writable`` when the kernel says it would block.
Deadlines are not cancel scopes (measured at ~6 µs a request) but a field, ``deadline_ns`` on
the proxy's clock (clock.py), that the watchdog (deadlines.py) compares with now, closing the
socket of a request past its time. ``StreamIO`` gives any ``trio.abc.Stream`` (a ``Connector``'s,
e.g. TLS between agents) the same interface; it turns its deadline into a cancel scope on trio's
clock.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import socket
from typing import Any, Protocol

import trio

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, NS_PER_S, Clock

wait_readable = trio.lowlevel.wait_readable
wait_writable = trio.lowlevel.wait_writable


def trio_deadline(deadline_ns: int, clock: Clock) -> float:
    """``deadline_ns`` on ``clock`` as a deadline on trio's clock (a cancel scope's). The one
    place the proxy reads trio's clock itself: a cancel scope only takes trio's time, and the
    injected clock need not be trio's."""
    if deadline_ns >= NEVER_NS:
        return math.inf
    return trio.current_time() + (deadline_ns - clock.now_ns()) / NS_PER_S


class Connector(Protocol):
    """Opens the agent-to-agent hop. Implement with TLS to get mTLS between agents."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream: ...


class TcpConnector:
    """Plain TCP through trio streams: the reference ``Connector`` (the default path is faster)."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)


class ConnLost(Exception):
    """The socket failed, was closed by the peer mid-message, or was closed by the watchdog."""


class ConnectFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Byte movers


class Budget(Protocol):
    """Where open descriptors are counted (descriptors.DescriptorBudget)."""

    def opened(self) -> None: ...

    def closed(self) -> None: ...


class SockIO:
    """A non-blocking socket with try-first syscalls and a watchdog-enforced deadline.
    ``budget``: counts the descriptor from here until ``close``, whoever closes it."""

    __slots__ = ("sock", "deadline_ns", "timed_out", "closed", "owner", "budget")

    def __init__(self, sock: socket.socket, budget: Budget | None = None) -> None:
        self.sock = sock
        self.deadline_ns = NEVER_NS
        self.timed_out = False
        self.closed = False
        # The event engine's connection using this socket, told when the watchdog closes it.
        self.owner: Any = None
        self.budget = budget
        if budget is not None:
            budget.opened()

    async def recv_into(self, mv: memoryview, wait_first: bool = False) -> int:
        sock = self.sock
        try:
            if wait_first:
                if self.closed:
                    # Never wait on a closed socket: trio would keep a waiter for fd -1.
                    raise ConnLost("closed")
                await wait_readable(sock)
            while True:
                try:
                    return sock.recv_into(mv)
                except BlockingIOError:
                    await wait_readable(sock)
        except (trio.ClosedResourceError, OSError, ValueError) as e:
            # ValueError: the socket was already closed (fd -1), e.g. by the watchdog.
            raise ConnLost(str(e)) from None

    async def send_all(self, data: bytes | memoryview) -> None:
        sock = self.sock
        try:
            try:
                n = sock.send(data)
            except BlockingIOError:
                n = 0
            total = len(data)
            if n == total:
                return
            view = memoryview(data)
            while n < total:
                await wait_writable(sock)
                try:  # noqa: SIM105  (hot path: a with-block costs more than try)
                    n += sock.send(view[n:])
                except BlockingIOError:
                    pass
        except (trio.ClosedResourceError, OSError, ValueError) as e:
            # ValueError: the socket was already closed (fd -1), e.g. by the watchdog.
            raise ConnLost(str(e)) from None

    def send_last(self, data: bytes) -> None:
        """One non-blocking try at bytes never offered before (a goodbye before a close)."""
        with contextlib.suppress(OSError, ValueError):
            self.sock.send(data)

    def shutdown_write(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def is_stale(self) -> bool:
        """An idle pooled connection the peer closed (or sent junk on) must not be reused."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # EOF or unexpected bytes: either way unusable
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
            if self.budget is not None:
                self.budget.closed()


class StreamIO:
    """The same interface over any ``trio.abc.Stream`` (used for ``Connector`` hops, e.g. TLS)."""

    __slots__ = ("stream", "clock", "deadline_ns", "timed_out", "closed", "budget")

    def __init__(self, stream: trio.abc.Stream, clock: Clock, budget: Budget | None = None) -> None:
        self.stream = stream
        self.clock = clock
        self.deadline_ns = NEVER_NS
        self.timed_out = False
        self.closed = False
        self.budget = budget
        if budget is not None:
            budget.opened()

    async def recv_into(self, mv: memoryview, wait_first: bool = False) -> int:
        with trio.CancelScope(deadline=trio_deadline(self.deadline_ns, self.clock)) as cs:
            try:
                data = await self.stream.receive_some(len(mv))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise ConnLost(str(e)) from None
        if cs.cancelled_caught:
            self.timed_out = True
            self.close()
            raise ConnLost("timed out")
        n = len(data)
        mv[:n] = data
        return n

    async def send_all(self, data: bytes | memoryview) -> None:
        with trio.CancelScope(deadline=trio_deadline(self.deadline_ns, self.clock)) as cs:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise ConnLost(str(e)) from None
        if cs.cancelled_caught:
            self.timed_out = True
            self.close()
            raise ConnLost("timed out")

    def shutdown_write(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is not None:
            # Half-close where the stream supports it; best effort, like SHUT_WR.
            trio.lowlevel.spawn_system_task(_quietly, send_eof)

    def is_stale(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # aclose() may need to await (TLS close_notify); hand it to a system task.
            trio.lowlevel.spawn_system_task(_quietly, self.stream.aclose)
            if self.budget is not None:
                self.budget.closed()


async def _quietly(fn: object) -> None:
    with contextlib.suppress(Exception):
        await fn()  # type: ignore[operator]


IO = SockIO | StreamIO


def listen_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Several worker processes bind the same port; the kernel spreads connections.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(1024)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


class Watch(Protocol):
    """Where a socket's deadline is enforced (deadlines.Deadlines)."""

    clock: Clock

    def add(self, io: SockIO) -> None: ...

    def discard(self, io: SockIO) -> None: ...


async def connect_raw(host: str, port: int, connect_ms: int, watch: Watch) -> socket.socket:
    try:
        ipaddress.ip_address(host)
        addr: tuple[str, int] = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    except ValueError:
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ConnectFailed(f"{host}:{port}: {e}") from None
        if not infos:
            raise ConnectFailed(f"{host}:{port}: no address") from None
        family, _, _, _, sockaddr = infos[0]
        addr = (str(sockaddr[0]), int(sockaddr[1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            # The connect timeout rides the watchdog like every other deadline.
            guard = SockIO(sock)
            guard.deadline_ns = watch.clock.now_ns() + connect_ms * NS_PER_MS
            watch.add(guard)
            try:
                await wait_writable(sock)
            except trio.ClosedResourceError:
                raise ConnectFailed(
                    f"{host}:{port}: connect timed out after {connect_ms} ms"
                ) from None
            finally:
                watch.discard(guard)
            if guard.timed_out:
                # The watchdog closed it after the wake-up but before this task ran again.
                raise ConnectFailed(f"{host}:{port}: connect timed out after {connect_ms} ms")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise ConnectFailed(f"{host}:{port}: {errno.errorcode.get(err, err)}")
    except BaseException:
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()
        raise
    return sock
