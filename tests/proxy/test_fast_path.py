"""The inline fast path and every way out of it, through real sockets.

Each test checks the answer the client gets *and* which path served it (``Proxy.fast_served``),
so the fast path and the general one cannot drift apart unnoticed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial

import trio
from proxy_helpers import Client, pattern_bytes, service, start_mesh

from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table


async def test_keepalive_gets_take_the_fast_path_with_mesh_headers(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    c = await Client.open(mesh.outbound)
    for _ in range(5):
        r = await c.request("GET", "/name?x=1", "api", headers=[("x-custom", "v")])
        assert (r.status, r.body) == (200, b"be1")
        assert "connection" not in r.headers and "keep-alive" not in r.headers
    await c.aclose()
    # The first request opened the pooled connections; the rest were served inline, both hops.
    assert mesh.a.fast_served == 4 and mesh.b.fast_served == 4
    seen = [dict(h) for h in mesh.backends["api"][0].seen_headers]
    rids = {h[b"x-request-id"] for h in seen}
    assert len(rids) == 5
    for h in seen:
        assert h[b"x-custom"] == b"v"
        assert h[b"traceparent"].startswith(b"00-") and len(h[b"traceparent"]) == 55
        assert b"x-gossipmesh-dest" not in h and b"127.0.0.1" in h[b"x-forwarded-for"]
    assert mesh.a.metrics.requests[("api", "", "api", "b", 200, "outbound")] == 5
    assert mesh.b.metrics.requests[("api", "", "api", "local", 200, "inbound")] == 5


async def test_client_request_id_and_traceparent_kept(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    c = await Client.open(mesh.outbound)
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    for i in range(3):
        r = await c.request(
            "GET", "/name", "api", headers=[("x-request-id", f"r{i}"), ("traceparent", tp)]
        )
        assert r.status == 200
    await c.aclose()
    assert mesh.a.fast_served == 2
    seen = [dict(h) for h in mesh.backends["api"][0].seen_headers]
    assert [h[b"x-request-id"] for h in seen] == [b"r0", b"r1", b"r2"]
    for h in seen:
        parts = h[b"traceparent"].split(b"-")
        assert parts[1] == b"ab" * 16 and parts[2] != b"cd" * 8


async def test_fallbacks_chunked_expect_large_body_head_then_fast_again(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    base = mesh.a.fast_served
    # Chunked response: resumed by the general relay (re-chunked downstream).
    r = await c.request("GET", "/big?n=100000", "api")
    assert r.status == 200 and r.body == pattern_bytes(100000)
    # Expect: 100-continue: general path.
    body = b"x" * 1000
    r = await c.request("POST", "/upload", "api", headers=[("expect", "100-continue")], body=body)
    assert r.body.decode() == f"{hashlib.sha256(body).hexdigest()} {len(body)}"
    # A body larger than one receive buffer: streamed by the general path.
    big = pattern_bytes(300_000)
    r = await c.request("POST", "/upload", "api", body=big)
    assert r.body.decode() == f"{hashlib.sha256(big).hexdigest()} {len(big)}"
    # HEAD: the general path (no body despite Content-Length).
    r = await c.request("HEAD", "/name", "api")
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "3"
    assert mesh.a.fast_served == base
    r = await c.request("GET", "/name", "api")
    assert r.body == b"be1"
    assert mesh.a.fast_served == base + 1
    await c.aclose()
    # A small POST whose body arrived with its head (one write): fast, body intact.
    s = await trio.open_tcp_stream(*mesh.outbound)
    await s.send_all(b"POST /upload HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello")
    out = b""
    want = f"{hashlib.sha256(b'hello').hexdigest()} 5".encode()
    with trio.fail_after(5):
        while not out.endswith(want):
            out += await s.receive_some(65536)
    await s.aclose()
    assert mesh.a.fast_served == base + 2


async def test_pipelined_requests_answered_in_order(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    s = await trio.open_tcp_stream(*mesh.outbound)
    one = b"GET /name HTTP/1.1\r\nHost: api\r\n\r\n"
    await s.send_all(one)
    got = b""
    while not got.endswith(b"be1"):
        got += await s.receive_some(65536)
    # Three at once, the middle one chunked (general path), then fast again.
    await s.send_all(one + b"GET /big?n=5000 HTTP/1.1\r\nHost: api\r\n\r\n" + one)
    out = b""
    with trio.fail_after(5):
        while out.count(b"HTTP/1.1 200") < 3 or not out.endswith(b"be1"):
            out += await s.receive_some(65536)
    await s.aclose()
    first = out.index(b"be1")
    assert b"transfer-encoding: chunked" in out[first:].lower()
    assert out.rindex(b"be1") > out.index(b"0\r\n\r\n")
    assert mesh.a.fast_served >= 2


Handler = Callable[[int, int], tuple[bytes, bool]]


async def _raw_backend(nursery: trio.Nursery, respond: Handler) -> int:
    """A backend written in raw bytes: ``respond(conn_no, req_no_on_conn) -> (bytes, close)``."""
    conns = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal conns
        conns += 1
        me = conns
        buf = b""
        n = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[buf.index(b"\r\n\r\n") + 4 :]
                n += 1
                out, close = respond(me, n)
                await stream.send_all(out)
                if close:
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (
        len(body),
        body,
    )


async def _direct_proxy(nursery: trio.Nursery, ports: list[int], **svc: object) -> Proxy:
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None)
    addr = await nursery.start(p.serve)
    p.addresses = addr
    eps = [Endpoint(f"n{i}", "127.0.0.1", port) for i, port in enumerate(ports)]
    services = {"api": service("api", svc)} if svc else {}
    p.update_table(build_route_table(services, {}, {"api": eps}))
    return p


async def test_upstream_closing_mid_response(nursery: trio.Nursery) -> None:
    # Connection 1 answers, then cuts its second answer inside the head; connection 2 answers,
    # then cuts its second answer inside the body; later connections answer whole.
    def respond(conn: int, n: int) -> tuple[bytes, bool]:
        if n == 1:
            return _ok(b"full-%d" % conn), False
        if conn == 1:
            return b"HTTP/1.1 200 OK\r\nContent-Le", True
        return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial", True

    port = await _raw_backend(nursery, respond)
    p = await _direct_proxy(nursery, [port])
    assert p.addresses is not None and p.addresses.outbound is not None
    c = await Client.open(p.addresses.outbound)
    with trio.fail_after(5):
        assert (await c.request("GET", "/", "api")).body == b"full-1"
        # No response head yet: nothing reached the client, so it is tried again on a fresh
        # connection, which answers whole.
        r = await c.request("GET", "/", "api")
    assert (r.status, r.body) == (200, b"full-2")
    await c.aclose()
    # A head already relayed and the body cut short: as on the general path, the client gets
    # the partial response and the connection closed (the only way to say "truncated").
    s = await trio.open_tcp_stream(*p.addresses.outbound)
    await s.send_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
    out = b""
    with trio.fail_after(5):
        while True:
            data = await s.receive_some(65536)
            if not data:
                break
            out += data
    await s.aclose()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"partial")
    c = await Client.open(p.addresses.outbound)
    with trio.fail_after(5):
        assert (await c.request("GET", "/", "api")).status == 200  # still serving
    await c.aclose()


async def test_upstream_closed_idle_connection_is_a_free_retry(nursery: trio.Nursery) -> None:
    def respond(conn: int, n: int) -> tuple[bytes, bool]:
        return _ok(b"c%d" % conn), True  # keep-alive promised, closed anyway

    port = await _raw_backend(nursery, respond)
    p = await _direct_proxy(nursery, [port])
    assert p.addresses is not None and p.addresses.outbound is not None
    c = await Client.open(p.addresses.outbound)
    with trio.fail_after(5):
        bodies = [(await c.request("GET", "/", "api")).body for _ in range(4)]
    assert bodies == [b"c1", b"c2", b"c3", b"c4"]
    assert not p.metrics.retries  # stale pooled connections cost no retry budget
    await c.aclose()


async def test_upstream_503_is_retried_on_another_endpoint(nursery: trio.Nursery) -> None:
    bad = await _raw_backend(
        nursery,
        lambda c, n: (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
            False,
        ),
    )
    good = await _raw_backend(nursery, lambda c, n: (_ok(b"good"), False))
    p = await _direct_proxy(nursery, [bad, good], load_balancer={"policy": "round_robin"})
    assert p.addresses is not None and p.addresses.outbound is not None
    c = await Client.open(p.addresses.outbound)
    with trio.fail_after(5):
        for _ in range(8):
            r = await c.request("GET", "/", "api")
            assert (r.status, r.body) == (200, b"good")
    await c.aclose()
    assert p.metrics.retries["api"] >= 3
    assert p.fast_served >= 2  # the good endpoint's answers after warm-up went inline
    # Every answer came from the good endpoint (n1); the 503s were retried, never answered.
    assert p.metrics.requests == {("api", "", "api", "n1", 200, "outbound"): 8}


async def test_upstream_connection_close_and_http10_fall_back(nursery: trio.Nursery) -> None:
    def respond(conn: int, n: int) -> tuple[bytes, bool]:
        if conn == 1 and n == 2:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye", True
        return _ok(b"hi"), False

    port = await _raw_backend(nursery, respond)
    p = await _direct_proxy(nursery, [port])
    assert p.addresses is not None and p.addresses.outbound is not None
    c = await Client.open(p.addresses.outbound)
    with trio.fail_after(5):
        assert (await c.request("GET", "/", "api")).body == b"hi"
        r = await c.request("GET", "/", "api")
        assert r.body == b"bye" and "connection" not in r.headers  # ours stays keep-alive
        assert (await c.request("GET", "/", "api")).body == b"hi"  # fresh upstream
        assert (await c.request("GET", "/", "api")).body == b"hi"
    await c.aclose()
    assert p.fast_served == 1
    s = await trio.open_tcp_stream(*p.addresses.outbound)
    await s.send_all(b"GET / HTTP/1.0\r\nHost: api\r\nConnection: keep-alive\r\n\r\n")
    out = b""
    with trio.fail_after(5):
        while not out.endswith(b"hi"):
            out += await s.receive_some(65536)
    await s.aclose()
    assert b"connection: keep-alive" in out.lower() and p.fast_served == 1
