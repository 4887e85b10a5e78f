"""The proxy's bounds (limits.py, descriptors.py, downstream.py) through real sockets: slow
heads closed at their deadline, idle keep-alives closed, connections past a listener's cap or the
descriptor budget refused, each counted in /metrics; both engines. Time is trio's MockClock."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing
from proxy_helpers import Backend, Client

from gossipmesh.proxy.descriptors import MIN_UPSTREAM_SHARE, DescriptorBudget
from gossipmesh.proxy.downstream import BufferPool
from gossipmesh.proxy.memory import MIN_DROP, Trimmer, compact
from gossipmesh.proxy.metrics import render_metrics
from gossipmesh.proxy.server import Proxy, ProxyLimits
from gossipmesh.proxy.table import Endpoint, build_route_table

ENGINES = ["epoll", "tasks"]


async def direct(nursery: trio.Nursery, engine: str, **kw: object) -> tuple[Proxy, tuple[str, int]]:
    be = Backend("be1")
    await nursery.start(be.run)
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None, engine=engine, **kw)  # type: ignore[arg-type]
    addr = await nursery.start(p.serve)
    p.update_table(build_route_table({}, {}, {"api": [Endpoint("n1", be.host, be.port)]}))
    assert addr.outbound is not None
    return p, addr.outbound


async def closed_by_peer(s: trio.SocketStream, within_s: float) -> bool:
    """True if the peer closes ``s`` within ``within_s`` (virtual) seconds; bytes are dropped."""
    with trio.move_on_after(within_s):
        while True:
            try:
                if not await s.receive_some(65536):
                    return True
            except trio.BrokenResourceError:
                return True
    return False


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_head_sent_a_byte_now_and_then_is_closed_at_the_head_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    p, addr = await direct(nursery, engine, limits=ProxyLimits(head_timeout_ms=2000))
    c = await Client.open(addr)
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    slow = []
    for _ in range(20):
        s = await trio.open_tcp_stream(*addr)
        await s.send_all(b"GET /name HTTP/1.1\r\n")
        slow.append(s)
    began = trio.current_time()
    closed_at: list[float] = []

    async def dribble(s: trio.SocketStream) -> None:
        # One header byte every 100 ms: each one used to restart the (60 s) idle timer.
        with trio.move_on_after(30):
            while True:
                try:
                    await s.send_all(b"X")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if await closed_by_peer(s, 0.1):
                    break
            closed_at.append(trio.current_time() - began)
        await s.aclose()

    async with trio.open_nursery() as n:
        for s in slow:
            n.start_soon(dribble, s)
    assert len(closed_at) == 20
    await trio.testing.wait_all_tasks_blocked()
    # The deadline (2 s of the first byte), within a watchdog tick and a dribble step.
    assert all(1.9 <= t <= 2.2 for t in closed_at), closed_at
    assert p.metrics.head_timeouts["outbound"] == 20
    # The keep-alive client that asked nothing since is still served (60 s idle allowed).
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    await c.aclose()


@pytest.mark.parametrize("engine", ENGINES)
async def test_idle_keepalive_and_silent_connections_close_counted_by_reason(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    limits = ProxyLimits(head_timeout_ms=1000, keepalive_idle_ms=5000)
    p, addr = await direct(nursery, engine, limits=limits)
    silent = await trio.open_tcp_stream(*addr)  # connects and never sends a byte
    c = await Client.open(addr)
    assert (await c.request("GET", "/name", "api")).body == b"be1"
    answered = trio.current_time()
    assert await closed_by_peer(silent, 1.2)
    await trio.testing.wait_all_tasks_blocked()  # a task that served it has finished
    assert p.metrics.head_timeouts["outbound"] == 1
    assert await closed_by_peer(c.stream, 6)
    assert 5 <= trio.current_time() - answered <= 5.1
    await trio.testing.wait_all_tasks_blocked()
    assert p.metrics.idle_closes["outbound"] == 1
    await silent.aclose()
    await c.aclose()
    text = render_metrics(p.metrics).decode()
    assert 'gossipmesh_proxy_idle_closes_total{direction="outbound"} 1.0' in text
    assert 'gossipmesh_proxy_head_timeouts_total{direction="outbound"} 1.0' in text
    assert 'gossipmesh_proxy_limit{name="keepalive_idle_ms"} 5000.0' in text


@pytest.mark.parametrize("engine", ENGINES)
async def test_connections_past_the_listener_cap_are_refused_and_counted(
    nursery: trio.Nursery, engine: str
) -> None:
    p, addr = await direct(nursery, engine, limits=ProxyLimits(max_connections_per_listener=5))
    clients = [await Client.open(addr) for _ in range(5)]
    for c in clients:
        assert (await c.request("GET", "/name", "api")).body == b"be1"
    extra = await trio.open_tcp_stream(*addr)
    with trio.fail_after(5):
        answer = b""
        while chunk := await extra.receive_some(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ") and b"listener_limit" in answer
    await extra.aclose()
    assert p.metrics.refused[("outbound", "listener_limit")] == 1
    assert p.metrics.listener_connections["outbound"] == 5
    await clients.pop().aclose()
    with trio.fail_after(5):
        while p.metrics.listener_connections["outbound"] != 4:
            await trio.sleep(0.01)
    again = await Client.open(addr)  # room again
    assert (await again.request("GET", "/name", "api")).body == b"be1"
    text = render_metrics(p.metrics).decode()
    assert 'gossipmesh_proxy_listener_connections{listener="outbound"} 5.0' in text
    assert (
        'gossipmesh_proxy_refused_connections_total{listener="outbound",reason="listener_limit"} 1.0'
        in text
    )
    for c in [*clients, again]:
        await c.aclose()


@pytest.mark.parametrize("engine", ENGINES)
async def test_clients_never_take_the_reserved_descriptors(
    nursery: trio.Nursery, engine: str
) -> None:
    # 40 descriptors for the proxy: clients may hold 40 - 16, the rest stays for upstreams.
    budget = DescriptorBudget(limit=100 + 256 + 40, reserve=256, baseline=100)
    assert (budget.cap, budget.client_cap) == (40, 40 - MIN_UPSTREAM_SHARE)
    p, addr = await direct(nursery, engine, descriptors=budget)
    clients = [await Client.open(addr) for _ in range(budget.client_cap)]
    with trio.fail_after(5):
        while budget.in_use < budget.client_cap:
            await trio.sleep(0.01)
    extra = await trio.open_tcp_stream(*addr)
    with trio.fail_after(5):
        answer = b""
        while chunk := await extra.receive_some(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ") and b"descriptors" in answer
    assert p.metrics.refused[("outbound", "descriptors")] == 1
    # The clients already in still reach the upstream (its connection fits the cap).
    for c in clients[:3]:
        assert (await c.request("GET", "/name", "api")).body == b"be1"
    assert budget.client_cap < budget.in_use <= budget.cap
    text = render_metrics(p.metrics).decode()
    assert 'gossipmesh_proxy_descriptors{kind="reserve"} 256.0' in text
    for c in clients:
        await c.aclose()
    await extra.aclose()
    with trio.fail_after(5):
        while p.metrics.listener_connections["outbound"]:
            await trio.sleep(0.01)
    assert budget.in_use <= 1  # what is left is the pooled upstream connection


async def test_an_idle_connection_holds_no_buffer_of_its_own(nursery: trio.Nursery) -> None:
    p, addr = await direct(nursery, "epoll")
    clients = [await Client.open(addr) for _ in range(10)]
    for c in clients:
        assert (await c.request("GET", "/name", "api")).body == b"be1"
    assert p.event_engine is not None
    conns = [c.conn for c in p.event_engine.conns]
    assert len(conns) == 10
    assert all(conn.upmv is None for conn in conns)  # the response buffer went back
    assert all(conn.mv is p.downstreams.mv for conn in conns)  # one receive buffer for all
    assert len(p.downstreams.buffers.free) == 1  # and the exchanges reused one buffer
    for c in clients:
        await c.aclose()


def test_descriptor_budget_thresholds() -> None:
    b = DescriptorBudget(limit=1024, reserve=256, baseline=24)
    assert b.cap == 744 and b.client_cap == 744 - 93
    for _ in range(b.client_cap):
        b.opened()
    assert not b.may_accept() and b.may_connect()
    for _ in range(b.cap - b.client_cap):
        b.opened()
    assert not b.may_connect() and b.peak == b.cap
    b.closed()
    assert b.may_connect() and not b.may_accept()
    tiny = DescriptorBudget(limit=300, reserve=256, baseline=40)
    assert tiny.cap == 4 and tiny.client_cap == 0 and not tiny.may_accept()


def test_buffer_pool_keeps_at_most_its_share() -> None:
    pool = BufferPool(keep=2)
    bufs = [pool.take(16) for _ in range(3)]
    for b in bufs:
        pool.give(b)
    assert len(pool.free) == 2
    assert pool.take(16) is bufs[1]
    assert len(pool.take(32)) == 32  # another size is never handed out


def test_memory_is_trimmed_once_a_storm_has_passed_and_not_more_often() -> None:
    calls: list[str] = []
    t = Trimmer(compact=lambda: calls.append("compact"), trim=lambda: calls.append("trim"))
    s = 1_000_000_000
    for n in (10, 500, 2000, 1500):
        t.tick(n, 1 * s)
    assert calls == []  # still 1,500 of a 2,000 peak open
    t.tick(900, 2 * s)
    assert calls == ["compact", "trim"] and t.trims == 1
    t.tick(5000, 3 * s)
    t.tick(0, 4 * s)  # another storm passed, but the last trim was 2 s ago
    assert t.trims == 1 and not t.due(0, 11 * s) and t.due(0, 12 * s)
    t.tick(0, 12 * s)
    assert t.trims == 2 and MIN_DROP == 1000


def test_compact_keeps_identity_and_contents() -> None:
    d = {i: i for i in range(10_000)}
    s = set(range(10_000))
    for i in range(9_990):
        del d[i]
        s.discard(i)
    ref_d, ref_s = d, s
    compact(d)
    compact(s)
    assert d is ref_d and s is ref_s
    assert d == {i: i for i in range(9_990, 10_000)} and s == set(range(9_990, 10_000))
    assert sys.getsizeof(d) < 1000 and sys.getsizeof(s) < 1000
