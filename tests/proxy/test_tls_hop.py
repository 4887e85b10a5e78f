"""The inbound's TLS against clients that cut their bytes up: a ClientHello that stops half-way,
a request record sent one byte at a time, a record forged after a good handshake. Real sockets,
a real inbound (mtls_helpers), a client that is OpenSSL over memory BIOs so the test chooses
every byte it sends."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from functools import partial

import trio
from mtls_helpers import start_mtls_mesh

from gossipmesh.proxy.limits import INBOUND, ProxyLimits
from gossipmesh.proxy.mtls import Credential, make_context, sni_name


def cut_up_exchange(
    addr: tuple[str, int],
    cred: Credential,
    roots: tuple[bytes, ...],
    data: bytes,
    *,
    step: int = 1,
    tamper: bool = False,
) -> bytes:
    """A blocking client (run it in a thread): a real handshake, then ``data`` as TLS records
    sent ``step`` bytes per send (the last byte flipped with ``tamper``); returns the decrypted
    answer up to the server's close (or what came before an error)."""
    ctx = make_context(False, cred, roots, ("http/1.1",))
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname=sni_name("api"))
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outb.read())
                chunk = sock.recv(65536)
                if not chunk:
                    return b""
                inb.write(chunk)
        obj.write(data)
        wire = bytearray(outb.read())  # the Finished, then the request's record(s)
        if tamper:
            wire[-1] ^= 1
        for i in range(0, len(wire), step):
            sock.sendall(wire[i : i + step])
            time.sleep(0.0005)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return out
            if not chunk:
                return out
            inb.write(chunk)
            try:
                while True:
                    out += obj.read(65536)
            except ssl.SSLWantReadError:
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                return out


def request(mesh: object) -> bytes:
    be = mesh.backends["api"][0]  # type: ignore[attr-defined]
    return (
        "GET /name HTTP/1.1\r\nHost: api\r\n"
        f"x-gossipmesh-dest: {be.host}:{be.port}\r\nConnection: close\r\n\r\n"
    ).encode()


async def test_a_request_record_sent_byte_by_byte_is_served(nursery: trio.Nursery) -> None:
    mesh = await start_mtls_mesh(nursery)
    cred = mesh.pki.credentials("n1", ["web"]).services["web"]
    roots = (mesh.pki.ca.cert_der,)
    run = partial(cut_up_exchange, mesh.inbound, cred, roots, request(mesh), step=1)
    out = await trio.to_thread.run_sync(run)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"be1")
    assert mesh.b.metrics.tls_handshakes == {(INBOUND, "ok"): 1}


async def test_a_forged_record_after_a_good_handshake_reaches_nobody(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    cred = mesh.pki.credentials("n1", ["web"]).services["web"]
    roots = (mesh.pki.ca.cert_der,)
    for step in (1, 4096):
        run = partial(cut_up_exchange, mesh.inbound, cred, roots, request(mesh), step=step,
                      tamper=True)  # fmt: skip
        assert await trio.to_thread.run_sync(run) == b""
    assert mesh.backends["api"][0].requests == 0


async def test_a_handshake_that_stalls_is_closed_at_its_deadline_and_counted(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery, b_limits=ProxyLimits(head_timeout_ms=1500))
    cred = mesh.pki.credentials("n1", ["web"]).services["web"]
    ctx = make_context(False, cred, (mesh.pki.ca.cert_der,), ("http/1.1",))
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="api")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    s = await trio.open_tcp_stream(*mesh.inbound)
    await s.send_all(hello[: len(hello) // 2])  # then nothing
    with trio.fail_after(5):
        with contextlib.suppress(trio.BrokenResourceError):  # reset, or:
            assert await s.receive_some(100) == b""  # closed, nothing said
    await s.aclose()
    with trio.fail_after(5):
        while mesh.b.metrics.tls_handshakes.get((INBOUND, "timeout")) != 1:
            await trio.sleep(0.02)
    assert mesh.backends["api"][0].requests == 0
