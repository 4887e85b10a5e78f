"""HTTP/2 on the proxy's HTTP listeners, at the protocol level: detection on a shared port,
SETTINGS limits, RFC 9113's connection-specific fields, flow control against a slow reader,
RST_STREAM carried upstream, and ALPN h2 inside the mTLS hop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from grpc_helpers import GRPC_HEADERS, GrpcServer, channel, frame, unary
from h2.errors import ErrorCodes
from h2.events import RemoteSettingsChanged
from h2_client import RawH2
from mtls_helpers import HOSTS, Pki, Wall, start_mtls_mesh
from proxy_helpers import Backend, get

from gossipmesh.proxy.detect import PREFACE
from gossipmesh.proxy.mtls import MeshTls
from gossipmesh.proxy.server import Proxy, ProxyLimits
from gossipmesh.proxy.table import Endpoint, build_route_table

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class One:
    proxy: Proxy
    addr: tuple[str, int]
    grpc: GrpcServer
    http: Backend


@pytest.fixture
async def one(nursery: trio.Nursery) -> AsyncIterator[One]:
    """One sidecar: ``api`` (an HTTP/1.1 backend) and ``echo`` (a gRPC server), both local."""
    srv = GrpcServer("g1").start()
    try:
        be = Backend("be1")
        await nursery.start(be.run)
        p = Proxy(outbound=("127.0.0.1", 0), inbound=None)
        addrs = await nursery.start(p.serve)
        p.update_table(
            build_route_table(
                {}, {},
                {"api": [Endpoint("n1", be.host, be.port)],
                 "echo": [Endpoint("n1", srv.host, srv.port)]},
            )
        )  # fmt: skip
        assert addrs.outbound is not None
        yield One(p, addrs.outbound, srv, be)
    finally:
        srv.stop()


def upstream_streams(p: Proxy) -> int:
    """Streams open on the proxy's pooled upstream HTTP/2 links."""
    pool = p.h2.pool
    return (
        0 if pool is None else sum(len(link.streams) for ls in pool.links.values() for link in ls)
    )


async def test_http1_and_http2_share_one_port(one: One) -> None:
    assert (await get(one.addr, "/name", "api")).body == b"be1"
    ch = channel(one.addr, "echo")
    assert await trio.to_thread.run_sync(unary, ch, "Unary", b"x") == b"g1:x"
    ch.close()
    assert (await get(one.addr, "/name", "api")).body == b"be1"
    assert one.proxy.metrics.h2_connections == {"outbound": 1}


async def test_a_preface_written_byte_by_byte_is_still_http2(one: One) -> None:
    stream = await trio.open_tcp_stream(*one.addr)
    for i in range(len(PREFACE)):
        await stream.send_all(PREFACE[i : i + 1])
        await trio.sleep(0.005)
    c = RawH2(stream)
    c.h2.initiate_connection()
    await stream.send_all(c.h2.data_to_send()[len(PREFACE) :])  # the preface went already
    sid = await c.request(b"/test.Echo/Unary", b"echo", GRPC_HEADERS, frame(b"b"), b"POST")
    a = await c.until_done(sid)
    await c.aclose()
    assert a.header(b"grpc-status") == b"0"
    assert bytes(a.body) == frame(b"g1:b")


async def test_the_p_of_post_is_http1(one: One) -> None:
    stream = await trio.open_tcp_stream(*one.addr)
    await stream.send_all(b"P")
    await trio.sleep(0.05)
    await stream.send_all(b"OST /upload HTTP/1.1\r\nhost: api\r\ncontent-length: 3\r\n\r\nabc")
    got = b""
    with trio.fail_after(5):
        while not got.endswith(b" 3"):
            got += await stream.receive_some(65536)
    await stream.aclose()
    assert got.startswith(b"HTTP/1.1 200 ")


async def test_a_preface_that_stalls_is_closed_at_the_detection_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None, limits=ProxyLimits(detect_timeout_ms=500))
    addrs = await nursery.start(p.serve)
    assert addrs.outbound is not None
    stream = await trio.open_tcp_stream(*addrs.outbound)
    await stream.send_all(PREFACE[:10])
    closed_at = None
    start = trio.current_time()
    with trio.move_on_after(5):
        try:
            while await stream.receive_some(1024):
                pass
        except trio.BrokenResourceError:
            pass
        closed_at = trio.current_time() - start
    assert closed_at is not None and 0.5 <= closed_at < 1.0


async def test_settings_announce_the_stream_and_header_limits(one: One) -> None:
    c = await RawH2.open(one.addr)
    while not any(isinstance(e, RemoteSettingsChanged) for e in c.events):
        assert await c.pump()
    s = c.h2.remote_settings
    limits = one.proxy.limits
    assert s.max_concurrent_streams == limits.h2_max_concurrent_streams == 128
    assert s.max_header_list_size == limits.max_header_bytes
    assert s.initial_window_size == limits.h2_stream_window_bytes
    await c.aclose()


async def test_connection_specific_fields_are_refused(one: One) -> None:
    bad = [(b"connection", b"keep-alive"), (b"upgrade", b"websocket"), (b"te", b"gzip"),
           (b"transfer-encoding", b"chunked"), (b"keep-alive", b"1")]  # fmt: skip
    for field in bad:
        c = await RawH2.open(one.addr, validate=False)
        await c.request(b"/name", b"api", [field])
        while await c.pump():
            pass  # the proxy ends the connection (GOAWAY PROTOCOL_ERROR) and closes it
        await c.aclose()
        assert not c.answers[1].headers, field
    with trio.fail_after(5):  # counted as each connection's task ends
        while one.proxy.metrics.h2_protocol_errors != {"outbound": len(bad)}:
            await trio.sleep(0.01)
    # te: trailers is allowed (gRPC needs it), and carried on.
    c = await RawH2.open(one.addr)
    sid = await c.request(b"/test.Echo/Unary", b"echo", GRPC_HEADERS, frame(b"t"), b"POST")
    a = await c.until_done(sid)
    await c.aclose()
    assert a.header(b"grpc-status") == b"0"


async def test_a_slow_reader_holds_the_proxy_to_its_flow_control_windows(one: One) -> None:
    """A client that never acknowledges: the proxy holds at most one stream window of the
    server's 13 MiB answer, and the rest is sent once the client reads."""
    c = await RawH2.open(one.addr)
    c.auto_ack = False
    sid = await c.request(b"/test.Echo/BigStream", b"echo", GRPC_HEADERS, frame(b"200/65536"), b"POST")  # fmt: skip
    limits = one.proxy.limits
    most = 0
    for _ in range(40):
        with trio.move_on_after(0.05):
            await c.pump()
        held = sum(
            len(data)
            for links in one.proxy.h2.pool.links.values()
            for link in links
            for s in link.streams.values()
            for data, _ in s.chunks
        )
        most = max(most, held)
    assert 0 < most <= limits.h2_stream_window_bytes
    assert len(c.answers[sid].body) <= 65_535  # the client's own window
    c.auto_ack = True
    c.h2.acknowledge_received_data(len(c.answers[sid].body), sid)
    c.h2.increment_flow_control_window(len(c.answers[sid].body))
    await c.flush()
    a = await c.until_done(sid)
    await c.aclose()
    assert a.header(b"grpc-status") == b"0"
    assert len(a.body) == 200 * (65536 + 5)


async def test_a_client_reset_cancels_the_upstream_stream(one: One) -> None:
    c = await RawH2.open(one.addr)
    sid = await c.request(b"/test.Echo/ServerStream", b"echo", GRPC_HEADERS, frame(b"1000/20"), b"POST")  # fmt: skip
    while not c.answers[sid].body:
        assert await c.pump()

    assert upstream_streams(one.proxy) == 1
    c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    await c.flush()
    with trio.fail_after(5):
        while upstream_streams(one.proxy):
            await trio.sleep(0.01)
    # The connection itself goes on.
    sid2 = await c.request(b"/test.Echo/Unary", b"echo", GRPC_HEADERS, frame(b"again"), b"POST")
    assert (await c.until_done(sid2)).header(b"grpc-status") == b"0"
    await c.aclose()


async def test_http2_rides_the_mtls_hop_chosen_by_alpn(nursery: trio.Nursery) -> None:
    srv = GrpcServer("g2").start()
    try:
        mesh = await start_mtls_mesh(nursery, {"api": ["be1"]})
        mesh.b.update_local_services({"api": [(srv.host, srv.port)]})
        mesh.backends = {"api": [srv]}  # type: ignore[dict-item]
        mesh.set_table()
        ch = channel(mesh.outbound, "api")
        answers = await trio.to_thread.run_sync(
            lambda: [unary(ch, "Unary", b"%d" % i) for i in range(20)]
        )
        ch.close()
    finally:
        srv.stop()
    assert answers == [b"g2:%d" % i for i in range(20)]
    assert mesh.b.metrics.h2_connections == {"inbound": 1}  # ALPN h2: one connection
    assert mesh.a.metrics.tls_handshakes == {("outbound", "ok"): 1}
    assert mesh.b.metrics.grpc_status[("api", "0", "inbound")] == 20


async def test_migration_mode_reaches_a_plaintext_peer_with_h2c(nursery: trio.Nursery) -> None:
    """--inbound-plaintext: a peer whose inbound does not speak TLS (an agent not upgraded) is
    reached in plaintext, and HTTP/2 then rides it as h2c prior knowledge."""
    srv = GrpcServer("g3").start()
    try:
        wall = Wall()
        pki = Pki(wall)
        b = Proxy(outbound=None, inbound=("127.0.0.1", 0), local_services={"api": [(srv.host, srv.port)]})  # fmt: skip
        b_addr = await nursery.start(b.serve)
        a = Proxy(
            outbound=("127.0.0.1", 0),
            inbound=None,
            mtls=MeshTls(pki.credentials("n1", ["web"]), pki.authority("n1", HOSTS),
                         plaintext_inbound=True),
        )  # fmt: skip
        a_addr = await nursery.start(a.serve)
        eps = {"api": [Endpoint("n2", srv.host, srv.port, inbound=b_addr.inbound)]}
        for p in (a, b):
            p.update_table(build_route_table({}, {}, eps))
        assert a_addr.outbound is not None
        ch = channel(a_addr.outbound, "api")
        answers = await trio.to_thread.run_sync(
            lambda: [unary(ch, "Unary", b"p") for _ in range(3)]
        )
        ch.close()
    finally:
        srv.stop()
    assert answers == [b"g3:p"] * 3
    assert a.metrics.plaintext == {"outbound_fallback": 1}
    assert b.metrics.h2_connections == {"inbound": 1}  # detected by its preface


async def test_an_upstreams_graceful_goaway_lets_the_call_in_flight_finish(one: One) -> None:
    """A gRPC server stopping with a grace period sends GOAWAY (NO_ERROR) and finishes the calls
    it took (RFC 9113 §6.8); the link carries them to the end instead of dropping them."""
    c = await RawH2.open(one.addr)
    sid = await c.request(b"/test.Echo/Slow", b"echo", GRPC_HEADERS, frame(b"600"), b"POST")
    with trio.fail_after(5):
        while not upstream_streams(one.proxy):
            await trio.sleep(0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, one.grpc.stop, 5.0)
        with trio.fail_after(10):
            a = await c.until_done(sid)
    assert a.reset is None and a.header(b"grpc-status") == b"0", a
    assert a.body.endswith(b"g1")
    await c.aclose()


async def test_a_clients_goaway_still_gets_its_answer_then_the_connection_closes(one: One) -> None:
    """A client's GOAWAY (NO_ERROR, last stream 0: it takes no push) says it opens no new
    stream; the call it made is still answered, and the proxy closes the idle connection."""
    c = await RawH2.open(one.addr)
    sid = await c.request(b"/test.Echo/Slow", b"echo", GRPC_HEADERS, frame(b"300"), b"POST")
    # Written by hand: h2 itself takes no frame after its own GOAWAY.
    await c.stream.send_all(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))
    with trio.fail_after(10):
        a = await c.until_done(sid)
        assert a.reset is None and a.header(b"grpc-status") == b"0", (
            a,
            c.broken,
            c.terminated,
            c.events,
        )
        while await c.pump():  # then EOF: the proxy closed the connection
            pass
    await c.aclose()
