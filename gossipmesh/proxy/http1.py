"""HTTP/1.1 codec adapter over httptools: parse into events, rebuild heads for the next hop.

Theory of operation
-------------------
httptools (llhttp) is callback-driven: ``feed_data`` runs every callback for the bytes given before
it returns, and a callback cannot await. So the reader's callbacks only *append events* to a list
— a head object, a body chunk (``bytes``), or ``END`` — and the I/O shell consumes them in order
after each feed. Memory per connection is therefore bounded by one receive buffer: a 20 MB upload
becomes a sequence of <= 64 KiB chunks that are forwarded as they arrive, never accumulated.
Pipelined requests simply queue up as further events and are answered in order, because one task
serves a connection sequentially.

Limits: at most ``max_header_count`` headers and ``max_header_bytes`` for request line plus header
block (a header section still open after that many bytes is refused too, so one enormous header
cannot grow llhttp's internal buffer without bound). Breaking a limit raises ``HeaderLimitError``
(431); any parse error raises ``ParseError`` (400).

The things a proxy needs from headers are picked out while parsing (one dict lookup per header):
Host, Connection tokens, Expect, x-request-id, traceparent, x-forwarded-for, the mesh destination.
Names are stored lower-case; HTTP field names are case-insensitive and lower-case is what h2/h3 use.

Heads for the next hop are rebuilt, not copied: hop-by-hop fields (RFC 9110 §7.6.1: Connection and
every field it names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade) are
dropped, and framing is re-applied by the proxy (a chunked body is re-chunked as it streams; a
Content-Length body keeps its length). Upgrade/Connection are re-added only for a tunnel.
"""

from __future__ import annotations

from random import Random

import httptools

END = None  # event: message complete


class ParseError(Exception):
    """The peer sent bytes that are not HTTP/1.x."""


class HeaderLimitError(ParseError):
    """Header block too large or too many headers (answer 431)."""


# Interesting request/response header names -> slot number in the head.
H_HOST, H_CONN, H_EXPECT, H_RID, H_TRACE, H_XFF, H_DEST, H_SVC, H_TE, H_CL = range(10)
_INTERESTING = {
    b"host": H_HOST,
    b"connection": H_CONN,
    b"expect": H_EXPECT,
    b"x-request-id": H_RID,
    b"traceparent": H_TRACE,
    b"x-forwarded-for": H_XFF,
    b"x-gossipmesh-dest": H_DEST,
    b"x-gossipmesh-service": H_SVC,
    b"transfer-encoding": H_TE,
    b"content-length": H_CL,
}

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Dropped from every forwarded request head: hop-by-hop, plus the fields this proxy rewrites, plus
# the mesh's own control fields (an app must not be able to pick the destination instance).
_REQ_DROP = HOP_BY_HOP | {
    b"expect",
    b"traceparent",
    b"x-forwarded-for",
    b"x-gossipmesh-dest",
    b"x-gossipmesh-service",
}
_RESP_DROP = HOP_BY_HOP


class RequestHead:
    __slots__ = (
        "method",
        "url",
        "headers",
        "version",
        "keep_alive",
        "upgrade",
        "host",
        "conn_tokens",
        "expect_continue",
        "request_id",
        "traceparent",
        "xff",
        "dest",
        "service",
        "chunked",
        "has_body",
        "body_done",
    )

    def __init__(self) -> None:
        self.body_done = False
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.host = b""
        self.conn_tokens: tuple[bytes, ...] = ()
        self.expect_continue = False
        self.request_id = b""
        self.traceparent = b""
        self.xff = b""
        self.dest = b""
        self.service = b""
        self.chunked = False
        self.has_body = False

    def __repr__(self) -> str:
        return f"<RequestHead {self.method!r} {self.url!r} host={self.host!r}>"


class ResponseHead:
    __slots__ = (
        "status",
        "reason",
        "headers",
        "version",
        "keep_alive",
        "upgrade",
        "conn_tokens",
        "chunked",
        "content_length",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.conn_tokens: tuple[bytes, ...] = ()
        self.chunked = False
        self.content_length: int | None = None

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} {self.reason!r}>"


def _tokens(value: bytes) -> tuple[bytes, ...]:
    return tuple(t.strip().lower() for t in value.split(b",") if t.strip())


class RequestReader:
    """Feeds bytes to httptools and exposes the events. One per downstream connection."""

    __slots__ = (
        "events",
        "pos",
        "_parser",
        "_head",
        "_count",
        "_bytes",
        "_in_head",
        "_head_fed",
        "max_header_bytes",
        "max_header_count",
        "upgrade_tail",
        "too_large",
    )

    def __init__(self, max_header_bytes: int = 65536, max_header_count: int = 100) -> None:
        self.events: list[object] = []
        self.pos = 0
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self._parser = httptools.HttpRequestParser(self)
        self._head = RequestHead()
        self._count = 0
        self._bytes = 0
        self._in_head = False
        self._head_fed = 0
        self.upgrade_tail: bytes | None = None
        self.too_large = False

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head = RequestHead()
        self._count = 0
        self._bytes = 0
        self._in_head = True
        self._head_fed = 0

    def on_url(self, url: bytes) -> None:
        h = self._head
        h.url += url
        self._bytes += len(url)
        if self._bytes > self.max_header_bytes:
            self.too_large = True
            raise HeaderLimitError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        self._bytes += len(name) + len(value) + 4
        if self._count > self.max_header_count or self._bytes > self.max_header_bytes:
            self.too_large = True
            raise HeaderLimitError("too many or too large headers")
        lname = name.lower()
        h = self._head
        h.headers.append((lname, value))
        slot = _INTERESTING.get(lname)
        if slot is None:
            return
        if slot == H_HOST:
            h.host = value
        elif slot == H_CONN:
            h.conn_tokens += _tokens(value)
        elif slot == H_EXPECT:
            h.expect_continue = value.strip().lower() == b"100-continue"
        elif slot == H_RID:
            h.request_id = value
        elif slot == H_TRACE:
            h.traceparent = value
        elif slot == H_XFF:
            h.xff = value if not h.xff else h.xff + b", " + value
        elif slot == H_DEST:
            h.dest = value
        elif slot == H_SVC:
            h.service = value
        elif slot == H_TE:
            h.chunked = True  # llhttp refuses any other transfer coding for requests
            h.has_body = True
        elif slot == H_CL:
            h.has_body = value.strip() not in (b"0", b"")

    def on_headers_complete(self) -> None:
        p = self._parser
        h = self._head
        h.method = p.get_method()
        h.version = p.get_http_version()
        h.keep_alive = p.should_keep_alive()
        h.upgrade = p.should_upgrade()
        self._in_head = False
        self.events.append(h)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)

    # -- shell side ------------------------------------------------------------------------

    def feed(self, data: memoryview | bytes) -> None:
        """Parse ``data``; events accumulate. Raises ParseError / HeaderLimitError."""
        if self.pos and self.pos >= len(self.events):
            self.events.clear()
            self.pos = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # Everything after the head belongs to the tunnel (WebSocket, CONNECT).
            offset = e.args[0] if e.args else len(data)
            self.upgrade_tail = bytes(data[offset:])
            return
        except httptools.HttpParserError as e:
            if self.too_large:
                raise HeaderLimitError(str(e)) from None
            raise ParseError(str(e) or type(e).__name__) from None
        if self._in_head:
            self._head_fed += len(data)
            if self._head_fed > self.max_header_bytes + 1024:
                self.too_large = True
                raise HeaderLimitError("header section never ended")

    def pending(self) -> bool:
        return self.pos < len(self.events)

    def pop(self) -> object:
        ev = self.events[self.pos]
        self.pos += 1
        return ev

    def body_complete_buffered(self) -> bool:
        """True if END for the current message is already among the queued events."""
        events = self.events
        for i in range(self.pos, len(events)):
            ev = events[i]
            if ev is END:
                return True
            if type(ev) is not bytes:
                return False
        return False


class ResponseReader:
    """Parses one upstream connection's responses into events."""

    __slots__ = (
        "events",
        "pos",
        "_parser",
        "_head",
        "_count",
        "_bytes",
        "upgrade_tail",
        "max_header_bytes",
        "max_header_count",
        "_in_head",
        "_head_fed",
    )

    def __init__(self, max_header_bytes: int = 65536, max_header_count: int = 100) -> None:
        self.events: list[object] = []
        self.pos = 0
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self._parser = httptools.HttpResponseParser(self)
        self._head = ResponseHead()
        self._count = 0
        self._bytes = 0
        self._in_head = False
        self._head_fed = 0
        self.upgrade_tail: bytes | None = None

    def reset(self) -> None:
        """Fresh parser state: after a HEAD response (llhttp cannot be told the body is absent)."""
        self._parser = httptools.HttpResponseParser(self)
        self.events.clear()
        self.pos = 0

    def on_message_begin(self) -> None:
        self._head = ResponseHead()
        self._count = 0
        self._bytes = 0
        self._in_head = True
        self._head_fed = 0

    def on_status(self, reason: bytes) -> None:
        self._head.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        self._bytes += len(name) + len(value) + 4
        if self._count > self.max_header_count or self._bytes > self.max_header_bytes:
            raise HeaderLimitError("upstream response headers too large")
        lname = name.lower()
        h = self._head
        h.headers.append((lname, value))
        if lname == b"connection":
            h.conn_tokens += _tokens(value)
        elif lname == b"transfer-encoding":
            h.chunked = value.strip().lower().endswith(b"chunked")
        elif lname == b"content-length":
            try:
                h.content_length = int(value)
            except ValueError:
                raise ParseError("bad content-length") from None

    def on_headers_complete(self) -> None:
        p = self._parser
        h = self._head
        h.status = p.get_status_code()
        h.version = p.get_http_version()
        h.keep_alive = p.should_keep_alive()
        h.upgrade = h.status == 101
        self._in_head = False
        self.events.append(h)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)

    def feed(self, data: memoryview | bytes) -> None:
        if self.pos and self.pos >= len(self.events):
            self.events.clear()
            self.pos = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            self.upgrade_tail = bytes(data[offset:])
        except httptools.HttpParserError as e:
            raise ParseError(str(e) or type(e).__name__) from None
        if self._in_head:
            self._head_fed += len(data)
            if self._head_fed > self.max_header_bytes + 1024:
                raise HeaderLimitError("upstream header section never ended")

    @property
    def in_message(self) -> bool:
        """A response head was seen and its END not yet."""
        return bool(self.events) and self.events[-1] is not END

    def pending(self) -> bool:
        return self.pos < len(self.events)

    def pop(self) -> object:
        ev = self.events[self.pos]
        self.pos += 1
        return ev


# ---------------------------------------------------------------------------------------------
# Building heads for the next hop


def new_request_id(rng: Random) -> bytes:
    return b"%032x" % rng.getrandbits(128)


def next_traceparent(incoming: bytes, rng: Random) -> bytes:
    """W3C trace context: keep trace-id and flags, new parent-id (this hop's span)."""
    span = b"%016x" % (rng.getrandbits(64) or 1)
    parts = incoming.strip().split(b"-")
    if (
        len(parts) >= 4
        and len(parts[0]) == 2
        and len(parts[1]) == 32
        and len(parts[2]) == 16
        and len(parts[3]) == 2
        and parts[1] != b"0" * 32
        and parts[0] != b"ff"
    ):
        try:
            int(parts[1], 16)
            int(parts[3], 16)
        except ValueError:
            pass
        else:
            return b"00-" + parts[1].lower() + b"-" + span + b"-" + parts[3].lower()
    trace = b"%032x" % (rng.getrandbits(128) or 1)
    return b"00-" + trace + b"-" + span + b"-01"


def build_request_head(
    head: RequestHead,
    target: bytes,
    extra: list[bytes],
) -> bytes:
    """Request line + filtered headers + ``extra`` (complete ``name: value\\r\\n`` lines)."""
    drop = _REQ_DROP
    tokens = head.conn_tokens
    parts = [head.method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in head.headers:
        if name in drop or (tokens and name in tokens):
            continue
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    parts.extend(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    404: b"Not Found",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def build_response_head(head: ResponseHead, extra: list[bytes]) -> bytes:
    drop = _RESP_DROP
    tokens = head.conn_tokens
    reason = head.reason or _REASONS.get(head.status, b"")
    parts = [b"HTTP/1.1 %d " % head.status, reason, b"\r\n"]
    for name, value in head.headers:
        if name in drop or (tokens and name in tokens):
            continue
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    parts.extend(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
