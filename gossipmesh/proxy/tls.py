"""TLS byte movers for the mesh hop: OpenSSL fed from memory, with plain-socket manners.

Theory of operation
-------------------
The proxy's fast path (engine.py, engine_conn.py, fastpath.py, tasks.py) moves bytes with a
socket's own ``recv_into``/``send`` and waits for edges of one epoll. ``TlsSocket`` gives a TLS
connection exactly those calls: OpenSSL runs as an ``ssl.SSLObject`` between two
``ssl.MemoryBIO`` objects, and the socket is read and written by us, not by OpenSSL. Why:
OpenSSL on a socket reads each record's 5-byte header and its body with two ``recv`` calls, and
a TLS socket had to be read until it would block (OpenSSL kept records epoll could not see), so
a request cost three reads where plaintext costs one (BENCHMARKS.md, issue 19). Here:

- **One read per readiness.** ``recv_into`` takes what the kernel has with one ``recv_into``
  (``READ_BYTES``, into a buffer every connection shares: its bytes are handed to the incoming
  BIO before the call returns) and decrypts every complete record into the caller's buffer. It
  returns fewer bytes than asked only when the kernel's read was short (the socket is empty: the
  next byte raises a new edge) and no complete record is left inside, so a caller treats a short
  read as a plain socket's. ``pending()`` says whether bytes wait inside (plaintext, or records
  the caller's buffer had no room for: never waited on with epoll).
- **One send per write.** ``send`` encrypts (at most ``WRITE_BYTES`` per record batch) into the
  outgoing BIO and hands the ciphertext to the kernel with one ``send``. When the kernel takes
  only part, the rest (``tail``) is kept and ``BlockingIOError`` is raised, as OpenSSL's "want
  write": the caller offers the same bytes again once the socket is writable, and that call
  sends the tail and counts the plaintext it carried. A count shorter than offered, or the
  error, means the kernel refused bytes (so an EPOLLOUT edge will come).
- **Bounds.** The incoming BIO holds at most one read (each read happens only when no complete
  record is left inside; OpenSSL moves a partial record into its own record buffer and refuses
  one longer than TLS allows), the
  plaintext inside at most one record, the outgoing side one ``WRITE_BYTES`` batch, and what
  OpenSSL writes on its own (a KeyUpdate answer, an alert) at most ``MAX_CONTROL_BYTES``.
- **Ends.** A FIN without TLS close_notify inside or after a record is an error (``SSLEOFError``),
  not an end: an on-path attacker must not be able to cut a tunnel short unnoticed; close_notify
  reads as 0 (the end) after the bytes before it. Garbage, a bad MAC or a record too long is an
  ``ssl.SSLError`` (an ``OSError``: every caller closes on it), after OpenSSL's alert is sent
  without waiting. A tunnel side that ends sends close_notify (``TlsIO.shutdown_write``).

Handshakes (``handshake``) run on a task with ``wait_readable``/``wait_writable`` on the same
socket; the socket's ``deadline_ns`` (the watchdog, deadlines.py) bounds them. Only then is a
connection handed to the engine. ``TlsIO.peer`` is the identity the handshake proved (peers.py);
``TlsIO.close`` takes the connection out of the ``PeerWatch`` that revalidates it.
"""

from __future__ import annotations

import contextlib
import socket
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

READ_BYTES = 34 * 1024  # ciphertext per kernel read: two full records (16 KiB + 22) and more
WRITE_BYTES = 32 * 1024  # plaintext encrypted per batch: the ciphertext kept for a slow reader
MAX_CONTROL_BYTES = 64 * 1024  # unsent bytes OpenSSL wrote on its own before we give up

# Every TLS read lands here first and is copied into its connection's BIO before the call
# returns (one thread: no two reads overlap), so an idle connection holds no read buffer.
_SCRATCH = memoryview(bytearray(READ_BYTES))


class TlsSocket:
    """A TLS connection over a non-blocking socket, with a socket's ``recv_into``/``send``
    (``BlockingIOError`` when it would block) and ``fileno`` for trio's waits."""

    __slots__ = ("raw", "obj", "ossl", "inb", "outb", "fileno", "tail", "tail_done", "eof")

    def __init__(
        self, ctx: ssl.SSLContext, raw: socket.socket, server_side: bool, server_name: str | None
    ) -> None:
        self.raw = raw
        self.inb = ssl.MemoryBIO()
        self.outb = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.inb, self.outb, server_side=server_side, server_hostname=server_name
        )
        # The C object under ``SSLObject`` (same read/write/pending/do_handshake calls): each
        # of ``SSLObject``'s Python wrappers costs about a thousand instructions a call, on
        # every request. Should CPython ever drop the attribute, the wrapper serves the same.
        self.ossl: Any = getattr(self.obj, "_sslobj", self.obj)
        self.fileno = raw.fileno  # the descriptor trio and the engine wait on (-1 once closed)
        self.tail: memoryview | None = None  # ciphertext the kernel has not taken yet
        self.tail_done = 0  # the plaintext count the tail finishes (what the retry returns)
        self.eof = False  # the peer's FIN or close_notify was read

    # -- reading -----------------------------------------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        ossl = self.ossl
        inb = self.inb
        want = nbytes or len(buffer)
        n = 0
        drained = False
        while True:
            if inb.pending or self.eof or ossl.pending():
                try:
                    got = ossl.read(want - n, memoryview(buffer)[n:] if n else buffer)
                except ssl.SSLWantReadError:
                    got = -1  # a partial record, or a record with nothing for the application
                except ssl.SSLError:
                    self.alert()
                    raise
                if got > 0:
                    n += got
                    if n >= want:
                        return n
                    continue
                if got == 0:
                    self.eof = True  # close_notify: every later call returns 0 at once
                    return n  # the end, after the bytes before it
                if self.eof:
                    raise ssl.SSLEOFError("EOF inside a TLS record")
            if self.outb.pending:
                self.control()  # OpenSSL answered something on its own (a KeyUpdate)
            if drained:
                break
            try:
                k = self.raw.recv_into(_SCRATCH)
            except BlockingIOError:
                break
            if k:
                inb.write(_SCRATCH[:k])
            else:
                self.eof = True
                inb.write_eof()
            drained = k < READ_BYTES
        if n:
            return n
        raise BlockingIOError

    def pending(self) -> int:
        """Bytes inside (ciphertext or plaintext), or the end already read: what no epoll edge
        will announce (a caller reads instead of waiting)."""
        return self.inb.pending or self.ossl.pending() or self.eof

    # -- writing -----------------------------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        total = 0
        if self.tail is not None:
            if not self.flush():
                raise BlockingIOError
            total = self.tail_done  # the retry of the call that made the tail
            self.tail_done = 0
        size = len(data)
        while total < size:
            if total == 0 and size <= WRITE_BYTES:
                chunk = data  # the common case: no slice
            else:
                chunk = memoryview(data)[total : total + WRITE_BYTES]
            self.ossl.write(chunk)  # into memory: always all of it
            out = self.outb.read()
            try:
                k = self.raw.send(out)
            except BlockingIOError:
                k = 0
            if k < len(out):
                self.tail = memoryview(out)[k:]
                self.tail_done = len(chunk)
                if total:
                    return total
                raise BlockingIOError
            total += len(chunk)
        return total

    def send_last(self, data: Any) -> None:
        """Best effort, no wait, for bytes never offered before (a GOAWAY before a close): an
        interrupted write's tail goes first, and is not taken for these bytes' retry."""
        self.tail_done = 0
        with contextlib.suppress(BlockingIOError):
            self.send(data)

    def flush(self) -> bool:
        """Hand the tail to the kernel: True when nothing is left."""
        tail = self.tail
        if tail is None:
            return True
        try:
            k = self.raw.send(tail)
        except BlockingIOError:
            return False
        if k < len(tail):
            self.tail = tail[k:]
            return False
        self.tail = None
        return True

    def control(self) -> None:
        """Queue what OpenSSL wrote by itself behind the tail and try to send it (no wait)."""
        out = self.outb.read()
        tail = self.tail
        if tail is not None:
            if len(tail) + len(out) > MAX_CONTROL_BYTES + WRITE_BYTES:
                raise ssl.SSLError("TLS control messages the peer does not read")
            self.tail = memoryview(bytes(tail) + out)
        else:
            self.tail = memoryview(out)
            self.tail_done = 0
        self.flush()

    def alert(self) -> None:
        """Best effort: OpenSSL's alert for a failed connection, one send, no wait."""
        with contextlib.suppress(OSError, ValueError):
            if self.outb.pending:
                self.raw.send(self.outb.read())

    # -- the rest of a socket's manners ------------------------------------------------------

    def do_handshake(self) -> None:
        """One non-blocking step: raises ``SSLWantReadError``/``SSLWantWriteError`` to wait."""
        if not self.flush():
            raise ssl.SSLWantWriteError
        obj = self.obj
        while True:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                if self.eof:
                    raise ssl.SSLEOFError("EOF during the TLS handshake") from None
                if not self.send_out():
                    raise ssl.SSLWantWriteError from None
                try:
                    k = self.raw.recv_into(_SCRATCH)
                except BlockingIOError:
                    raise ssl.SSLWantReadError from None
                if k:
                    self.inb.write(_SCRATCH[:k])
                else:
                    self.eof = True
                    self.inb.write_eof()
                continue
            except ssl.SSLError:
                self.alert()
                raise
            if not self.send_out():
                raise ssl.SSLWantWriteError
            return

    def send_out(self) -> bool:
        """Send what OpenSSL wrote (a handshake flight): True when the kernel took all of it.
        A flight is a few KiB; a peer that never reads it stalls into the deadline."""
        if self.outb.pending:
            out = self.outb.read()
            tail = self.tail
            self.tail = memoryview(bytes(tail) + out if tail is not None else out)
        return self.flush()

    def unwrap(self) -> None:
        """Send close_notify (best effort, no wait); reading stays possible."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        self.send_out()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.obj.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        return self.obj.selected_alpn_protocol()

    def version(self) -> str | None:
        return self.obj.version()

    def close(self) -> None:
        self.raw.close()


class HandshakeFailed(Exception):
    """The TLS handshake failed; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_PROBE = bytearray(1)


class TlsIO(SockIO):
    """A ``SockIO`` over a ``TlsSocket``: pending-aware waits, close_notify, a proven peer."""

    __slots__ = ("tls", "peer", "watch", "on_kill", "retire_ns")

    def __init__(self, sock: TlsSocket, budget: Budget | None = None) -> None:
        # A TlsSocket has the socket calls the byte movers make (fileno, recv_into, send, close).
        super().__init__(sock, budget)  # type: ignore[arg-type]
        self.tls = sock
        self.peer: Peer | None = None
        self.watch: PeerWatch | None = None
        # How PeerWatch closes this connection when its peer stops being trusted (default:
        # close it and tell its engine owner, like the watchdog does).
        self.on_kill: Callable[[], None] | None = None
        # From then on a pooled connection is not reused: a certificate on it is past the
        # middle of its life, so both ends already present newer ones (peers.py).
        self.retire_ns = 1 << 62

    async def recv_into(self, mv: memoryview, wait_first: bool = False) -> int:
        if wait_first and not self.closed and self.tls.pending():
            wait_first = False  # bytes already inside: epoll would never say so
        return await SockIO.recv_into(self, mv, wait_first)

    def send_last(self, data: bytes) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, ValueError):
                self.tls.send_last(data)

    def shutdown_write(self) -> None:
        """Half-close: send close_notify; the reading side stays open."""
        if not self.closed:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self.tls.unwrap()

    def is_stale(self) -> bool:
        """A pooled connection that received a byte or an end while idle is unusable; a TLS
        control message (nothing for the application) is not a reason to drop it."""
        if self.closed:
            return True
        sock = self.tls
        try:
            if sock.pending():
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
    sock = io.tls
    try:
        while True:
            try:
                sock.do_handshake()
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
