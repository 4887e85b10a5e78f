"""A small HTTP/1.1 + JSON server on h11 and trio, for the admin API.

Routes are a table of ``(method, path) -> handler``; a handler takes a ``Request`` and returns a
``JSONResponse`` or a ``StreamResponse`` (chunked, for ``/v1/monitor``), or raises ``HTTPError``.
Limits: request head ``MAX_HEADER_BYTES`` (431 beyond), body ``MAX_BODY_BYTES`` (413 beyond),
``REQUEST_TIMEOUT_S`` to receive a whole request (and to wait for the next one on a kept-alive
connection), ``SEND_TIMEOUT_S`` for each write to a client. Every error is JSON
``{"error", "detail"}``.

Slots. At most ``MAX_CONNECTIONS`` clients at once. When one more connects, the oldest connection
that is only *waiting* for a request (slow headers, an idle keep-alive) is closed to make room
(``admin.evicted``): an operator's command sends its request at once, so slow sockets can never
lock the CLI out, they only push each other out. Only connections running a handler or streaming
hold their slot; of those, at most ``MAX_MONITORS`` are ``/v1/monitor`` streams (one more is
``503 too_many_monitors``), and each monitor ends after ``MONITOR_MAX_S`` (the client reconnects)
or when a write to it takes longer than ``SEND_TIMEOUT_S`` (a client that stopped reading).

A JSON body is checked as a whole before any handler sees it (``Request.json``), so a value no
handler could use is a 400 naming its field (``retry.attempts``, ``destinations[0].weight``),
never a 500 from deep inside one: an integer of more than ``MAX_INT_DIGITS`` digits (Python
refuses to convert 4,301 and more), a number that is not finite (``1e999``, ``NaN``,
``Infinity``), a string that is not Unicode text (a lone surrogate ``"\ud800"`` cannot be stored
or sent), and nesting deeper than ``MAX_JSON_DEPTH``.

A ``Guard`` (agent/admin_auth.py) sees every request before its handler and may refuse it; with an
``ssl_context`` every connection is TLS (a non-loopback admin address, agent/admin_tls.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import h11
import trio

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
MAX_MONITORS = 16
MONITOR_MAX_S = 3600.0
SEND_TIMEOUT_S = 10.0
LINGER_S = 1.0
LINGER_MAX_BYTES = 4 * MAX_BODY_BYTES
MAX_INT_DIGITS = 100  # far above any count, size or time the API takes; below Python's 4,300
MAX_JSON_DEPTH = 64


class HTTPError(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(f"{status} {error}: {detail}")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (an empty body is ``{}``); 400 if it is not JSON, or holds a
        value no handler can use (``unusable_value``: the error names its field)."""
        if not self.body:
            return {}
        try:
            data = json.loads(
                self.body,
                parse_int=_parse_int,
                parse_float=_parse_float,
                parse_constant=_Unusable.not_a_number,
            )
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise HTTPError(
                400, "bad_value", f"body: nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        problem = unusable_value(data)
        if problem is not None:
            raise HTTPError(400, "bad_value", problem)
        return data

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", "request body must be a JSON object")
        return data


class _Unusable:
    """Stands in, while parsing, for a JSON value no handler can use (``reason`` says why)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @classmethod
    def not_a_number(cls, text: str) -> _Unusable:
        return cls(f"{text} is not a JSON number")


def _parse_int(text: str) -> int | _Unusable:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _Unusable(f"integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float | _Unusable:
    value = float(text)
    if not math.isfinite(value):
        return _Unusable(f"number {text[:40]} is out of range")
    return value


def unusable_value(data: Any) -> str | None:
    """``"FIELD: why"`` for the first value in parsed JSON ``data`` that no handler can use, else
    None. Iterative, so a deep document cannot exhaust the stack here either."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        where = path or "body"
        if isinstance(value, _Unusable):
            return f"{where}: {value.reason}"
        if isinstance(value, str):
            if not _is_text(value):
                return f"{where}: not valid Unicode text (a lone surrogate)"
            continue
        if isinstance(value, (dict, list)) and depth >= MAX_JSON_DEPTH:
            return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if not _is_text(key):
                    return f"{where}: a key is not valid Unicode text (a lone surrogate)"
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            for i in range(len(value) - 1, -1, -1):
                stack.append((value[i], f"{path}[{i}]", depth + 1))
    return None


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class JSONResponse:
    body: Any
    status: int = 200


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """A chunked response; the chunks iterator ends when the stream should end."""

    chunks: AsyncIterator[bytes]
    content_type: str = "application/x-ndjson"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (the dashboard's CSP)


Response = JSONResponse | StreamResponse
Handler = Callable[[Request], Awaitable[Response]]


class Guard(Protocol):
    def authorize(self, request: Request) -> None:
        """Return if ``request`` may reach its handler; else raise the ``HTTPError`` to send."""

    def tls_failed(self) -> None:
        """A client failed the TLS handshake (counted)."""


@dataclass
class Router:
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    # ``(method, "/v1/config/")`` serves every path under that prefix (the handler parses the
    # rest of ``request.path``); exact routes win, then the longest prefix.
    prefixes: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def add(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self.routes:
            raise ValueError(f"route {method} {path} already registered")
        self.routes[key] = handler

    def add_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        key = (method.upper(), prefix)
        if not prefix.endswith("/") or key in self.prefixes:
            raise ValueError(f"prefix route {method} {prefix} must end in / and be new")
        self.prefixes[key] = handler

    def resolve(self, method: str, path: str) -> Handler:
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler
        under = [p for (_, p) in self.prefixes if path.startswith(p) and len(path) > len(p)]
        if under:
            longest = max(under, key=len)
            handler = self.prefixes.get((method, longest))
            if handler is not None:
                return handler
            allowed = sorted(m for (m, p) in self.prefixes if p == longest)
            raise HTTPError(405, "method_not_allowed", f"{path} accepts {', '.join(allowed)}")
        allowed = sorted(m for (m, p) in self.routes if p == path)
        if allowed:
            raise HTTPError(405, "method_not_allowed", f"{path} accepts {', '.join(allowed)}")
        raise HTTPError(404, "not_found", f"no such endpoint {path}")


def _error_body(status: int, error: str, detail: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": error, "detail": detail}).encode() + b"\n"


@dataclass(slots=True)
class _Slot:
    """One client connection: whether it runs a handler (holds its slot) and what evicts it."""

    scope: trio.CancelScope
    busy: bool = False
    monitor: bool = False  # a capped stream (``HTTPServer.stream_caps``), ended at MONITOR_MAX_S
    stream: str = ""  # its path


class HTTPServer:
    def __init__(
        self,
        router: Router,
        on_error: Callable[[str, str], None] | None = None,
        *,
        guard: Guard | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.router = router
        self._on_error = on_error
        self.on_event: Callable[[str], None] | None = None  # told "evicted", "refused", ...
        self._guard = guard
        self._ssl = ssl_context
        self._slots: dict[int, _Slot] = {}  # in accept order
        self._next_id = 0
        self.counters: dict[str, int] = {"evicted": 0, "refused": 0, "monitors_refused": 0}
        self.monitor_path = "/v1/monitor"
        # Long-lived streams, each path with its own cap: (plural name, cap). ``/v1/tap`` is
        # added by the request streams (agent/tap.py) with ``add_stream_cap``.
        self.stream_caps: dict[str, tuple[str, int]] = {
            self.monitor_path: ("monitors", MAX_MONITORS)
        }

    @property
    def connections(self) -> int:
        return len(self._slots)

    @property
    def monitors(self) -> int:
        return self.streams(self.monitor_path)

    def streams(self, path: str) -> int:
        """Streams of ``path`` open now."""
        return sum(1 for slot in self._slots.values() if slot.stream == path)

    def add_stream_cap(self, path: str, name: str, cap: int) -> None:
        """At most ``cap`` streams of ``path`` at once (one more: ``503 too_many_NAME``)."""
        self.stream_caps[path] = (name, cap)
        self.counters.setdefault(f"{name}_refused", 0)

    def _make_room(self) -> bool:
        """Close the oldest connection that only waits for a request; False if all are busy."""
        for sid, slot in self._slots.items():
            if not slot.busy:
                del self._slots[sid]
                slot.scope.cancel()
                self.counters["evicted"] += 1
                if self.on_event is not None:
                    self.on_event("evicted")
                return True
        return False

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.serve_listeners(self.handle_connection, listeners, task_status=task_status)

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        if len(self._slots) >= MAX_CONNECTIONS and not self._make_room():
            self.counters["refused"] += 1
            if self.on_event is not None:
                self.on_event("refused")
            await stream.aclose()
            return
        self._next_id += 1
        sid = self._next_id
        slot = self._slots[sid] = _Slot(trio.CancelScope())
        try:
            with slot.scope:
                async with stream:
                    await self._serve_connection(stream, slot)
        finally:
            self._slots.pop(sid, None)

    async def _serve_connection(self, stream: trio.abc.Stream, slot: _Slot) -> None:
        if self._ssl is None:
            await self._serve(stream, slot)
            return
        tls = trio.SSLStream(stream, self._ssl, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            if self._guard is not None:
                self._guard.tls_failed()
            return
        try:
            await self._serve(tls, slot)
        finally:
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError
            ):
                with trio.fail_after(SEND_TIMEOUT_S):
                    await tls.aclose()  # a TLS close_notify before the socket closes

    async def _serve(self, stream: trio.abc.Stream, slot: _Slot) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                slot.busy = False
                keep = await self._one_request(conn, stream, slot)
                if not keep or conn.our_state is not h11.DONE:
                    return
                if conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return
        except trio.TooSlowError:
            return  # a write the client did not take within SEND_TIMEOUT_S

    async def _one_request(
        self, conn: h11.Connection, stream: trio.abc.Stream, slot: _Slot
    ) -> bool:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                request = await self._read_request(conn, stream)
        except trio.TooSlowError:
            if conn.our_state is h11.SEND_RESPONSE:
                await self._send_json(
                    conn, stream, *_error_body(408, "timeout", "request too slow")
                )
            return False
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            error = "headers_too_large" if status == 431 else "bad_request"
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send_raw_error(stream, status, error, str(exc))
            return False
        except HTTPError as exc:
            await self._send_json(conn, stream, *_error_body(exc.status, exc.error, exc.detail))
            await _linger(stream)
            return False
        if request is None:
            return False
        slot.busy = True  # from here on this connection holds its slot
        try:
            if self._guard is not None:
                self._guard.authorize(request)  # before anything can act on the request
            capped = self.stream_caps.get(request.path)
            if capped is not None:
                name, cap = capped
                if self.streams(request.path) >= cap:
                    self.counters[f"{name}_refused"] += 1
                    raise HTTPError(503, f"too_many_{name}", f"at most {cap} {name[:-1]} streams")
                slot.monitor = True
                slot.stream = request.path
            handler = self.router.resolve(request.method, request.path)
            response = await handler(request)
        except HTTPError as exc:
            await self._send_json(conn, stream, *_error_body(exc.status, exc.error, exc.detail))
            return True
        except Exception as exc:  # a handler bug must not kill the admin server
            if self._on_error is not None:
                self._on_error(request.path, repr(exc))
            await self._send_json(conn, stream, *_error_body(500, "internal", repr(exc)))
            return False
        if isinstance(response, JSONResponse):
            body = json.dumps(response.body).encode() + b"\n"
            await self._send_json(conn, stream, response.status, body)
            return True
        with trio.move_on_after(MONITOR_MAX_S if slot.monitor else math.inf):
            await self._send_stream(conn, stream, response)
        return False

    async def _read_request(self, conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(bytes(data))
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
                # h11 bounds only a head still arriving; one that came in whole is checked here.
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > MAX_HEADER_BYTES:
                    raise HTTPError(431, "headers_too_large", f"limit is {MAX_HEADER_BYTES} bytes")
                length = _header(event, b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                    raise HTTPError(413, "body_too_large", f"limit is {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise HTTPError(413, "body_too_large", f"limit is {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode("ascii", "replace"))
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
                return Request(
                    method=head.method.decode("ascii", "replace"),
                    path=target.path,
                    query=parse_qs(target.query),
                    headers=headers,
                    body=bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send_json(
        self, conn: h11.Connection, stream: trio.abc.Stream, status: int, body: bytes
    ) -> None:
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        if status >= 400 and conn.their_state is not h11.DONE:
            headers.append(("connection", "close"))
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers))
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        with trio.fail_after(SEND_TIMEOUT_S):
            await stream.send_all(out)

    async def _send_raw_error(
        self, stream: trio.abc.Stream, status: int, error: str, detail: str
    ) -> None:
        # h11 refuses to respond after a protocol error it raised, so write a minimal response.
        _, body = _error_body(status, error, detail)
        reason = {431: "Request Header Fields Too Large", 400: "Bad Request"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        with trio.fail_after(SEND_TIMEOUT_S):
            await stream.send_all(head + body)

    async def _send_stream(
        self, conn: h11.Connection, stream: trio.abc.Stream, response: StreamResponse
    ) -> None:
        headers = [("content-type", response.content_type), ("cache-control", "no-cache"),
                   *response.headers]  # fmt: skip
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        with trio.fail_after(SEND_TIMEOUT_S):
            await stream.send_all(data or b"")
        async with trio.open_nursery() as nursery:

            async def watch_close() -> None:
                # The client hanging up is the only way a monitor ends; notice it even when no
                # events are flowing.
                while True:
                    try:
                        chunk = await stream.receive_some(4096)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        chunk = b""
                    if not chunk:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_close)
            try:
                async for chunk in response.chunks:
                    if chunk:
                        with trio.fail_after(SEND_TIMEOUT_S):
                            await stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
                with trio.fail_after(SEND_TIMEOUT_S):
                    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            finally:
                nursery.cancel_scope.cancel()


async def _linger(stream: trio.abc.Stream) -> None:
    """Discard what the client is still sending (bounded in bytes and time) before closing, so it
    reads our error instead of a connection reset."""
    with trio.move_on_after(LINGER_S):
        if isinstance(stream, trio.SocketStream):
            await stream.send_eof()
        drained = 0
        while drained < LINGER_MAX_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                return
            drained += len(data)


def _header(event: h11.Request, name: bytes) -> str | None:
    for k, v in event.headers:
        if k == name:
            return v.decode("latin-1")
    return None
