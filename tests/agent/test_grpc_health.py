"""``check.grpc`` (gossipmesh/agent/grpc_health.py) against a real grpcio server's
``grpc.health.v1`` service."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from grpc_health.v1 import health_pb2

from gossipmesh.agent.grpc_health import request_message, serving_status
from gossipmesh.agent.health import probe
from gossipmesh.config.local_services import HealthCheck, LocalService

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from grpc_helpers import GrpcServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def server() -> Iterator[GrpcServer]:
    s = GrpcServer("h").start()
    try:
        yield s
    finally:
        s.stop()


def check(service: str = "") -> HealthCheck:
    return HealthCheck("grpc", None, 1000, 900, 1, 1, service)


async def test_serving_passes_and_anything_else_fails(server: GrpcServer) -> None:
    svc = LocalService("echo", server.port)
    assert (await probe(svc, check())).ok
    assert (await probe(svc, check())).reason == "grpc SERVING"
    server.health.set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = await probe(svc, check("test.Echo"))
    assert (result.ok, result.reason) == (False, "grpc NOT_SERVING")
    server.health.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
    assert (await probe(svc, check("test.Echo"))).ok
    unknown = await probe(svc, check("no.Such"))
    assert (unknown.ok, unknown.reason) == (False, "grpc-status 5")  # NOT_FOUND


async def test_a_stopped_server_or_an_http1_server_fails(
    server: GrpcServer, nursery: trio.Nursery
) -> None:
    port = server.port
    server.stop()
    assert not (await probe(LocalService("echo", port), check())).ok

    async def http1(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, http1, 0)
    http_port = listeners[0].socket.getsockname()[1]
    result = await probe(LocalService("web", http_port), check())
    assert not result.ok and result.reason.startswith("grpc")


def test_the_messages_match_the_protobuf_encoding() -> None:
    req = health_pb2.HealthCheckRequest(service="pkg.Echo").SerializeToString()
    assert request_message("pkg.Echo") == b"\x00" + len(req).to_bytes(4, "big") + req
    for status in (0, 1, 2, 3):
        raw = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert serving_status(b"\x00" + len(raw).to_bytes(4, "big") + raw) == status
    assert serving_status(b"\x01\x00\x00\x00\x00") is None  # compressed: not ours
    assert serving_status(b"\x00\x00\x00\x00\x02\x12\x00") is None  # an unknown field
