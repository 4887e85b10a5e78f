"""Real HTTP backends and a tiny client on loopback, for the proxy's integration tests.

Backends are h11 servers (an independent HTTP implementation, so the proxy's codec is checked
against someone else's). Paths:

- ``/name``            → 200, body = backend name
- ``/upload`` (POST)   → 200, body = ``sha256hex length`` of the streamed request body
- ``/big?n=N``         → 200, chunked, N bytes of a repeating pattern
- ``/slow?ms=N``       → sleeps, then 200
- ``/status/N``        → status N
- ``/echo-headers``    → 200, body = the request headers as ``name: value`` lines
- ``/echo/ANYTHING``   → 200, body = the request target (each request's own answer)
- ``/ws``              → 101 on ``Upgrade``, then echoes raw bytes
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from gossipmesh.config.schema import RouteConfig, ServiceConfig, validate_entity
from gossipmesh.proxy.server import Proxy, ProxyAddresses
from gossipmesh.proxy.table import Endpoint, RouteTable, build_route_table

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


@dataclass
class Backend:
    name: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: int = 0
    delay_s: float = 0.0
    seen_headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    seen_targets: list[bytes] = field(default_factory=list)
    _scope: trio.CancelScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                await trio.serve_listeners(self._conn, listeners, handler_nursery=nursery)

    def kill(self) -> None:
        """Stop listening and drop every connection (connect now fails: ECONNREFUSED)."""
        assert self._scope is not None
        self._scope.cancel()

    async def _conn(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=128 * 1024)
        try:
            while True:
                ev = await _next(conn, stream)
                if isinstance(ev, h11.ConnectionClosed):
                    return
                assert isinstance(ev, h11.Request), ev
                await self._handle(conn, stream, ev)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                if conn.our_state is h11.SWITCHED_PROTOCOL:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()

    async def _handle(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> None:
        self.requests += 1
        self.seen_headers.append(list(req.headers))
        self.seen_targets.append(req.target)
        target = req.target.decode()
        path, _, query = target.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        digest = hashlib.sha256()
        length = 0
        while True:
            ev = await _next(conn, stream)
            if isinstance(ev, h11.Data):
                digest.update(ev.data)
                length += len(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                break
            else:
                return
        if self.delay_s:
            await trio.sleep(self.delay_s)
        if path == "/ws" and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            await _send(
                conn,
                stream,
                h11.InformationalResponse(
                    status_code=101, headers=[("upgrade", "echo"), ("connection", "upgrade")]
                ),
            )
            data, _ = conn.trailing_data
            if data:
                await stream.send_all(data)
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                await stream.send_all(chunk)
        if path == "/slow":
            await trio.sleep(int(params.get("ms", "1000")) / 1000)
        if path == "/status" or path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            await _respond(conn, stream, code, f"{self.name} {code}".encode())
            return
        if path == "/upload":
            await _respond(conn, stream, 200, f"{digest.hexdigest()} {length}".encode())
            return
        if path == "/big":
            n = int(params.get("n", "1000"))
            await _send(
                conn,
                stream,
                h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]),
            )
            if req.method != b"HEAD":
                sent = 0
                while sent < n:
                    piece = PATTERN[: min(len(PATTERN), n - sent)]
                    await _send(conn, stream, h11.Data(data=piece))
                    sent += len(piece)
            await _send(conn, stream, h11.EndOfMessage())
            return
        if path.startswith("/echo/"):
            await _respond(conn, stream, 200, req.target)
            return
        if path == "/echo-headers":
            body = b"".join(n + b": " + v + b"\n" for n, v in req.headers)
            await _respond(conn, stream, 200, body)
            return
        await _respond(conn, stream, 200, self.name.encode(), head=req.method == b"HEAD")


async def _next(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        return ev


async def _send(conn: h11.Connection, stream: trio.SocketStream, ev: Any) -> None:
    data = conn.send(ev)
    if data:
        await stream.send_all(data)


async def _respond(
    conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes, head: bool = False
) -> None:
    await _send(
        conn, stream, h11.Response(status_code=status, headers=[("content-length", str(len(body)))])
    )
    if not head:
        await _send(conn, stream, h11.Data(data=body))
    await _send(conn, stream, h11.EndOfMessage())


# ---------------------------------------------------------------------------------------------
# Client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """A keep-alive HTTP/1.1 client over one connection (h11)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=128 * 1024)

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> Client:
        return cls(await trio.open_tcp_stream(*addr))

    async def request(
        self,
        method: str,
        target: str,
        host: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | AsyncIterator[bytes] | None = None,
        chunked: bool = False,
    ) -> Reply:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("host", host), *headers]
        if isinstance(body, bytes):
            hdrs.append(("content-length", str(len(body))))
        elif body is not None and chunked:
            hdrs.append(("transfer-encoding", "chunked"))
        await _send(self.conn, self.stream, h11.Request(method=method, target=target, headers=hdrs))
        if isinstance(body, bytes):
            if body:
                await _send(self.conn, self.stream, h11.Data(data=body))
        elif body is not None:
            async for piece in body:
                await _send(self.conn, self.stream, h11.Data(data=piece))
        await _send(self.conn, self.stream, h11.EndOfMessage())
        resp = await _next(self.conn, self.stream)
        while isinstance(resp, h11.InformationalResponse):
            resp = await _next(self.conn, self.stream)
        assert isinstance(resp, h11.Response), resp
        out = bytearray()
        while True:
            ev = await _next(self.conn, self.stream)
            if isinstance(ev, h11.Data):
                out += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            else:
                raise AssertionError(ev)
        return Reply(
            resp.status_code,
            {n.decode(): v.decode() for n, v in resp.headers},
            bytes(out),
        )

    async def aclose(self) -> None:
        await self.stream.aclose()


async def get(addr: tuple[str, int], target: str, host: str, **kw: object) -> Reply:
    c = await Client.open(addr)
    try:
        return await c.request("GET", target, host, **kw)  # type: ignore[arg-type]
    finally:
        await c.aclose()


async def raw_exchange(
    addr: tuple[str, int], data: bytes, until_close: bool = True, max_s: float = 5.0
) -> bytes:
    """Send raw bytes, read until the peer closes (or ``max_s``)."""
    stream = await trio.open_tcp_stream(*addr)
    out = bytearray()
    with trio.move_on_after(max_s):
        await stream.send_all(data)
        if until_close:
            await stream.send_eof()
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                break
    await stream.aclose()
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# A two-agent mesh: app -> A outbound -> B inbound -> backends


@dataclass
class Mesh:
    a: Proxy
    b: Proxy
    a_addr: ProxyAddresses
    b_addr: ProxyAddresses
    backends: dict[str, list[Backend]]

    @property
    def outbound(self) -> tuple[str, int]:
        assert self.a_addr.outbound is not None
        return self.a_addr.outbound

    def endpoints(
        self, tags: Mapping[str, tuple[str, ...]] | None = None
    ) -> dict[str, list[Endpoint]]:
        assert self.b_addr.inbound is not None
        inbound = self.b_addr.inbound
        tags = tags or {}
        return {
            svc: [
                Endpoint("b", be.host, be.port, tags=tags.get(be.name, ()), inbound=inbound)
                for be in bes
            ]
            for svc, bes in self.backends.items()
        }

    def set_table(
        self,
        services: Mapping[str, ServiceConfig] | None = None,
        routes: Mapping[str, RouteConfig] | None = None,
        tags: Mapping[str, tuple[str, ...]] | None = None,
    ) -> RouteTable:
        table = build_route_table(services or {}, routes or {}, self.endpoints(tags))
        self.a.update_table(table)
        self.b.update_table(table)
        return table


async def start_mesh(
    nursery: trio.Nursery,
    backends: Mapping[str, Sequence[str]],
    **proxy_kw: object,
) -> Mesh:
    started: dict[str, list[Backend]] = {}
    for svc, names in backends.items():
        started[svc] = []
        for name in names:
            be = Backend(name)
            await nursery.start(be.run)
            started[svc].append(be)
    b = Proxy(
        outbound=None,
        inbound=("127.0.0.1", 0),
        local_services={svc: [(be.host, be.port) for be in bes] for svc, bes in started.items()},
    )
    b_addr = await nursery.start(b.serve)
    a = Proxy(outbound=("127.0.0.1", 0), inbound=None, **proxy_kw)  # type: ignore[arg-type]
    a_addr = await nursery.start(a.serve)
    mesh = Mesh(a, b, a_addr, b_addr, started)
    mesh.set_table()
    return mesh


def service(name: str, body: Mapping[str, Any]) -> ServiceConfig:
    cfg = validate_entity("service", name, dict(body))
    assert isinstance(cfg, ServiceConfig)
    return cfg


def route(name: str, body: Mapping[str, Any]) -> RouteConfig:
    cfg = validate_entity("route", name, dict(body))
    assert isinstance(cfg, RouteConfig)
    return cfg
