"""TLS byte movers for the mesh hop: a non-blocking TLS socket with plain-socket manners.

Theory of operation
-------------------
The proxy's fast path (engine.py, engine_conn.py, fastpath.py, tasks.py) moves bytes with a
socket's own ``recv_into``/``send`` and waits for edges of one epoll. ``TlsSocket`` is an
``ssl.SSLSocket`` (OpenSSL does the record layer in C, on the socket's descriptor) whose
"want read"/"want write" answers are raised as ``BlockingIOError``, which is what every caller
already handles; so a TLS connection rides the same engine as a plain one. Two differences
remain and are handled where they matter:

- **Buffered plaintext.** OpenSSL reads a whole record; a caller whose buffer is smaller than
  the record leaves the rest inside the SSL object, where epoll cannot see it. So a reader of a
  TLS socket reads until ``BlockingIOError`` (never stops at a short read: engine_conn.py), and
  nothing parks on ``wait_readable`` while ``pending()`` says bytes are buffered (``TlsIO``).
- **Retried writes.** After "want write" OpenSSL needs the same bytes again; callers already
  resend from the same offset (a ``BlockingIOError`` sent nothing).

Handshakes (``handshake``) run on a task with ``wait_readable``/``wait_writable``; the socket's
``deadline_ns`` (the watchdog, deadlines.py) bounds them. Only then is a connection handed to
the engine. ``TlsIO.peer`` is the identity the handshake proved (peers.py); ``TlsIO.close``
takes the connection out of the ``PeerWatch`` that revalidates it.

A ragged EOF (a FIN without TLS close_notify) is an error, not an end (``suppress_ragged_eofs
=False``): an on-path attacker must not be able to cut a tunnel short unnoticed. A tunnel side
that ends sends close_notify (``shutdown_write``), which the other side reads as EOF.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.proxy.sockio import Budget, SockIO, wait_readable, wait_writable

if TYPE_CHECKING:
    from gossipmesh.proxy.peers import Peer, PeerWatch

ALPN_HTTP = "http/1.1"
ALPN_H2 = "h2"  # many requests at once, as HTTP/2 streams (h2link.py)
ALPN_TUNNEL = "gossipmesh-tunnel/1"  # a CONNECT head, then raw bytes (TCP services)
ALPN_PROTOCOLS = (ALPN_H2, ALPN_HTTP, ALPN_TUNNEL)  # the server prefers h2 when offered

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsSocket(ssl.SSLSocket):
    """``SSLSocket`` that raises ``BlockingIOError`` where OpenSSL wants to read or write."""

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except _WANT:
            raise BlockingIOError from None

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except _WANT:
            raise BlockingIOError from None


class HandshakeFailed(Exception):
    """The TLS handshake failed; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_PROBE = bytearray(1)


class TlsIO(SockIO):
    """A ``SockIO`` over a ``TlsSocket``: pending-aware waits, close_notify, a proven peer."""

    __slots__ = ("peer", "watch", "on_kill", "retire_ns")

    def __init__(self, sock: ssl.SSLSocket, budget: Budget | None = None) -> None:
        super().__init__(sock, budget)
        self.peer: Peer | None = None
        self.watch: PeerWatch | None = None
        # How PeerWatch closes this connection when its peer stops being trusted (default:
        # close it and tell its engine owner, like the watchdog does).
        self.on_kill: Callable[[], None] | None = None
        # From then on a pooled connection is not reused: a certificate on it is past the
        # middle of its life, so both ends already present newer ones (peers.py).
        self.retire_ns = 1 << 62

    async def recv_into(self, mv: memoryview, wait_first: bool = False) -> int:
        if wait_first and not self.closed and self.sock.pending():  # type: ignore[attr-defined]
            wait_first = False  # plaintext already inside OpenSSL: epoll would never say so
        return await SockIO.recv_into(self, mv, wait_first)

    def shutdown_write(self) -> None:
        """Half-close: send close_notify; the reading side stays open."""
        if not self.closed:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self.sock.unwrap()  # type: ignore[attr-defined]

    def is_stale(self) -> bool:
        """A pooled connection that received a byte or an end while idle is unusable; a TLS
        control message (nothing for the application) is not a reason to drop it."""
        if self.closed:
            return True
        sock = self.sock
        try:
            if sock.pending():  # type: ignore[attr-defined]
                return True
            sock.recv_into(_PROBE)
            return True  # application bytes nobody asked for, or the end
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        if self.closed:
            return
        watch = self.watch
        if watch is not None:
            self.watch = None
            watch.forget(self)
        super().close()

    def kill(self) -> None:
        """Close because the peer is no longer trusted (revoked, expired): wakes whoever waits
        on it; an engine owner hears it as a timeout, which closes its connection."""
        if self.on_kill is not None:
            self.on_kill()
            return
        owner = self.owner
        self.close()
        if owner is not None:
            self.owner = None
            owner.on_timeout(self)


async def handshake(io: TlsIO) -> None:
    """Run the TLS handshake on ``io`` (non-blocking socket). Raises ``HandshakeFailed``; the
    watchdog bounds it through ``io.deadline_ns`` (closing the socket wakes the wait)."""
    sock = io.sock
    try:
        while True:
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
                return
            except ssl.SSLWantReadError:
                await wait_readable(sock)
            except ssl.SSLWantWriteError:
                await wait_writable(sock)
    except ssl.SSLError as e:
        raise HandshakeFailed("tls_error", str(e.reason or e)[:120]) from None
    except trio.ClosedResourceError:
        raise HandshakeFailed("timeout" if io.timed_out else "closed") from None
    except (OSError, ValueError) as e:
        raise HandshakeFailed("closed" if io.closed else "socket_error", str(e)[:120]) from None


__all__ = [
    "ALPN_H2",
    "ALPN_HTTP",
    "ALPN_PROTOCOLS",
    "ALPN_TUNNEL",
    "HandshakeFailed",
    "TlsIO",
    "TlsSocket",
    "handshake",
]
