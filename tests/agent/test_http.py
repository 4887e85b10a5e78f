"""The admin HTTP server alone: routing, JSON errors, limits, streaming. No SWIM core needed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from gossipmesh.agent.http import (
    MAX_BODY_BYTES,
    HTTPServer,
    JSONResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)


async def echo(req: Request) -> Response:
    return JSONResponse({"got": req.json_object()})


async def ticks(req: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield json.dumps({"i": i}).encode() + b"\n"

    return StreamResponse(chunks())


async def boom(req: Request) -> Response:
    raise RuntimeError("bug")


async def serve(nursery: trio.Nursery) -> int:
    router = Router()
    router.add("POST", "/v1/echo", echo)
    router.add("GET", "/v1/ticks", ticks)
    router.add("GET", "/v1/boom", boom)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(HTTPServer(router).serve, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        buf = b""
        with trio.fail_after(5):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                buf += chunk
                if b"\r\n\r\n" in buf:
                    head, _, body = buf.partition(b"\r\n\r\n")
                    headers = _headers(head)
                    if "content-length" in headers and len(body) >= int(headers["content-length"]):
                        break
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, _headers(head), body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{extra}"
        "connection: close\r\n\r\n"
    ).encode() + body


def error_of(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"error", "detail"}
    return dict(data)


async def test_json_round_trip(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, _, body = await raw(port, post("/v1/echo", b'{"a": 1}'))
    assert status == 200 and json.loads(body) == {"got": {"a": 1}}


async def test_bad_json_is_400(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, _, body = await raw(port, post("/v1/echo", b"{not json"))
    assert status == 400 and error_of(body)["error"] == "bad_json"
    status, _, body = await raw(port, post("/v1/echo", b"[1, 2]"))
    assert status == 400 and error_of(body)["error"] == "bad_request"


async def test_oversized_body_is_413_without_reading_it(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    head = (
        f"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    status, _, body = await raw(port, head + b"x" * 1000)
    assert status == 413 and error_of(body)["error"] == "body_too_large"


async def test_oversized_headers_are_431(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    big = "x-pad: " + "a" * 20_000 + "\r\n"
    status, _, body = await raw(port, post("/v1/echo", b"{}", extra=big))
    assert status == 431 and error_of(body)["error"] == "headers_too_large"


async def test_unknown_path_and_method(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, _, body = await raw(port, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 404 and error_of(body)["error"] == "not_found"
    status, _, body = await raw(port, b"GET /v1/echo HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 405 and "POST" in error_of(body)["detail"]


async def test_garbage_request_is_400(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, _, body = await raw(port, b"\x00\x01 not http\r\n\r\n")
    assert status == 400


async def test_handler_bug_is_500_and_server_survives(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, _, body = await raw(port, b"GET /v1/boom HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 500 and error_of(body)["error"] == "internal"
    status, _, _ = await raw(port, post("/v1/echo", b"{}"))
    assert status == 200


async def test_streaming_response_is_chunked_json_lines(nursery: trio.Nursery) -> None:
    port = await serve(nursery)
    status, headers, body = await raw(port, b"GET /v1/ticks HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    lines = [json.loads(line) for line in body.split(b"\r\n") if line.startswith(b"{")]
    assert lines == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_a_capped_stream_path_refuses_one_more(nursery: trio.Nursery) -> None:
    """``add_stream_cap`` (``/v1/tap`` uses it, as ``/v1/monitor`` does): at most N open."""
    gate = trio.Event()

    async def forever(req: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"{}\n"
            await gate.wait()

        return StreamResponse(chunks())

    router = Router()
    router.add("GET", "/v1/tap", forever)
    server = HTTPServer(router)
    server.add_stream_cap("/v1/tap", "taps", 2)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(server.serve, listeners)
    port = int(listeners[0].socket.getsockname()[1])
    streams = []
    for _ in range(2):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"GET /v1/tap HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in await s.receive_some(4096)
        streams.append(s)
    assert server.streams("/v1/tap") == 2 and server.monitors == 0
    status, _, body = await raw(
        port, b"GET /v1/tap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 503 and json.loads(body)["error"] == "too_many_taps"
    assert server.counters["taps_refused"] == 1
    gate.set()
    for s in streams:
        await s.aclose()
