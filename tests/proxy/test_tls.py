"""The mesh hop's TLS socket (``TlsSocket``: OpenSSL between memory BIOs, read and written by us)
against a peer that sends exactly the bytes a test chooses: whole records, records cut anywhere,
garbage, a FIN in the middle. The peer is OpenSSL too (an ``SSLObject``), on the other end of a
socket pair, so every byte it sends is real TLS unless the test forges it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from typing import Any

import pytest
from mtls_helpers import Pki, Wall

from gossipmesh.proxy.mtls import make_context
from gossipmesh.proxy.tls import ALPN_HTTP, ALPN_PROTOCOLS, READ_BYTES, WRITE_BYTES, TlsSocket


class Counting:
    """A socket whose calls are counted: the syscalls ``TlsSocket`` makes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0
        self.sends = 0

    def recv_into(self, buf: Any, nbytes: int = 0) -> int:
        self.reads += 1
        return self.sock.recv_into(buf, nbytes)

    def send(self, data: Any) -> int:
        self.sends += 1
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class Peer:
    """The other end: OpenSSL over memory BIOs writing to a blocking socket by hand."""

    def __init__(self, ctx: ssl.SSLContext, sock: socket.socket, server_side: bool) -> None:
        self.sock = sock
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        name = None if server_side else "api"
        self.obj = ctx.wrap_bio(self.inb, self.outb, server_side=server_side, server_hostname=name)

    def records(self, data: bytes) -> bytes:
        """``data`` as TLS records (not sent)."""
        self.obj.write(data)
        return self.outb.read()

    def read_all(self) -> bytes:
        """Everything the socket has now, decrypted."""
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    chunk = self.sock.recv(1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self.inb.write(chunk)
        finally:
            self.sock.setblocking(True)
        out = b""
        while True:
            try:
                out += self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                return out


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    pki = Pki(Wall())
    roots = (pki.ca.cert_der,)
    server = make_context(True, pki.credentials("n2", ["api"]).services["api"], roots,
                          ALPN_PROTOCOLS)  # fmt: skip
    client = make_context(False, pki.credentials("n1", ["web"]).services["web"], roots,
                          (ALPN_HTTP,))  # fmt: skip
    return server, client


def handshake(tls: TlsSocket, peer: Peer) -> None:
    """Drive both ends to an established connection (one thread, non-blocking ``tls``)."""
    for _ in range(50):
        done = True
        try:
            tls.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            done = False
        try:
            peer.obj.do_handshake()
        except ssl.SSLWantReadError:
            done = False
        out = peer.outb.read()
        if out:
            peer.sock.sendall(out)
        peer.sock.setblocking(False)
        try:
            while True:
                chunk = peer.sock.recv(65536)
                if not chunk:
                    break
                peer.inb.write(chunk)
        except BlockingIOError:
            pass
        finally:
            peer.sock.setblocking(True)
        if done and not peer.outb.pending:
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture
def pair(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Any:
    """(our server side over a counting socket, the client peer, the counting socket)."""
    server_ctx, client_ctx = contexts
    a, b = socket.socketpair()
    a.setblocking(False)
    raw = Counting(a)
    tls = TlsSocket(server_ctx, raw, True, None)  # type: ignore[arg-type]
    peer = Peer(client_ctx, b, server_side=False)
    handshake(tls, peer)
    assert tls.selected_alpn_protocol() == ALPN_HTTP
    assert tls.getpeercert(True)  # the client's certificate, checked by OpenSSL
    yield tls, peer, raw
    a.close()
    b.close()


def read(tls: TlsSocket, size: int = 65536) -> bytes:
    buf = bytearray(size)
    n = tls.recv_into(buf)
    return bytes(buf[:n])


def test_a_request_is_one_read_and_a_short_read_means_the_socket_is_empty(pair: Any) -> None:
    tls, peer, raw = pair
    req = b"GET / HTTP/1.1\r\nHost: api\r\n\r\n"
    peer.sock.sendall(peer.records(req))
    raw.reads = 0
    assert read(tls) == req
    assert raw.reads == 1  # not a header read, a body read and a read until EAGAIN
    with pytest.raises(BlockingIOError):
        read(tls)
    # Two records in one kernel read come back from one call.
    peer.sock.sendall(peer.records(b"one") + peer.records(b"two"))
    raw.reads = 0
    assert read(tls) == b"onetwo" and raw.reads == 1
    assert not tls.pending()


def test_a_response_is_one_send(pair: Any) -> None:
    tls, peer, raw = pair
    raw.sends = 0
    assert tls.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi") == 40
    assert raw.sends == 1
    assert peer.read_all() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


def test_a_record_split_across_many_reads_is_returned_once_whole(pair: Any) -> None:
    tls, peer, raw = pair
    wire = peer.records(b"x" * 1000)
    for byte in wire[:-1]:
        peer.sock.sendall(bytes([byte]))
        with pytest.raises(BlockingIOError):
            read(tls)  # a partial record: nothing for the caller yet
        assert not tls.pending()  # nothing readable without more bytes from the kernel
    peer.sock.sendall(wire[-1:])
    assert read(tls) == b"x" * 1000
    assert not tls.pending()


def test_a_large_record_and_a_small_buffer_leave_the_rest_pending(pair: Any) -> None:
    tls, peer, raw = pair
    big = bytes(range(256)) * 64 * 5  # 80 KiB: five full 16 KiB records
    peer.sock.sendall(peer.records(big))
    got = b""
    raw.reads = 0
    while len(got) < len(big):
        got += read(tls, 1000)  # each call fills the buffer: the caller reads again
    assert got == big
    # The kernel was read in READ_BYTES steps, only when no whole record was left inside.
    assert raw.reads <= len(big) // READ_BYTES + 3
    assert not tls.pending()


def test_a_record_longer_than_tls_allows_is_refused(pair: Any) -> None:
    tls, peer, raw = pair
    # An application-data record header claiming 65,535 bytes (TLS allows 2^14 + 256).
    peer.sock.sendall(struct.pack("!BHH", 23, 0x0303, 0xFFFF) + b"\0" * 4000)
    with pytest.raises(ssl.SSLError):
        read(tls)
    assert tls.pending() <= READ_BYTES  # nothing was buffered waiting for the rest


def test_garbage_instead_of_a_record_is_an_error_not_data(pair: Any) -> None:
    tls, peer, raw = pair
    peer.sock.sendall(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
    with pytest.raises(ssl.SSLError):
        read(tls)


def test_a_tampered_record_fails_authentication(pair: Any) -> None:
    tls, peer, raw = pair
    wire = bytearray(peer.records(b"hello"))
    wire[-1] ^= 1
    peer.sock.sendall(bytes(wire))
    with pytest.raises(ssl.SSLError):
        read(tls)


def test_a_fin_mid_record_or_without_close_notify_is_an_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    for cut in (7, None):  # inside a record; at a record boundary
        server_ctx, client_ctx = contexts
        a, b = socket.socketpair()
        a.setblocking(False)
        tls = TlsSocket(server_ctx, a, True, None)
        peer = Peer(client_ctx, b, server_side=False)
        handshake(tls, peer)
        wire = peer.records(b"truncated?")
        b.sendall(wire[:cut] if cut else wire)
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(ssl.SSLEOFError):
            for _ in range(3):  # the data's read was short: the FIN is the next read's
                try:
                    assert read(tls) == b"truncated?"
                except BlockingIOError:
                    continue
                assert cut is None  # no plaintext of a cut record is ever returned
        a.close()
        b.close()


def test_close_notify_is_the_end_after_the_bytes_before_it(pair: Any) -> None:
    tls, peer, raw = pair
    wire = peer.records(b"last words")
    with pytest.raises(ssl.SSLWantReadError):
        peer.obj.unwrap()
    peer.sock.sendall(wire + peer.outb.read())
    assert read(tls) == b"last words"
    assert tls.pending()  # the end is inside: a caller reads instead of waiting for an edge
    assert read(tls) == b""
    assert read(tls) == b""  # and stays the end
    # Our side's close_notify reaches the peer (a tunnel's half-close).
    tls.unwrap()
    peer.inb.write(peer.sock.recv(100))
    with pytest.raises(ssl.SSLZeroReturnError):
        peer.obj.read(10)


def test_a_send_the_kernel_takes_in_part_is_retried_with_the_same_bytes(pair: Any) -> None:
    tls, peer, raw = pair
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MiB, far beyond the socket buffers
    sent = 0
    received = b""
    for _ in range(10_000):
        if sent == len(data):
            break
        with contextlib.suppress(BlockingIOError):  # nothing counted: offered again
            sent += tls.send(memoryview(data)[sent:])
        # What the kernel did not take stays inside, bounded by one batch.
        assert tls.tail is None or len(tls.tail) <= WRITE_BYTES + 1024
        received += peer.read_all()
    received += peer.read_all()
    assert sent == len(data) and received == data


def test_a_handshake_with_garbage_fails_and_answers_with_an_alert(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = contexts
    a, b = socket.socketpair()
    a.setblocking(False)
    tls = TlsSocket(server_ctx, a, True, None)
    b.sendall(b"\x16\x03\x01\x00\x05hello" + b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ssl.SSLError):
        tls.do_handshake()
    b.settimeout(2)
    assert b.recv(100)[:1] == b"\x15"  # an alert record, nothing else
    a.close()
    b.close()


def test_a_handshake_the_peer_cuts_short_is_an_eof_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    a, b = socket.socketpair()
    a.setblocking(False)
    tls = TlsSocket(server_ctx, a, True, None)
    peer = Peer(client_ctx, b, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        peer.obj.do_handshake()
    hello = peer.outb.read()
    b.sendall(hello[: len(hello) // 2])
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()  # half a ClientHello: wait for more
    b.shutdown(socket.SHUT_WR)
    with pytest.raises(ssl.SSLError):
        tls.do_handshake()
    a.close()
    b.close()


def test_a_goodbye_after_an_interrupted_write_is_not_taken_for_its_retry(pair: Any) -> None:
    tls, peer, raw = pair
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 1024
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:
            sent += tls.send(memoryview(data)[sent:])
    interrupted = tls.tail_done  # the batch whose ciphertext the kernel did not all take
    assert interrupted > 0
    # The writer is cancelled here (the link goes down); a GOAWAY is sent as a last try.
    received = peer.read_all()
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    tls.send_last(b"GOAWAY")
    received += peer.read_all()
    assert received == data[: sent + interrupted] + b"GOAWAY"
