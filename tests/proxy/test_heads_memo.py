"""``fast_reply`` keeps what it read from a response head (``HEAD_MEMO``): the answers for any
head, read the first time or from the memo, with any body after it, are those of ``fast_reply``
before the memo (kept here verbatim as the reference); and the memo stays bounded."""

from __future__ import annotations

import random
from collections.abc import Container

from gossipmesh.proxy.heads import (
    HEAD_MEMO,
    KEEP_ALIVE_LINE,
    MAX_MEMO_HEAD,
    MAX_MEMO_HEADS,
    STATUS_CODES,
    fast_reply,
)
from gossipmesh.proxy.http1 import RESP_FIELDS_RE, RESP_HOP_RE


def old_fast_reply(
    buf: bytearray, mv: memoryview, n: int, retry_on_status: Container[int], head_request: bool
) -> tuple[int, bytes] | int | None:
    """heads.fast_reply before the memo (2026-12-04)."""
    he = buf.find(b"\r\n\r\n", 0, n)
    if he <= 0 or not buf.startswith(b"HTTP/1.1 "):
        return None
    raw = bytes(buf[:he])
    status = STATUS_CODES.get(raw[9:12], 0)
    if status < 200 or status == 204 or status == 304 or status in retry_on_status or head_request:
        return None
    cl = -1
    hop = 0
    exact = False
    for name, value in RESP_FIELDS_RE.findall(raw):
        lname = name.lower()
        if lname == b"content-length":
            value = value.rstrip(b" \t")
            if cl >= 0 or not value.isdigit():
                return None
            cl = int(value)
        elif (lname == b"connection" and value.rstrip(b" \t").lower() == b"keep-alive") or (
            lname == b"keep-alive"
        ):
            hop += 1
            exact = name == b"Connection" and value == b"keep-alive"
        else:
            return None
    if cl < 0:
        return None
    total = he + 4 + cl
    if total != n:
        return total if n < total <= len(buf) else None
    if hop:
        cut = raw.replace(KEEP_ALIVE_LINE, b"", 1) if hop == 1 and exact else raw
        raw = cut if len(cut) != len(raw) else RESP_HOP_RE.sub(b"", raw)
    return status, b"".join((raw, b"\r\n\r\n", mv[he + 4 : n]))


FIELD_LINES = [
    b"Server: nginx/1.22.1",
    b"Date: Fri, 04 Dec 2026 22:30:00 GMT",
    b"Content-Type: text/plain",
    b"x-app: 1",
    b"Content-Length: 5",
    b"content-length:5",
    b"Content-Length : 5",
    b"Content-Length:\t5 \t",
    b"Content-Length: 05",
    b"Content-Length: x",
    b"Content-Length: 5\rX-Odd: 1",
    b"Content-Lengthy: 5",
    b"Connection: keep-alive",
    b"connection: keep-alive",
    b"Connection: Keep-Alive",
    b"Connection:keep-alive",
    b"Connection: keep-alive ",
    b"Connection: keep-alive-ish",
    b"Connection: keep-alive\rX-Odd: 1",
    b"Connection: close",
    b"Keep-Alive: timeout=5",
    b"Transfer-Encoding: chunked",
    b"TE: trailers",
    b"Upgrade: h2c",
    b"Proxy-Connection: keep-alive",
    b" folded: x",
]
STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 503 Busy"]


def test_fast_reply_answers_as_before_from_the_memo_or_not() -> None:
    rng = random.Random(19)
    retry = frozenset({503})
    relayed = 0
    HEAD_MEMO.clear()
    for i in range(10_000):
        if i % 1000 == 0:
            HEAD_MEMO.clear()  # some heads read cold, some from the memo
        lines = [rng.choice(STATUS_LINES)]
        lines += [rng.choice(FIELD_LINES) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.6:
            lines.insert(rng.randint(1, len(lines)), b"Content-Length: 5")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        body = b"x" * rng.choice([0, 3, 5, 6, 40])
        size = rng.choice([len(head) + 3, len(head) + 5, 4096])
        raw = (head + body)[:size]
        buf = bytearray(size)
        buf[: len(raw)] = raw
        mv = memoryview(buf)
        for head_request in (True, False):
            expected = old_fast_reply(buf, mv, len(raw), retry, head_request)
            assert fast_reply(buf, mv, len(raw), retry, head_request) == expected, raw
        relayed += isinstance(expected, tuple)  # (of the GET)
    assert relayed > 300  # the relayed case was reached often, from the memo too


def test_the_head_memo_is_bounded() -> None:
    saved = dict(HEAD_MEMO)
    try:
        long_head = b"HTTP/1.1 200 OK\r\nx-pad: " + b"p" * MAX_MEMO_HEAD + b"\r\nContent-Length: 2"
        raw = long_head + b"\r\n\r\nok"
        buf = bytearray(raw)
        assert fast_reply(buf, memoryview(buf), len(raw), (), False) == (200, raw)
        assert long_head not in HEAD_MEMO  # never kept
        for i in range(3 * MAX_MEMO_HEADS):  # heads that never repeat
            raw = b"HTTP/1.1 200 OK\r\nx-id: %d\r\nContent-Length: 2\r\n\r\nok" % i
            buf = bytearray(raw)
            assert fast_reply(buf, memoryview(buf), len(raw), (), False) == (200, raw)
            assert 0 < len(HEAD_MEMO) <= MAX_MEMO_HEADS
    finally:
        HEAD_MEMO.clear()
        HEAD_MEMO.update(saved)
