"""HTTP/1.1 responses from an upstream, parsed into events (``ResponseReader``).

The request side, the head types and the rules both directions share (hop-by-hop fields, the
protected fields a ``Connection`` token can never remove, the head patterns) are in ``http1.py``,
whose theory of operation covers this reader too.
"""

from __future__ import annotations

import contextlib

import httptools

from gossipmesh.proxy.http1 import (
    END,
    RESP_FIELDS_RE,
    HeaderLimitError,
    ParseError,
    ResponseHead,
    header_tokens,
)


class ResponseReader:
    """Parses one upstream connection's responses into events.

    httptools does the framing (where the body and the message end); the head is taken from the
    raw bytes. Upstreams are never pipelined, so a response head always starts at the first byte
    received after the previous response ended (or right after a 1xx head): the reader copies
    bytes into ``_headbuf`` only while a head is awaited and cuts the head at the blank line.

    ``at_boundary`` says whether the exchange ended exactly where its response did: a byte of
    anything after a final response (a second response the upstream should not have sent, the
    body of a HEAD answer) means the two sides disagree on framing, and the connection must not
    carry another request.
    """

    # mypyc (the compiled build, gossipmesh/buildinfo.py) allows ``del`` only of listed attributes.
    __deletable__ = ("_parser",)
    __slots__ = (
        "events",
        "pos",
        "_parser",
        "_headbuf",
        "_scan",
        "_need_head",
        "upgrade_tail",
        "max_header_bytes",
        "max_header_count",
        "_status",
        "_final_done",
        "_head_tail",
        "extra",
    )

    def __init__(self, max_header_bytes: int = 65536, max_header_count: int = 100) -> None:
        self.events: list[object] = []
        self.pos = 0
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self._parser = httptools.HttpResponseParser(self)
        self._headbuf = bytearray()
        self._scan = 0
        self._need_head = True
        self.upgrade_tail: bytes | None = None
        self._status = 0  # of the head being parsed
        self._final_done = False  # this exchange's final response ended
        self._head_tail = 0  # bytes received past the final head in the same reads
        self.extra = False  # bytes came after the final response: framing disagreement

    def reset(self) -> None:
        """Fresh parser state: after a HEAD response (llhttp cannot be told the body is absent).
        Any byte already received past its head was not part of it."""
        self._parser = httptools.HttpResponseParser(self)
        self.events.clear()
        self.pos = 0
        self._headbuf = bytearray()
        self._scan = 0
        self._need_head = True
        self._final_done = True
        self.extra = self.extra or self._head_tail > 0

    def at_boundary(self) -> bool:
        """True if nothing was received past the end of this exchange's response."""
        return not self.extra and not self._headbuf and self._need_head and not self.pending()

    def close(self) -> None:
        """The connection ended: drop the parser (see ``RequestReader.close``)."""
        with contextlib.suppress(AttributeError):
            del self._parser

    def next_exchange(self) -> None:
        """The connection carries a new request (it was at a boundary)."""
        self.events.clear()
        self.pos = 0
        self._final_done = False
        self._head_tail = 0

    def on_message_begin(self) -> None:
        if self._final_done:
            self.extra = True

    def on_headers_complete(self) -> None:
        buf = self._headbuf
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            raise ParseError("response head not at a message boundary")
        raw = bytes(buf[self._scan : end])
        if raw.count(b"\r\n") > self.max_header_count:
            raise HeaderLimitError("upstream sent too many headers")
        p = self._parser
        h = ResponseHead(raw, p.get_status_code())
        self._status = h.status
        h.version = p.get_http_version()
        h.keep_alive = p.should_keep_alive()
        h.upgrade = h.status == 101
        hop = False
        cl = None
        tokens: tuple[bytes, ...] = ()
        for name, value in RESP_FIELDS_RE.findall(raw):
            name = name.lower()
            if name == b"content-length":
                if cl is None:
                    cl = value.rstrip(b" \t")
                continue
            hop = True
            if name == b"connection":
                tokens += header_tokens(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                h.chunked = True
        if cl is not None and cl.isdigit():  # llhttp already refused a malformed length
            h.content_length = int(cl)
        h.conn_tokens = tokens
        h.hop = hop
        if 100 <= h.status < 200 and h.status != 101:
            self._scan = end + 4  # the final head follows right after an interim one
        else:
            self._need_head = False
            self._head_tail = len(buf) - end - 4
            self._headbuf = bytearray()
            self._scan = 0
        self.events.append(h)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)
        self._need_head = True
        if not 100 <= self._status < 200 or self._status == 101:
            self._final_done = True

    def feed(self, data: memoryview | bytes) -> None:
        if self.pos and self.pos >= len(self.events):
            self.events.clear()
            self.pos = 0
        if self._need_head:
            self._headbuf += data
            if len(self._headbuf) - self._scan > self.max_header_bytes + 1024 and (
                self._headbuf.find(b"\r\n\r\n", self._scan) < 0
            ):
                raise HeaderLimitError("upstream header section too large")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            self.upgrade_tail = bytes(data[offset:])
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__ or e.__cause__
            if isinstance(cause, ParseError):
                raise cause from None
            raise ParseError(str(e) or type(e).__name__) from None
        except httptools.HttpParserError as e:
            raise ParseError(str(e) or type(e).__name__) from None

    def pending(self) -> bool:
        return self.pos < len(self.events)

    def mid_message(self) -> bool:
        """True once any byte of a response has arrived (events of an earlier, finished
        response that are still in the list do not count)."""
        return bool(self._headbuf) or not self._need_head or self.pending()

    def pop(self) -> object:
        ev = self.events[self.pos]
        self.pos += 1
        return ev


# ---------------------------------------------------------------------------------------------
# Building heads for the next hop


__all__ = ["ResponseReader"]
