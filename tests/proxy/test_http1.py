"""The httptools adapter: events, limits, hop-by-hop filtering."""

from __future__ import annotations

import pytest

from gossipmesh.proxy.http1 import (
    END,
    MAX_CACHED_NAME,
    MAX_CACHED_NAMES,
    NAME_CACHE,
    FramingError,
    HeaderLimitError,
    ParseError,
    RequestHead,
    RequestReader,
    ResponseHead,
    build_request_head,
    build_response_head,
)
from gossipmesh.proxy.http1_response import ResponseReader


def feed_all(data: bytes, **kw: int) -> RequestReader:
    r = RequestReader(**kw)
    r.feed(data)
    return r


def test_pipelined_requests_become_ordered_events() -> None:
    r = feed_all(
        b"GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /c HTTP/1.0\r\n\r\n"
    )
    kinds = []
    while r.pending():
        ev = r.pop()
        kinds.append(ev.url if isinstance(ev, RequestHead) else ev)
    assert kinds == [b"/a", END, b"/b", b"abc", END, b"/c", END]


def test_head_fields_picked_out() -> None:
    r = feed_all(
        b"GET / HTTP/1.1\r\nHost: API:80\r\nConnection: keep-alive, X-Drop\r\n"
        b"Expect: 100-continue\r\nX-Request-Id: r1\r\nX-Forwarded-For: 1.1.1.1\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    h = r.pop()
    assert isinstance(h, RequestHead)
    assert h.host == b"API:80" and h.request_id == b"r1" and h.expect_continue
    assert h.conn_tokens == (b"keep-alive", b"x-drop") and h.has_body and h.keep_alive
    assert r.body_complete_buffered()


def test_body_not_complete_until_end() -> None:
    r = RequestReader()
    r.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    r.pop()
    assert not r.body_complete_buffered()


def test_header_count_limit() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(HeaderLimitError):
        feed_all(data)


def test_header_size_limit_even_without_end_of_headers() -> None:
    r = RequestReader(max_header_bytes=4096)
    r.feed(b"GET / HTTP/1.1\r\nX-Big: ")
    with pytest.raises(HeaderLimitError):
        for _ in range(10):
            r.feed(b"a" * 1024)


def test_garbage_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        feed_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    with pytest.raises(ParseError):
        feed_all(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_upgrade_tail_kept() -> None:
    r = feed_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nRAW")
    h = r.pop()
    assert isinstance(h, RequestHead) and h.upgrade
    assert r.upgrade_tail == b"RAW"


def test_request_head_drops_hop_by_hop_and_connection_listed() -> None:
    r = feed_all(
        b"GET /p HTTP/1.1\r\nHost: api\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nUpgrade: h2c\r\n"
        b"X-Gossipmesh-Dest: 10.0.0.1:1\r\nTraceparent: junk\r\nAccept: */*\r\n\r\n"
    )
    h = r.pop()
    assert isinstance(h, RequestHead)
    out = build_request_head(h, b"/p", [b"x-added: 1\r\n"])
    assert out.startswith(b"GET /p HTTP/1.1\r\n") and out.endswith(b"\r\n\r\n")
    lower = out.lower()
    for gone in (
        b"x-secret",
        b"keep-alive",
        b"te:",
        b"proxy-connection",
        b"upgrade",
        b"connection",
        b"x-gossipmesh-dest",
        b"traceparent",
    ):
        assert gone not in lower, gone
    assert b"accept: */*" in lower and b"host: api" in lower and b"x-added: 1" in lower


def test_response_reader_and_head() -> None:
    rr = ResponseReader()
    rr.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    evs = []
    while rr.pending():
        evs.append(rr.pop())
    final = evs[2]
    assert isinstance(final, ResponseHead) and final.status == 200 and final.chunked
    assert not final.keep_alive and final.conn_tokens == (b"close",)
    assert evs[3:] == [b"hi", END]
    head = build_response_head(final, [b"transfer-encoding: chunked\r\n"])
    assert head.count(b"transfer-encoding") == 1 and b"onnection" not in head
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"chunked\r\n\r\n")


def test_response_head_drops_connection_named_headers_and_upgrades_version() -> None:
    rr = ResponseReader()
    rr.feed(
        b"HTTP/1.0 200 Fine\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: timeout=5\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n"
    )
    head = rr.pop()
    assert isinstance(head, ResponseHead) and head.content_length == 0
    out = build_response_head(head, [])
    assert out == b"HTTP/1.1 200 Fine\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n"
    assert (b"x-public", b"2") in head.headers


def test_response_header_limits() -> None:
    rr = ResponseReader(max_header_count=10)
    with pytest.raises(HeaderLimitError):
        rr.feed(b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 20 + b"\r\n")
    rr = ResponseReader(max_header_bytes=1000)
    with pytest.raises(HeaderLimitError):
        rr.feed(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 3000)


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (b"Transfer-Encoding: identity, chunked\r\n", "exactly 'chunked'"),
        (b"Transfer-Encoding: CHUNKED\r\n", "exactly 'chunked'"),
        (b"Transfer-Encoding: chunked \r\n", "exactly 'chunked'"),
        (b"Connection: content-length\r\nContent-Length: 3\r\n", "content-length"),
        (b"Connection: close, Host\r\n", "Connection names host"),
        (b"Connection: x-gossipmesh-dest\r\n", "x-gossipmesh-dest"),
        (b"Host: other\r\n", "more than one Host"),
    ],
)
def test_framing_another_parser_could_read_differently_is_refused(lines: bytes, why: str) -> None:
    with pytest.raises(FramingError, match=why):
        feed_all(b"POST / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n0\r\n\r\nabc")


@pytest.mark.parametrize(
    "request_line", [b"POST / HTTP/2.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked"]
)
def test_versions_and_http_1_0_chunked_are_refused(request_line: bytes) -> None:
    with pytest.raises(FramingError):
        feed_all(request_line + b"\r\nHost: a\r\n\r\n0\r\n\r\n")


def test_plain_connection_tokens_and_tab_before_chunked_are_fine() -> None:
    r = feed_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-custom, te\r\n"
        b"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    head = r.pop()
    assert isinstance(head, RequestHead) and head.chunked
    assert [r.pop(), r.pop()] == [b"abc", END]


def test_response_reader_knows_whether_an_exchange_ended_at_a_boundary() -> None:
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    rr = ResponseReader()
    rr.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + one)
    while rr.pending():
        rr.pop()
    assert rr.at_boundary()
    rr.next_exchange()
    rr.feed(one + b"HTTP/1.1 2")  # the start of a response nobody asked for
    while rr.pending():
        rr.pop()
    assert not rr.at_boundary()
    head_only = ResponseReader()
    head_only.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # a HEAD answer's body
    head_only.reset()
    assert not head_only.at_boundary()


def test_a_response_cannot_drop_its_own_content_length() -> None:
    rr = ResponseReader()
    rr.feed(
        b"HTTP/1.1 200 OK\r\nConnection: content-length, x-a\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
    )
    rh = rr.pop()
    assert isinstance(rh, ResponseHead)
    out = build_response_head(rh, [])
    assert b"Content-Length: 2" in out and b"X-A" not in out


def test_field_names_are_recognised_however_spelled_whether_cached_or_not() -> None:
    raw = (
        b"GET / HTTP/1.1\r\n%s: api\r\n%s: r1\r\nX-Other: 1\r\n%s: 10.0.0.1\r\n"
        b"x-gossipmesh-dest: 10.0.0.2:80\r\n\r\n"
    )
    for spelling in (b"Host X-Request-Id X-Forwarded-For", b"HOST x-request-id X-FORWARDED-for"):
        for _ in range(2):  # the second time from the cache
            h = feed_all(raw % tuple(spelling.split())).pop()
            assert isinstance(h, RequestHead)
            assert (h.host, h.request_id, h.xff, h.dest) == (
                b"api",
                b"r1",
                b"10.0.0.1",
                b"10.0.0.2:80",
            )
            assert [n for n, _ in h.headers] == [
                b"host", b"x-request-id", b"x-other", b"x-forwarded-for", b"x-gossipmesh-dest"
            ]  # fmt: skip


def test_the_field_name_cache_is_bounded() -> None:
    saved = dict(NAME_CACHE)
    try:
        long_name = b"x-" + b"n" * MAX_CACHED_NAME
        h = feed_all(b"GET / HTTP/1.1\r\n%s: 1\r\nHost: a\r\n\r\n" % long_name.upper()).pop()
        assert isinstance(h, RequestHead) and h.headers[0] == (long_name, b"1")
        assert long_name.upper() not in NAME_CACHE  # never kept, however often it is sent
        for i in range(MAX_CACHED_NAMES + 20):  # a peer sending ever new names
            r = feed_all(b"GET / HTTP/1.1\r\nX-N%d: v\r\nHOST: a\r\n\r\n" % i)
            h = r.pop()
            assert isinstance(h, RequestHead) and h.host == b"a"
            assert h.headers[0] == (b"x-n%d" % i, b"v")
            assert len(NAME_CACHE) <= MAX_CACHED_NAMES
        # The flood did not keep names out for good: the cache started again when it was full.
        feed_all(b"GET / HTTP/1.1\r\nX-After: 1\r\nHost: a\r\n\r\n").pop()
        assert NAME_CACHE[b"X-After"] == (b"x-after", -1)
    finally:
        NAME_CACHE.clear()
        NAME_CACHE.update(saved)
