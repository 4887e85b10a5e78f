"""The event engine (engine.py): the fast path served from one private edge-triggered epoll, and
every hand-over to the task code and back, through real sockets.

``Proxy.fast_served`` counts exchanges the fast path completed; ``Proxy.event_engine.conns`` holds the
connections the engine serves right now (a connection handed to a task is not in it).
"""

from __future__ import annotations

import hashlib

import pytest
import trio
import trio.testing
from proxy_helpers import Backend, Client, get, pattern_bytes, service, start_mesh

from gossipmesh.proxy.server import Proxy, ProxyLimits
from gossipmesh.proxy.table import Endpoint, build_route_table

ONE = b"GET /name HTTP/1.1\r\nHost: api\r\n\r\n"


async def _direct(nursery: trio.Nursery, **kw: object) -> tuple[Proxy, tuple[str, int], Backend]:
    be = Backend("be1")
    await nursery.start(be.run)
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None, **kw)  # type: ignore[arg-type]
    addr = await nursery.start(p.serve)
    p.update_table(build_route_table({}, {}, {"api": [Endpoint("n1", be.host, be.port)]}))
    assert addr.outbound is not None
    return p, addr.outbound, be


async def _read_until(s: trio.SocketStream, pred: object, limit_s: float = 5.0) -> bytes:
    out = b""
    with trio.fail_after(limit_s):
        while not pred(out):  # type: ignore[operator]
            data = await s.receive_some(65536)
            if not data:
                break
            out += data
    return out


async def test_engine_is_the_default_and_serves_keepalive(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    assert mesh.a.event_engine is not None and mesh.b.event_engine is not None
    c = await Client.open(mesh.outbound)
    for _ in range(20):
        r = await c.request("GET", "/name", "api")
        assert (r.status, r.body) == (200, b"be1")
    assert len(mesh.a.event_engine.conns) == 1  # served by the engine, not by a task
    await c.aclose()
    assert mesh.a.fast_served == 19 and mesh.b.fast_served == 19
    with trio.fail_after(5):
        while mesh.a.metrics.open_connections["outbound"]:
            await trio.sleep(0.01)
    assert not mesh.a.event_engine.conns
    assert mesh.a.metrics.bytes_in["outbound"] > 0 and mesh.a.metrics.bytes_out["outbound"] > 0


async def test_engine_pipelined_in_order(nursery: trio.Nursery) -> None:
    p, addr, _ = await _direct(nursery)
    s = await trio.open_tcp_stream(*addr)
    await s.send_all(ONE)
    await _read_until(s, lambda b: b.endswith(b"be1"))
    reqs = [
        b"GET /echo-headers HTTP/1.1\r\nHost: api\r\nx-request-id: r%d\r\n\r\n" % i
        for i in range(40)
    ]
    await s.send_all(b"".join(reqs))  # more than fairness_every: crosses engine batches
    out = await _read_until(s, lambda b: b.count(b"x-request-id: r") == 40 and b.endswith(b"\n"))
    assert out.count(b"HTTP/1.1 200") == 40
    rids = [int(x.split(b"\n")[0]) for x in out.split(b"x-request-id: r")[1:]]
    assert rids == list(range(40))
    await s.aclose()
    assert p.fast_served >= 40


async def test_engine_hands_over_and_takes_back(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    eng = mesh.a.event_engine
    assert eng is not None
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    base = mesh.a.fast_served
    # Chunked response (resumed by the general relay), Expect, a streamed big body.
    r = await c.request("GET", "/big?n=200000", "api")
    assert r.body == pattern_bytes(200000)
    body = b"y" * 500
    r = await c.request("POST", "/upload", "api", headers=[("expect", "100-continue")], body=body)
    assert r.body.decode() == f"{hashlib.sha256(body).hexdigest()} {len(body)}"
    big = pattern_bytes(500_000)
    r = await c.request("POST", "/upload", "api", body=big)
    assert r.body.decode() == f"{hashlib.sha256(big).hexdigest()} {len(big)}"
    assert mesh.a.fast_served == base
    # Back in the engine: the next request is fast again, on the same connection.
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    assert mesh.a.fast_served == base + 1
    assert len(eng.conns) == 1
    await c.aclose()


async def test_engine_client_half_close_gets_its_answer(nursery: trio.Nursery) -> None:
    p, addr, _ = await _direct(nursery)
    s = await trio.open_tcp_stream(*addr)
    await s.send_all(ONE)
    await _read_until(s, lambda b: b.endswith(b"be1"))
    await s.send_all(ONE + ONE)
    await s.send_eof()
    out = await _read_until(s, lambda b: False)  # until the proxy closes
    assert out.count(b"HTTP/1.1 200") == 2 and out.endswith(b"be1")
    await s.aclose()
    assert p.fast_served >= 2


async def test_engine_garbage_gets_400_and_keeps_serving(nursery: trio.Nursery) -> None:
    p, addr, _ = await _direct(nursery)
    good = await Client.open(addr)
    assert (await good.request("GET", "/name", "api")).body == b"be1"
    s = await trio.open_tcp_stream(*addr)
    await s.send_all(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
    out = await _read_until(s, lambda b: False)
    assert out.startswith(b"HTTP/1.1 400")
    await s.aclose()
    s = await trio.open_tcp_stream(*addr)
    await s.send_all(b"GET / HTTP/1.1\r\nHost: api\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n")
    out = await _read_until(s, lambda b: False)
    assert out.startswith(b"HTTP/1.1 431")
    await s.aclose()
    for _ in range(5):
        assert (await good.request("GET", "/name", "api")).body == b"be1"
    await good.aclose()
    assert p.metrics.errors[("", "bad_request")] == 1


async def test_engine_many_concurrent_connections(nursery: trio.Nursery) -> None:
    p, addr, be = await _direct(nursery)
    assert p.event_engine is not None
    ok = 0
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.005)
            ticks += 1

    async def one(i: int) -> None:
        nonlocal ok
        c = await Client.open(addr)
        try:
            for _ in range(5):
                r = await c.request("GET", f"/name?c={i}", "api")
                assert (r.status, r.body) == (200, b"be1")
                ok += 1
        finally:
            await c.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(ticker)
        with trio.fail_after(30):
            async with trio.open_nursery() as clients:
                for i in range(200):
                    clients.start_soon(one, i)
        n.cancel_scope.cancel()
    assert ok == 1000 and ticks > 0  # other tasks kept running
    assert p.fast_served > 500
    with trio.fail_after(5):
        while p.metrics.open_connections["outbound"]:
            await trio.sleep(0.01)
    assert not p.event_engine.conns
    # Each request reached the backend once, but for the retries the proxy counted (on a loaded
    # machine a try can miss its per-try timeout; a GET is then retried).
    assert be.requests == 1000 + p.metrics.retries.get("api", 0), p.metrics.retries


async def test_engine_client_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    p, addr, _ = await _direct(nursery, limits=ProxyLimits(keepalive_idle_ms=200))
    s = await trio.open_tcp_stream(*addr)
    await s.send_all(ONE)
    await _read_until(s, lambda b: b.endswith(b"be1"))
    answered = trio.current_time()
    with trio.fail_after(3):
        assert await s.receive_some(100) == b""  # closed by the watchdog through the engine
    # Virtual time: the idle timeout, within one watchdog tick (50 ms).
    assert 0.2 <= trio.current_time() - answered <= 0.25 + 1e-6
    await s.aclose()
    assert p.metrics.open_connections["outbound"] == 0


async def test_engine_upstream_timeout_answers_504(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    be = Backend("be1")
    await nursery.start(be.run)
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None)
    addr = await nursery.start(p.serve)
    svc = service("api", {"timeouts": {"request_ms": 300, "per_try_ms": 300}})
    p.update_table(build_route_table({"api": svc}, {}, {"api": [Endpoint("n1", be.host, be.port)]}))
    assert addr.outbound is not None
    c = await Client.open(addr.outbound)
    assert (await c.request("GET", "/name", "api")).status == 200
    sent = trio.current_time()
    with trio.fail_after(5):
        r = await c.request("GET", "/slow?ms=2000", "api")
    assert r.status == 504 and r.headers["x-gossipmesh-error"] == "upstream_timeout"
    # Virtual time: the request deadline, within one watchdog tick; one endpoint, no retry.
    assert 0.3 <= trio.current_time() - sent <= 0.35 + 1e-6
    # The connection the watchdog closed left the breaker's and the metrics' counts.
    assert p.upstreams.pool.idle_count() == 0
    assert p.directory.breakers["api"].connections == 0
    assert p.metrics.upstream_connections["api"] == 0
    await c.aclose()


@pytest.mark.parametrize("how", ["tasks", "no-epoll"])
async def test_task_path_still_serves(nursery: trio.Nursery, how: str) -> None:
    kw: dict[str, object] = {}
    if how == "tasks":
        kw["engine"] = "tasks"
    else:
        kw["have_epoll"] = False  # the epoll engine asked for, on a system without epoll
    p, addr, _ = await _direct(nursery, **kw)
    assert p.event_engine is None
    c = await Client.open(addr)
    for _ in range(3):
        assert (await c.request("GET", "/name", "api")).body == b"be1"
    await c.aclose()
    assert p.fast_served == 2
    assert (await get(addr, "/big?n=1000", "api")).body == pattern_bytes(1000)


def test_engine_flag_is_checked() -> None:
    with pytest.raises(ValueError):
        Proxy(engine="uring")
