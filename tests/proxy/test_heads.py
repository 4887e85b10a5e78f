"""Head rewriting (heads.py): what a hop adds to a request, and how a response is reframed.
Pure functions over parsed heads and bytes; no sockets."""

from __future__ import annotations

import random

import pytest

from gossipmesh.proxy.heads import (
    CONNECT_ESTABLISHED,
    connect_refusal,
    connect_request,
    fast_reply,
    forward_fields,
    header,
    hop_fields,
    new_request_id,
    next_traceparent,
    request_head,
    request_target,
    response_framing,
    upgrade_reply_head,
)
from gossipmesh.proxy.http1 import RESP_HOP_RE, RequestHead, RequestReader, ResponseHead
from gossipmesh.proxy.http1_response import ResponseReader

MESH = b"x-gossipmesh-dest: 10.0.0.2:8080\r\nx-gossipmesh-service: api\r\n"


def parse(raw: bytes) -> RequestHead:
    r = RequestReader()
    r.feed(raw)
    head = r.pop()
    assert isinstance(head, RequestHead)
    return head


def response(raw: bytes) -> ResponseHead:
    r = ResponseReader()
    r.feed(raw)
    head = r.pop()
    assert isinstance(head, ResponseHead)
    return head


def fields_of(head: bytes) -> dict[bytes, bytes]:
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {n.strip().lower(): v.strip() for n, _, v in (ln.partition(b":") for ln in lines)}


def test_hop_fields_add_a_request_id_only_when_the_client_sent_none() -> None:
    rng = random.Random(1)
    req = parse(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
    lines = hop_fields(req, b"10.1.1.1", b"ab" * 16, rng)
    f = fields_of(b"X / HTTP/1.1\r\n" + lines + b"\r\n")
    assert f[b"x-request-id"] == b"ab" * 16
    assert f[b"x-forwarded-for"] == b"10.1.1.1"
    assert f[b"traceparent"].startswith(b"00-") and f[b"traceparent"].endswith(b"-01")
    trace = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    req = parse(
        b"GET / HTTP/1.1\r\nHost: api\r\nx-request-id: mine\r\nx-forwarded-for: 1.2.3.4\r\n"
        b"traceparent: " + trace + b"\r\n\r\n"
    )
    f = fields_of(b"X / HTTP/1.1\r\n" + hop_fields(req, b"10.1.1.1", b"unused", rng) + b"\r\n")
    assert b"x-request-id" not in f  # the client's own goes through with its other fields
    assert f[b"x-forwarded-for"] == b"1.2.3.4, 10.1.1.1"
    # Same trace, new span (this hop's).
    assert f[b"traceparent"].split(b"-")[1] == b"1" * 32
    assert f[b"traceparent"].split(b"-")[2] != b"2" * 16


def test_request_head_is_built_once_for_both_paths() -> None:
    rng = random.Random(2)
    req = parse(
        b"POST /p?q=1 HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, x-secret\r\n"
        b"x-secret: 1\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\nhi"
    )
    hop = hop_fields(req, b"10.1.1.1", b"r" * 32, rng)
    fields = forward_fields(req, hop, b"", b"host: 10.0.0.2:8080\r\n", True, 2)
    assert fields == [hop]  # a Content-Length body keeps its own framing; Host is there
    head = request_head(req, b"/p?q=1", fields, MESH)
    assert head.startswith(b"POST /p?q=1 HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    f = fields_of(head)
    assert f[b"host"] == b"api" and f[b"content-length"] == b"2"
    assert f[b"x-gossipmesh-dest"] == b"10.0.0.2:8080" and f[b"x-gossipmesh-service"] == b"api"
    # Hop-by-hop fields, and every field Connection names, stay behind.
    assert b"connection" not in f and b"keep-alive" not in f and b"x-secret" not in f
    assert request_head(req, b"/p?q=1", fields, b"").count(b"x-gossipmesh") == 0


def test_forward_fields_host_upgrade_and_body_framing() -> None:
    rng = random.Random(3)
    no_host = parse(b"GET / HTTP/1.0\r\n\r\n")
    hop = hop_fields(no_host, b"c", b"r", rng)
    assert forward_fields(no_host, hop, b"", b"host: d:1\r\n", True, 0) == [hop, b"host: d:1\r\n"]
    absolute = parse(b"GET http://other/x HTTP/1.1\r\nHost: api\r\n\r\n")
    assert forward_fields(absolute, hop, b"other", b"host: d:1\r\n", True, 0)[1] == (
        b"host: other\r\n"
    )
    ws = parse(b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
    assert forward_fields(ws, hop, b"", b"", False, 0)[1:] == [
        b"connection: upgrade\r\n",
        b"upgrade: echo\r\n",
    ]
    chunked = parse(b"POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
    # Held whole (replayable): sent with its length; streamed: re-chunked.
    assert forward_fields(chunked, hop, b"", b"", True, 7)[1:] == [b"content-length: 7\r\n"]
    assert forward_fields(chunked, hop, b"", b"", False, 0)[1:] == [
        b"transfer-encoding: chunked\r\n"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"GET /a?b HTTP/1.1\r\nHost: api\r\n", (b"/a?b", b"api", b"")),
        (b"GET http://api/a HTTP/1.1\r\nHost: api\r\n", (b"/a", b"api", b"")),
        (b"GET http://other HTTP/1.1\r\nHost: api\r\n", (b"/", b"other", b"other")),
        (b"GET HTTP://Other/x HTTP/1.1\r\n", (b"/x", b"Other", b"Other")),
        (b"CONNECT api:443 HTTP/1.1\r\nHost: api\r\n", None),
        (b"GET https://api/ HTTP/1.1\r\nHost: api\r\n", None),
    ],
)
def test_request_target_forms(line: bytes, expected: tuple[bytes, bytes, bytes] | None) -> None:
    assert request_target(parse(line + b"\r\n")) == expected


def _buf(raw: bytes, size: int = 4096) -> tuple[bytearray, memoryview, int]:
    buf = bytearray(size)
    buf[: len(raw)] = raw
    return buf, memoryview(buf), len(raw)


def test_fast_reply_relays_a_whole_keepalive_response_without_hop_fields() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: t=5\r\n"
        b"x-app: 1\r\n\r\nhello"
    )
    out = fast_reply(*_buf(raw), frozenset({503}), False)
    assert out == (200, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-app: 1\r\n\r\nhello")
    plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert fast_reply(*_buf(plain), frozenset(), False) == (404, plain)


@pytest.mark.parametrize(
    "line",
    [
        b"Connection: keep-alive",  # nginx's spelling: cut by one replace
        b"connection: keep-alive",
        b"Connection:keep-alive",
        b"Connection :  keep-alive",
        b"Connection: keep-alive \t",
        b"Connection: Keep-Alive",
        b"Connection: keep-alive\rX-Odd: 1",  # a bare CR ends the value
    ],
)
def test_fast_reply_cuts_the_connection_line_however_it_is_spelled(line: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: s\r\n" + line + b"\r\nContent-Length: 2\r\nx-app: 1"
    out = fast_reply(*_buf(head + b"\r\n\r\nok"), frozenset(), False)
    assert out == (200, RESP_HOP_RE.sub(b"", head) + b"\r\n\r\nok")
    assert b"onnection" not in out[1]
    twice = head + b"\r\n" + line  # two hop lines: both go
    out = fast_reply(*_buf(twice + b"\r\n\r\nok"), frozenset(), False)
    assert out == (200, RESP_HOP_RE.sub(b"", twice) + b"\r\n\r\nok")
    assert b"onnection" not in out[1]


def test_fast_reply_waits_for_a_body_that_fits_and_declines_the_rest() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    buf, mv, n = _buf(head + b"x" * 10)
    assert fast_reply(buf, mv, n, frozenset(), False) == len(head) + 100  # read up to there
    buf, mv, n = _buf(head + b"x" * 10, size=len(head) + 50)
    assert fast_reply(buf, mv, n, frozenset(), False) is None  # does not fit: general path
    buf, mv, n = _buf(head + b"x" * 101)
    assert fast_reply(buf, mv, n, frozenset(), False) is None  # more than one response


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",  # retried on
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # close-delimited
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # head not complete
    ],
)
def test_fast_reply_leaves_everything_else_to_the_general_path(raw: bytes) -> None:
    assert fast_reply(*_buf(raw), frozenset({503}), False) is None


def test_fast_reply_never_relays_a_head_request() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert fast_reply(*_buf(raw), frozenset(), True) is None


def test_response_framing() -> None:
    http11 = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    http10 = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    chunked = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    f = response_framing(http11, chunked)
    assert (f.chunked, f.close_delimited, f.close_after) == (True, False, False)
    assert fields_of(f.head)[b"transfer-encoding"] == b"chunked"
    # An HTTP/1.0 client cannot take chunks: the body ends with the connection.
    f = response_framing(http10, chunked)
    assert (f.chunked, f.close_after) == (False, True)
    assert fields_of(f.head)[b"connection"] == b"close"
    sized = response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
    f = response_framing(http10, sized)
    assert not f.close_after and fields_of(f.head)[b"connection"] == b"keep-alive"
    until_close = response(b"HTTP/1.1 200 OK\r\n\r\n")
    f = response_framing(http11, until_close)
    assert (f.chunked, f.close_delimited, f.close_after) == (True, True, False)
    head = parse(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    f = response_framing(head, response(b"HTTP/1.1 200 OK\r\n\r\n"))
    assert not f.chunked and not f.close_delimited  # no body to frame
    closing = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert response_framing(closing, sized).close_after


def test_upgrade_and_connect_heads() -> None:
    rh = response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    )
    f = fields_of(upgrade_reply_head(rh))
    assert f[b"connection"] == b"upgrade" and f[b"upgrade"] == b"echo"
    assert connect_request(b"10.0.0.2:5432", b"db") == (
        b"CONNECT 10.0.0.2:5432 HTTP/1.1\r\nhost: 10.0.0.2:5432\r\n"
        b"x-gossipmesh-dest: 10.0.0.2:5432\r\nx-gossipmesh-service: db\r\n\r\n"
    )
    assert connect_refusal(CONNECT_ESTABLISHED) is None
    assert connect_refusal(b"HTTP/1.1 403 Forbidden\r\nx: y\r\n\r\n") == b"HTTP/1.1 403 Forbidden"
    assert connect_refusal(b"garbage\r\n\r\n") == b"garbage"


def test_header_lookup() -> None:
    assert header([(b"a", b"1"), (b"b", b"2"), (b"b", b"3")], b"b") == b"2"
    assert header([], b"b") == b""


def test_traceparent_propagates_trace_with_new_span() -> None:
    rng = random.Random(1)
    incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    out = next_traceparent(incoming, rng)
    v, trace, span, flags = out.split(b"-")
    assert (v, trace, flags) == (b"00", b"4bf92f3577b34da6a3ce929d0e0e4736", b"01")
    assert span != b"00f067aa0ba902b7" and len(span) == 16
    fresh = next_traceparent(b"garbage", rng)
    assert len(fresh) == 55 and fresh.startswith(b"00-")


def test_request_ids_are_128_random_bits_in_hex() -> None:
    rng = random.Random(5)
    ids = {new_request_id(rng) for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
