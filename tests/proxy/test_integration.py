"""The whole path on loopback: app → proxy A outbound → proxy B inbound → h11 backends."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial

import trio
import trio.testing
from proxy_helpers import Client, get, pattern_bytes, raw_exchange, route, service, start_mesh

from gossipmesh.proxy.metrics import render_metrics
from gossipmesh.proxy.server import Proxy, TcpConnector
from gossipmesh.proxy.table import Endpoint, build_route_table


async def test_get_head_404_and_metrics(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    c = await Client.open(mesh.outbound)
    for _ in range(3):
        r = await c.request("GET", "/name", "api")
        assert (r.status, r.body) == (200, b"be1")
    r = await c.request("HEAD", "/name", "api")
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "3"
    r = await c.request("GET", "/name", "api")  # the connection survived the HEAD
    assert r.body == b"be1"
    r = await c.request("GET", "/name", "nosuch")
    assert r.status == 404 and r.headers["x-gossipmesh-error"] == "no_route"
    assert b"nosuch" in r.body
    await c.aclose()
    text = render_metrics(mesh.a.metrics, mesh.b.metrics).decode()
    assert (
        'gossipmesh_proxy_requests_total{destination="api",direction="outbound",node="b",route="",'
        'service="api",status_class="2xx"} 5.0' in text
    )
    assert (
        'direction="inbound"' in text and "gossipmesh_proxy_request_duration_seconds_bucket" in text
    )


async def test_absolute_form_http_proxy_style(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    out = await raw_exchange(
        mesh.outbound, b"GET http://api/name HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"be1")


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_large_streamed_bodies_both_ways(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    c = await Client.open(mesh.outbound)
    size = 20 * 1024 * 1024
    data = pattern_bytes(size)
    want = f"{hashlib.sha256(data).hexdigest()} {size}".encode()
    r = await c.request("POST", "/upload", "api", body=data)
    assert (r.status, r.body) == (200, want)
    r = await c.request("POST", "/upload", "api", body=_chunks(data, 100_000), chunked=True)
    assert (r.status, r.body) == (200, want)
    r = await c.request("GET", f"/big?n={size}", "api")
    assert r.status == 200 and r.headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
    await c.aclose()


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    stream = await trio.open_tcp_stream(*mesh.outbound)
    await stream.send_all(
        b"POST /upload HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    with trio.fail_after(5):
        got = await stream.receive_some(1000)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    await stream.send_all(b"hello")
    buf = got[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
    with trio.fail_after(5):
        while hashlib.sha256(b"hello").hexdigest().encode() not in buf:
            buf += await stream.receive_some(1000)
    assert buf.startswith(b"HTTP/1.1 200")
    await stream.aclose()


async def test_pipelined_requests_answered_in_order(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    reqs = (
        b"GET /status/201 HTTP/1.1\r\nHost: api\r\n\r\n"
        b"POST /upload HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /status/202 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
    )
    out = await raw_exchange(mesh.outbound, reqs)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", out)
    assert statuses == [b"201", b"200", b"202"]
    assert hashlib.sha256(b"abc").hexdigest().encode() in out


async def test_websocket_style_upgrade_tunnel(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    stream = await trio.open_tcp_stream(*mesh.outbound)
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly"
    )
    buf = b""
    with trio.fail_after(5):
        while b"early" not in buf:
            buf += await stream.receive_some(1000)
    assert buf.startswith(b"HTTP/1.1 101")
    for i in range(20):
        msg = b"message %d " % i * 100
        await stream.send_all(msg)
        got = b""
        with trio.fail_after(5):
            while len(got) < len(msg):
                got += await stream.receive_some(65536)
        assert got == msg
    await stream.aclose()


async def test_canary_split_90_10(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["stable", "canary"]})
    split = route(
        "split",
        {
            "hosts": ["api"],
            "destinations": [
                {"service": "api", "weight": 90, "tags": ["v1"]},
                {"service": "api", "weight": 10, "tags": ["v2"]},
            ],
        },
    )
    mesh.set_table(routes={"split": split}, tags={"stable": ("v1",), "canary": ("v2",)})
    c = await Client.open(mesh.outbound)
    counts: Counter[bytes] = Counter()
    for _ in range(2000):
        r = await c.request("GET", "/name", "api")
        counts[r.body] += 1
    await c.aclose()
    assert abs(counts[b"canary"] / 2000 - 0.10) < 0.05, counts
    assert counts[b"stable"] + counts[b"canary"] == 2000


async def test_killed_backend_loses_no_idempotent_request_and_is_taken_out(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1", "be2", "be3"]})
    svc = service("api", {"load_balancer": {"policy": "round_robin"}})
    mesh.set_table(services={"api": svc})
    c = await Client.open(mesh.outbound)
    seen: Counter[bytes] = Counter()
    for i in range(300):
        if i == 100:
            mesh.backends["api"][1].kill()
        r = await c.request("GET", "/name", "api")
        assert r.status == 200, (i, r)
        seen[r.body] += 1
    await c.aclose()
    dead = mesh.backends["api"][1]
    states = mesh.a.endpoint_states()
    # Its agent's 502 "could not connect" marked it down (balancer.DOWN_NS): each down window
    # costs one retry, not one per request (outlier ejection follows after five of them).
    assert states[("b", dead.host, dead.port)]["down"] == 1.0
    assert states[("b", dead.host, dead.port)]["consecutive_failures"] >= 1
    assert mesh.a.metrics.retries.get("api", 0) >= 1


async def test_per_try_timeout_retries_then_504(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, {"api": ["slow", "fast"]})
    svc = service(
        "api",
        {"timeouts": {"per_try_ms": 200}, "load_balancer": {"policy": "round_robin"}},
    )
    mesh.set_table(services={"api": svc})
    mesh.backends["api"][0].delay_s = 2.0
    c = await Client.open(mesh.outbound)
    with trio.fail_after(10):
        for _ in range(4):
            r = await c.request("GET", "/name", "api")
            assert (r.status, r.body) == (200, b"fast")
    await c.aclose()
    mesh.backends["api"][1].delay_s = 2.0
    sent = trio.current_time()
    with trio.fail_after(10):
        r = await get(mesh.outbound, "/name", "api")
    assert r.status == 504 and r.headers["x-gossipmesh-error"] == "upstream_timeout"
    # Virtual time: three tries (two retries) of 200 ms each, each within one watchdog tick.
    assert 0.6 <= trio.current_time() - sent <= 0.75 + 1e-6
    assert mesh.a.metrics.retries["api"] >= 2


async def test_breaker_max_requests_answers_503(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    svc = service("api", {"circuit_breaker": {"max_requests": 1}})
    mesh.set_table(services={"api": svc})
    results: list[int] = []

    async def slow() -> None:
        r = await get(mesh.outbound, "/slow?ms=500", "api")
        results.append(r.status)

    async with trio.open_nursery() as n:
        n.start_soon(slow)
        await trio.sleep(0.2)
        r = await get(mesh.outbound, "/name", "api")
        assert r.status == 503
        assert r.headers["x-gossipmesh-overloaded"] == "max_requests"
        assert r.headers["x-gossipmesh-error"] == "overloaded"
    assert results == [200]
    assert mesh.a.metrics.breaker_trips[("api", "max_requests")] == 1


async def test_no_endpoint_is_503(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    svc = service("empty", {})
    table = build_route_table({"empty": svc}, {}, mesh.endpoints())
    mesh.a.update_table(table)
    r = await get(mesh.outbound, "/", "empty")
    assert r.status == 503 and r.headers["x-gossipmesh-error"] == "no_healthy_endpoint"


async def test_garbage_gets_400_or_close_and_proxy_keeps_serving(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    assert mesh.b_addr.inbound is not None
    garbage = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(200)),
        b"GET / HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
        b"",
    ]
    for addr in (mesh.outbound, mesh.b_addr.inbound):
        for g in garbage:
            out = await raw_exchange(addr, g, max_s=3)
            assert out == b"" or out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), out[:80]
    r = await get(mesh.outbound, "/name", "api")
    assert r.body == b"be1"
    assert mesh.a.metrics.open_connections["outbound"] <= 1


async def test_inbound_is_not_an_open_proxy(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    assert mesh.b_addr.inbound is not None
    out = await raw_exchange(
        mesh.b_addr.inbound,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Gossipmesh-Dest: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 403") and b"x-gossipmesh-error: forbidden_destination" in out


async def test_request_id_traceparent_and_forwarded_for(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = await get(
        mesh.outbound,
        "/echo-headers",
        "api",
        headers=[("traceparent", trace), ("x-gossipmesh-dest", "127.0.0.1:1")],
    )
    seen = dict(line.split(": ", 1) for line in r.body.decode().splitlines() if ": " in line)
    assert len(seen["x-request-id"]) == 32
    assert seen["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert seen["traceparent"].split("-")[2] != "00f067aa0ba902b7"
    assert seen["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    assert "x-gossipmesh-dest" not in seen  # never leaks to the app; app's value was dropped
    r2 = await get(mesh.outbound, "/echo-headers", "api", headers=[("x-request-id", "mine")])
    assert b"x-request-id: mine\n" in r2.body
    assert b"traceparent: 00-" in r2.body  # created when absent


async def test_tcp_service_through_the_mesh_and_connector_seam(nursery: trio.Nursery) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    echo_port = listeners[0].socket.getsockname()[1]
    b = Proxy(
        outbound=None,
        inbound=("127.0.0.1", 0),
        local_services={"kv": [("127.0.0.1", echo_port)], "api": []},
    )
    b_addr = await nursery.start(b.serve)
    a = Proxy(
        outbound=None,
        inbound=None,
        tcp_listeners={"kv": ("127.0.0.1", 0)},
        connector=TcpConnector(),
    )
    a_addr = await nursery.start(a.serve)
    assert b_addr.inbound is not None
    table = build_route_table(
        {"kv": service("kv", {"protocol": "tcp"})},
        {},
        {"kv": [Endpoint("b", "127.0.0.1", echo_port, inbound=b_addr.inbound)]},
    )
    a.update_table(table)
    stream = await trio.open_tcp_stream(*a_addr.tcp["kv"])
    for i in range(5):
        msg = b"ping %d" % i
        await stream.send_all(msg)
        got = b""
        with trio.fail_after(5):
            while len(got) < len(msg):
                got += await stream.receive_some(100)
        assert got == msg
    await stream.aclose()
