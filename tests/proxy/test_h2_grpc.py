"""gRPC through two in-process sidecars (app -> A outbound -> B inbound -> grpcio server), with
real grpcio clients and servers: the four call shapes, large messages, many streams on one
connection, per-request balancing, retries, and the proxy's own failures as gRPC errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
import trio
from grpc_helpers import GrpcServer, bidi, channel, client_stream, server_stream, unary
from proxy_helpers import route, service

from gossipmesh.proxy.authz import Policies
from gossipmesh.proxy.server import Proxy, ProxyAddresses
from gossipmesh.proxy.table import Endpoint, build_route_table

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class GrpcMesh:
    a: Proxy
    b: Proxy
    a_addr: ProxyAddresses
    b_addr: ProxyAddresses
    servers: dict[str, GrpcServer]

    @property
    def outbound(self) -> tuple[str, int]:
        assert self.a_addr.outbound is not None
        return self.a_addr.outbound

    def set_table(
        self,
        layout: dict[str, Sequence[str]],
        services: dict[str, object] | None = None,
        routes: dict[str, object] | None = None,
        tags: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        inbound = self.b_addr.inbound
        eps = {
            svc: [
                Endpoint("b", self.servers[n].host, self.servers[n].port, inbound=inbound,
                         tags=(tags or {}).get(n, ()))
                for n in names
            ]
            for svc, names in layout.items()
        }  # fmt: skip
        table = build_route_table(services or {}, routes or {}, eps)  # type: ignore[arg-type]
        self.b.update_local_services(
            {svc: [(self.servers[n].host, self.servers[n].port) for n in names]
             for svc, names in layout.items()}
        )  # fmt: skip
        self.a.update_table(table)
        self.b.update_table(table)


@pytest.fixture
async def mesh(nursery: trio.Nursery) -> AsyncIterator[GrpcMesh]:
    servers = {name: GrpcServer(name).start() for name in ("s1", "s2")}
    try:
        b = Proxy(outbound=None, inbound=("127.0.0.1", 0))
        b_addr = await nursery.start(b.serve)
        a = Proxy(outbound=("127.0.0.1", 0), inbound=None)
        a_addr = await nursery.start(a.serve)
        m = GrpcMesh(a, b, a_addr, b_addr, servers)
        m.set_table({"echo": ["s1"]})
        yield m
    finally:
        for s in servers.values():
            s.stop()


async def call(fn: object, *args: object) -> object:
    return await trio.to_thread.run_sync(fn, *args)  # type: ignore[arg-type]


def code_of(fn: object, *args: object) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args)  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def test_the_four_call_shapes_through_two_sidecars(mesh: GrpcMesh) -> None:
    ch = channel(mesh.outbound, "echo")
    assert await call(unary, ch, "Unary", b"hi") == b"s1:hi"
    assert await call(server_stream, ch, 5) == [b"s1:%d" % i for i in range(5)]
    assert await call(client_stream, ch, [b"a", b"bb", b"ccc"]) == b"s1:6"
    assert await call(bidi, ch, [b"x", b"yy"]) == [b"s1:x", b"s1:yy"]
    ch.close()
    assert mesh.a.metrics.grpc_status[("echo", "0", "outbound")] == 4
    assert mesh.b.metrics.grpc_status[("echo", "0", "inbound")] == 4
    assert mesh.a.metrics.requests[("echo", "", "echo", "b", 200, "outbound")] == 4


async def test_large_messages_and_many_concurrent_streams_share_one_connection(
    mesh: GrpcMesh,
) -> None:
    ch = channel(mesh.outbound, "echo")
    big = 4 << 20
    assert len(await call(unary, ch, "Big", b"%d" % big)) == big  # 4 MiB answer
    assert await call(client_stream, ch, [b"y" * big]) == b"s1:%d" % big  # 4 MiB request

    def many() -> list[bytes]:
        with futures.ThreadPoolExecutor(50) as pool:
            return list(pool.map(lambda i: unary(ch, "Unary", b"%d" % i), range(300)))

    answers = await call(many)
    assert answers == [b"s1:%d" % i for i in range(300)]
    ch.close()
    # Every stream rode one HTTP/2 connection from A to B (and from B to the server).
    assert mesh.a.metrics.upstream_connections == {"echo": 1}
    assert mesh.b.metrics.upstream_connections == {"echo": 1}


async def test_each_call_picks_its_endpoint_and_a_split_is_per_request(mesh: GrpcMesh) -> None:
    mesh.set_table(
        {"echo": ["s1", "s2"]},
        routes={
            "echo-split": route(
                "echo-split",
                {
                    "hosts": ["echo"],
                    "destinations": [
                        {"service": "echo", "weight": 50, "tags": ["v1"]},
                        {"service": "echo", "weight": 50, "tags": ["v2"]},
                    ],
                },
            )
        },
        tags={"s1": ("v1",), "s2": ("v2",)},
    )
    ch = channel(mesh.outbound, "echo")

    def calls() -> Counter[bytes]:
        return Counter(unary(ch, "Unary", b"").split(b":")[0] for _ in range(200))

    seen = await call(calls)
    ch.close()
    # One channel, one connection, 200 calls: both versions answer, about half each
    # (binomial, p=0.5: outside 60..140 has probability < 1e-8).
    assert set(seen) == {b"s1", b"s2"}
    assert 60 <= seen[b"s1"] <= 140


async def test_no_healthy_endpoint_is_unavailable(mesh: GrpcMesh) -> None:
    mesh.a.update_table(build_route_table({}, {}, {"echo": []}))
    ch = channel(mesh.outbound, "echo")
    code, details = await call(code_of, unary, ch, "Unary", b"")
    ch.close()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "no healthy endpoint" in details


async def test_a_deadline_that_expires_in_the_mesh_is_deadline_exceeded(mesh: GrpcMesh) -> None:
    svc = service("echo", {"timeouts": {"request_ms": 300, "per_try_ms": 300}})
    mesh.set_table({"echo": ["s1"]}, services={"echo": svc})
    ch = channel(mesh.outbound, "echo")
    # No client deadline: the service's request timeout expires in the proxy.
    code, details = await call(code_of, unary, ch, "Slow", b"2000", None)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "gossipmesh: upstream timed out" in details
    # grpc-timeout is the call's deadline when sooner (the client's 200 ms, not 15 s).
    mesh.set_table({"echo": ["s1"]})
    code, _ = await call(code_of, unary, ch, "Slow", b"2000", 0.2)
    ch.close()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert mesh.a.metrics.errors[("echo", "upstream_timeout")] >= 1


async def test_denied_by_policy_is_permission_denied(mesh: GrpcMesh) -> None:
    mesh.b.update_policies(Policies((), {"echo": "deny"}))
    ch = channel(mesh.outbound, "echo")
    code, details = await call(code_of, unary, ch, "Unary", b"")
    ch.close()
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "denied" in details
    assert mesh.b.metrics.grpc_status[("echo", "7", "inbound")] == 1


async def test_unavailable_answers_are_retried_on_another_endpoint(mesh: GrpcMesh) -> None:
    mesh.servers["s1"].fail_unary = 14
    mesh.set_table({"echo": ["s1", "s2"]})
    ch = channel(mesh.outbound, "echo")
    answers = await call(lambda: [unary(ch, "Unary", b"%d" % i) for i in range(20)])
    ch.close()
    assert answers == [b"s2:%d" % i for i in range(20)]
    assert mesh.servers["s1"].calls > 0  # it was tried, and each of its UNAVAILABLEs retried
    assert mesh.a.metrics.retries["echo"] == mesh.servers["s1"].calls
    # Other codes are the application's answer, never retried.
    mesh.servers["s1"].fail_unary = 0
    code, _ = await call(code_of, unary, ch := channel(mesh.outbound, "echo"), "Fail", b"5")
    ch.close()
    assert code == grpc.StatusCode.NOT_FOUND


async def test_the_retried_grpc_codes_are_the_services_retry_on_grpc_status(mesh: GrpcMesh) -> None:
    """RESOURCE_EXHAUSTED (8) is the application's answer by default, and retried once the
    service names it in ``retry.on_grpc_status``."""
    mesh.servers["s1"].fail_unary = 8
    mesh.set_table({"echo": ["s1"]})
    ch = channel(mesh.outbound, "echo")
    code, _ = await call(code_of, unary, ch, "Unary", b"")
    ch.close()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert mesh.a.metrics.retries.get("echo", 0) == 0
    svc = service("echo", {"retry": {"on_grpc_status": [8, 14]}})
    mesh.set_table({"echo": ["s1", "s2"]}, services={"echo": svc})
    ch = channel(mesh.outbound, "echo")
    answers = await call(lambda: [unary(ch, "Unary", b"%d" % i) for i in range(10)])
    ch.close()
    mesh.servers["s1"].fail_unary = 0
    assert answers == [b"s2:%d" % i for i in range(10)]
    assert mesh.a.metrics.retries["echo"] >= 1


async def test_a_server_killed_mid_stream_is_unavailable_and_the_next_call_goes_elsewhere(
    mesh: GrpcMesh,
) -> None:
    mesh.set_table({"echo": ["s1", "s2"]})
    ch = channel(mesh.outbound, "echo")
    stream = ch.unary_stream("/test.Echo/ServerStream")

    def first_messages_then_kill() -> tuple[bytes, grpc.StatusCode]:
        it = stream(b"1000/20", timeout=20)
        first = next(it)
        victim = mesh.servers[first.split(b":")[0].decode()]
        victim.stop(None)  # killed: its calls are cut short
        try:
            for _ in it:
                pass
        except grpc.RpcError as e:
            return first, e.code()
        return first, grpc.StatusCode.OK

    first, code = await call(first_messages_then_kill)
    assert code == grpc.StatusCode.UNAVAILABLE
    survivor = b"s2" if first.startswith(b"s1") else b"s1"
    answers = await call(lambda: [unary(ch, "Unary", b"") for _ in range(5)])
    ch.close()
    assert answers == [survivor + b":"] * 5


async def test_a_grpc_route_match_picks_the_method(mesh: GrpcMesh) -> None:
    unary_route = route(
        "unary-to-s2",
        {"hosts": ["echo"], "grpc": {"service": "test.Echo", "method": "Unary"},
         "destinations": [{"service": "echo2"}]},
    )  # fmt: skip
    mesh.set_table({"echo": ["s1"], "echo2": ["s2"]}, routes={"unary-to-s2": unary_route})
    ch = channel(mesh.outbound, "echo")
    assert await call(unary, ch, "Unary", b"u") == b"s2:u"  # the route
    assert await call(bidi, ch, [b"b"]) == [b"s1:b"]  # another method: the Host's service
    ch.close()
    assert mesh.a.metrics.requests[("echo2", "unary-to-s2", "echo2", "b", 200, "outbound")] == 1
