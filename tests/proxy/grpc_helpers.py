"""Real gRPC servers (grpcio, generic handlers: no generated code) behind in-process proxies.

Methods of ``test.Echo`` (messages are raw bytes, no protobuf):

- ``Unary``: answers ``NAME:`` + the request;
- ``ServerStream``: the request is a count N (ASCII), or ``N/MS`` to pause MS ms before each;
  answers N messages ``NAME:i``;
- ``ClientStream``: answers ``NAME:`` + the total length of the messages received;
- ``Bidi``: echoes each message as ``NAME:`` + message;
- ``Slow``: sleeps the request's milliseconds (ASCII), then answers ``NAME``;
- ``Big``: answers a message of the request's length (ASCII) in bytes;
- ``BigStream``: the request is ``N/SIZE``; answers N messages of SIZE bytes;
- ``Fail``: answers the status code in the request (ASCII) with message ``NAME``.

Each server also serves ``grpc.health.v1.Health`` (``health`` sets its status).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "test.Echo"


@dataclass
class GrpcServer:
    name: str
    host: str = "127.0.0.1"
    port: int = 0
    calls: int = 0
    fail_unary: int = 0  # a gRPC status code every Unary call answers with (0: none)
    server: grpc.Server | None = None
    health: health.HealthServicer = field(default_factory=health.HealthServicer)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> GrpcServer:
        name = self.name.encode()

        def count() -> None:
            with self.lock:
                self.calls += 1

        def unary(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            count()
            if self.fail_unary:
                ctx.abort(grpc.StatusCode(_code(self.fail_unary)), self.name)
            return name + b":" + req

        def server_stream(req: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
            count()
            n, _, pause_ms = req.partition(b"/")
            for i in range(int(n)):
                if pause_ms:
                    time.sleep(int(pause_ms) / 1000)
                yield name + b":%d" % i

        def client_stream(reqs: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
            count()
            return name + b":%d" % sum(len(r) for r in reqs)

        def bidi(reqs: Iterator[bytes], ctx: grpc.ServicerContext) -> Iterator[bytes]:
            count()
            for r in reqs:
                yield name + b":" + r

        def slow(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            count()
            time.sleep(int(req) / 1000)
            return name

        def big_stream(req: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
            count()
            n, _, size = req.partition(b"/")
            for _ in range(int(n)):
                yield b"z" * int(size)

        def big(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            count()
            return b"x" * int(req)

        def fail(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            count()
            ctx.abort(grpc.StatusCode(_code(int(req))), self.name)
            return b""

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Big": grpc.unary_unary_rpc_method_handler(big),
            "BigStream": grpc.unary_stream_rpc_method_handler(big_stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        }
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64),
            options=[
                ("grpc.max_receive_message_length", 16 << 20),
                ("grpc.max_send_message_length", 16 << 20),
            ],
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self.server = server
        return self

    def stop(self, grace: float | None = None) -> None:
        if self.server is not None:
            self.server.stop(grace).wait()
            self.server = None


def _code(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value  # type: ignore[no-any-return]
    raise ValueError(value)


def channel(addr: tuple[str, int], authority: str) -> grpc.Channel:
    """A channel to a proxy's listener whose calls name ``authority`` (the service)."""
    return grpc.insecure_channel(
        f"{addr[0]}:{addr[1]}",
        options=[
            ("grpc.default_authority", authority),
            ("grpc.enable_http_proxy", 0),
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20),
        ],
    )


def unary(ch: grpc.Channel, method: str, req: bytes, timeout: float | None = 10.0) -> bytes:
    fn = ch.unary_unary(f"/{SERVICE}/{method}")
    return fn(req, timeout=timeout)  # type: ignore[no-any-return]


def server_stream(ch: grpc.Channel, n: int) -> list[bytes]:
    fn = ch.unary_stream(f"/{SERVICE}/ServerStream")
    return list(fn(b"%d" % n, timeout=10))


def client_stream(ch: grpc.Channel, msgs: list[bytes]) -> bytes:
    fn = ch.stream_unary(f"/{SERVICE}/ClientStream")
    return fn(iter(msgs), timeout=10)  # type: ignore[no-any-return]


def bidi(ch: grpc.Channel, msgs: list[bytes]) -> list[bytes]:
    fn = ch.stream_stream(f"/{SERVICE}/Bidi")
    return list(fn(iter(msgs), timeout=10))


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


GRPC_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
