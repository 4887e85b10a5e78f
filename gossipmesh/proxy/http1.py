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

Framing is never negotiable (request smuggling). llhttp already refuses Transfer-Encoding together
with Content-Length, duplicate or list Content-Length, unknown codings, bare CR/LF line ends and
obs-fold. The reader adds what a proxy in front of other parsers must refuse as well, because
another parser could read the same bytes differently (``FramingError``, 400 and close):
Transfer-Encoding other than exactly ``chunked`` (``identity, chunked``, ``CHUNKED``), a body
coding on an HTTP/1.0 request, more than one Host, an HTTP version other than 1.0/1.1, and a
Connection header naming a field the proxy itself relies on (``PROTECTED``: the framing fields,
Host, the mesh's control fields): such a token would make the next hop lose the field.

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

import re

import httptools

END = None  # event: message complete


class ParseError(Exception):
    """The peer sent bytes that are not HTTP/1.x."""


class HeaderLimitError(ParseError):
    """Header block too large or too many headers (answer 431)."""


class FramingError(ParseError):
    """Framing another parser could read differently (request smuggling): answer 400, close."""


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

# Field names as received -> (lower-cased, slot in ``_INTERESTING`` or -1), for the names a
# process sees again and again (the same few on every request): one dict lookup instead of a
# ``lower()`` and a lookup per field, and the lower-cased name is one shared object whose hash is
# computed once (the drop checks of ``build_request_head`` hash it again). Bounded: names longer
# than ``MAX_CACHED_NAME`` bytes are never kept, and when ``MAX_CACHED_NAMES`` are kept (a peer
# sending ever new names) the cache starts again empty, as ``HEAD_MEMO`` does: a flood of junk
# costs a clear per 512 new names, and cannot keep the common names out for good.
MAX_CACHED_NAME = 64
MAX_CACHED_NAMES = 512
NAME_CACHE: dict[bytes, tuple[bytes, int]] = {}

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
# Fields a Connection header may never remove: the message's framing, its Host, and what the proxy
# reads or writes itself. A request naming one is refused (FramingError); a response naming one
# keeps it (only the proxy decides the framing toward the client).
PROTECTED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"x-gossipmesh-dest",
        b"x-gossipmesh-service",
        b"x-request-id",
        b"traceparent",
        b"x-forwarded-for",
        b"expect",
    }
)


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
    """A response head kept as the raw bytes the upstream sent (status line and header lines,
    without the final blank line): relaying it is then one regex pass that drops hop-by-hop
    lines, instead of a Python callback per header. ``headers`` parses it on demand."""

    __slots__ = (
        "status",
        "raw",
        "version",
        "keep_alive",
        "upgrade",
        "conn_tokens",
        "chunked",
        "content_length",
        "hop",
    )

    def __init__(self, raw: bytes = b"HTTP/1.1 200 OK", status: int = 200) -> None:
        self.status = status
        self.raw = raw
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.conn_tokens: tuple[bytes, ...] = ()
        self.chunked = False
        self.content_length: int | None = None
        self.hop = True  # raw may hold hop-by-hop lines (the reader clears this when it knows)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        out = []
        for line in self.raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
        return out

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"


def header_tokens(value: bytes) -> tuple[bytes, ...]:
    if b"," not in value:
        t = value.strip().lower()
        return (t,) if t else ()
    return tuple(t.strip().lower() for t in value.split(b",") if t.strip())


NO_HEAD = RequestHead()  # a reader's head before any request began (shared, never filled)


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
        "refusal",
    )

    def __init__(self, max_header_bytes: int = 65536, max_header_count: int = 100) -> None:
        self.events: list[object] = []
        self.pos = 0
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.refusal = ""  # why the framing was refused (FramingError), once it was
        # Made on the first byte: a connection that never sends one costs no parser.
        self._parser: httptools.HttpRequestParser | None = None
        self._head = NO_HEAD
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
        known = NAME_CACHE.get(name)
        if known is None:
            lname = name.lower()
            slot = _INTERESTING.get(lname, -1)
            if len(name) <= MAX_CACHED_NAME:
                if len(NAME_CACHE) >= MAX_CACHED_NAMES:
                    NAME_CACHE.clear()  # junk must not keep the common names out for good
                NAME_CACHE[name] = (lname, slot)
        else:
            lname, slot = known
        h = self._head
        h.headers.append((lname, value))
        if slot < 0:
            return
        if slot == H_HOST:
            if h.host:
                self._refuse("more than one Host field")
            h.host = value
        elif slot == H_CONN:
            h.conn_tokens += header_tokens(value)
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
            # llhttp refuses unknown codings and a second field; a list, or any spelling but
            # this one (llhttp has already cut the whitespace before it), is a coding another
            # parser may not agree on.
            if value != b"chunked":
                self._refuse("Transfer-Encoding must be exactly 'chunked'")
            h.chunked = True
            h.has_body = True
        elif slot == H_CL:
            h.has_body = value.strip() not in (b"0", b"")

    def on_headers_complete(self) -> None:
        p = self._parser
        assert p is not None
        h = self._head
        h.method = p.get_method()
        h.version = version = p.get_http_version()
        if version != "1.1":
            if version != "1.0":
                self._refuse(f"HTTP/{version} is not HTTP/1.x")
            if h.chunked:
                self._refuse("Transfer-Encoding in an HTTP/1.0 request")
        if h.conn_tokens:
            named = PROTECTED.intersection(h.conn_tokens)
            if named:
                self._refuse(f"Connection names {b', '.join(sorted(named)).decode()}")
        h.keep_alive = p.should_keep_alive()
        h.upgrade = p.should_upgrade()
        self._in_head = False
        self.events.append(h)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)

    def _refuse(self, why: str) -> None:
        self.refusal = why
        raise FramingError(why)

    # -- shell side ------------------------------------------------------------------------

    def feed(self, data: memoryview | bytes) -> None:
        """Parse ``data``; events accumulate. Raises ParseError / HeaderLimitError."""
        if self.pos and self.pos >= len(self.events):
            self.events.clear()
            self.pos = 0
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # Everything after the head belongs to the tunnel (WebSocket, CONNECT).
            offset = e.args[0] if e.args else len(data)
            self.upgrade_tail = bytes(data[offset:])
            return
        except httptools.HttpParserError as e:
            if self.too_large:
                raise HeaderLimitError(str(e)) from None
            if self.refusal:
                raise FramingError(self.refusal) from None
            raise ParseError(str(e) or type(e).__name__) from None
        if self._in_head:
            self._head_fed += len(data)
            if self._head_fed > self.max_header_bytes + 1024:
                self.too_large = True
                raise HeaderLimitError("header section never ended")

    def pending(self) -> bool:
        return self.pos < len(self.events)

    def in_head(self) -> bool:
        """A request head has begun and is not complete yet."""
        return self._in_head

    def idle(self) -> None:
        """Nothing is buffered and no request is under way: let go of the last request's head
        and events, so an idle keep-alive connection holds no per-request objects."""
        if self.pos >= len(self.events) and not self._in_head:
            self.events.clear()
            self.pos = 0
            self._head = NO_HEAD

    def close(self) -> None:
        """The connection ended: drop the parser. It holds this reader's callbacks, a reference
        cycle that only the cyclic GC would free: after 10,000 connections that is megabytes
        held until a full collection."""
        self._parser = None
        self.events.clear()
        self._head = NO_HEAD

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


RESP_HOP_RE = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade)"
    rb"[ \t]*:[^\r\n]*",
    re.IGNORECASE,
)
# Every response field the proxy acts on, in one pass: framing, and whether any hop-by-hop line
# is there to cut (most upstreams send at least ``Connection: keep-alive``; some send none).
RESP_FIELDS_RE = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer"
    rb"|upgrade)[ \t]*:[ \t]*([^\r\n]*)",
    re.IGNORECASE,
)
# Connection tokens that name no header to strip: plain options, and the protected fields (an
# upstream cannot make the proxy drop the Content-Length it frames the client's response with).
KEPT_CONN_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"}) | PROTECTED


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


def build_response_head(head: ResponseHead, extra: list[bytes]) -> bytes:
    """Status line (as HTTP/1.1) and the upstream's header lines minus hop-by-hop ones."""
    raw = head.raw
    if head.hop:
        raw = RESP_HOP_RE.sub(b"", raw)
    tokens = [t for t in head.conn_tokens if t not in KEPT_CONN_TOKENS] if head.conn_tokens else ()
    if tokens:
        named = re.compile(
            rb"\r\n(?:" + b"|".join(re.escape(t) for t in tokens) + rb")[ \t]*:[^\r\n]*",
            re.IGNORECASE,
        )
        raw = named.sub(b"", raw)
    if raw[:9] != b"HTTP/1.1 ":
        raw = b"HTTP/1.1" + raw[8:]
    if extra:
        return raw + b"\r\n" + b"".join(extra) + b"\r\n"
    return raw + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
