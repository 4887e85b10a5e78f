"""Head rewriting for the next hop: what the proxy adds to a request head, and how a response head
is reframed for the client. Pure functions over parsed heads and bytes; no sockets, no clock.

Theory of operation
-------------------
A request head is rebuilt, never copied (http1.build_request_head drops hop-by-hop fields). Both
the fast path and the general path add the same fields, built here once:

- ``hop_fields``: ``traceparent`` (W3C trace context: the caller's trace, a new span for this
  hop), ``x-forwarded-for`` (the client's address appended) and ``x-request-id`` when the client
  sent none (``new_request_id``).
- ``forward_fields``: those, plus Host when the request had none or came in absolute form, the
  Upgrade pair for a tunnel, and the body framing the proxy re-applies (a replayable chunked body
  is sent with its length; a streamed one is re-chunked).
- ``request_head``: the head for one endpoint, with the mesh fields of a hop to a peer agent
  (``x-gossipmesh-dest`` / ``x-gossipmesh-service``), which differ per endpoint.

Responses. ``fast_reply`` decides whether a response that arrived whole in one receive buffer can
be relayed as is (HTTP/1.1, keep-alive, Content-Length, no status the service retries on) and
gives the bytes for the client; anything else is None and the general path parses it. What it
reads from a head (its framing and the head for the client) is kept per process for the next
response with the very same head (``HEAD_MEMO``, bounded): upstreams repeat their heads.
``response_framing`` is the general path's choice of framing toward the client.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from random import Random

from gossipmesh.proxy.http1 import (
    RESP_FIELDS_RE,
    RESP_HOP_RE,
    RequestHead,
    ResponseHead,
    build_request_head,
    build_response_head,
)

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
KEEP_ALIVE_LINE = b"\r\nConnection: keep-alive"
STATUS_CODES = {b"%03d" % i: i for i in range(1000)}  # three ASCII digits -> the status
# Response heads as received -> ``relayed_head``'s answer (a pure function of the head): an
# upstream repeats its head byte for byte (nginx's differs only in Date, once a second; most
# small API responses too), and then the head's fields are read once, not per response.
# Bounded: heads longer than ``MAX_MEMO_HEAD`` are never kept, and at ``MAX_MEMO_HEADS`` the
# memo starts over. A head that never repeats costs one hash and one insert more.
MAX_MEMO_HEAD = 512
MAX_MEMO_HEADS = 64
HEAD_MEMO: dict[bytes, tuple[int, bytes]] = {}
NOT_FAST = (-1, b"")


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of ``name`` (lower-case), or b""."""
    for n, v in headers:
        if n == name:
            return v
    return b""


def request_target(req: RequestHead) -> tuple[bytes, bytes, bytes] | None:
    """(target for the next hop, authority, Host to add) for origin form or ``http://``
    absolute form; None for any other form. RFC 9112 §3.2.2: an absolute-form authority wins over
    Host, so it is added as Host when they differ (the caller drops the client's Host then)."""
    url = req.url
    if url[:1] == b"/":
        return url, req.host, b""
    if url[:7].lower() != b"http://":
        return None
    rest = url[7:]
    slash = rest.find(b"/")
    authority = rest if slash < 0 else rest[:slash]
    target = b"/" if slash < 0 else rest[slash:]
    return target, authority, b"" if req.host == authority else authority


def new_request_id(rng: Random) -> bytes:
    return b"%032x" % rng.getrandbits(128)


def next_traceparent(incoming: bytes, rng: Random) -> bytes:
    """W3C trace context: keep trace-id and flags, new parent-id (this hop's span)."""
    if not incoming:
        # A new trace: its id and this hop's span from one draw, formatted once.
        r = rng.getrandbits(192)
        return b"00-%032x-%016x-01" % (r >> 64 or 1, r & 0xFFFFFFFFFFFFFFFF or 1)
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
    return b"00-%032x-%s-01" % (rng.getrandbits(128) or 1, span)


def hop_fields(req: RequestHead, client_ip: bytes, rid: bytes, rng: Random) -> bytes:
    """traceparent and x-forwarded-for, and ``rid`` as x-request-id if the client sent none."""
    xff = req.xff + b", " + client_ip if req.xff else client_ip
    if req.request_id:
        return b"traceparent: %s\r\nx-forwarded-for: %s\r\n" % (
            next_traceparent(req.traceparent, rng),
            xff,
        )
    return b"traceparent: %s\r\nx-forwarded-for: %s\r\nx-request-id: %s\r\n" % (
        next_traceparent(req.traceparent, rng),
        xff,
        rid,
    )


def forward_fields(
    req: RequestHead,
    hop: bytes,
    add_host: bytes,
    host_line: bytes,
    replayable: bool,
    body_len: int,
) -> list[bytes]:
    """Every field line this hop adds, for any endpoint. ``host_line``: the destination's Host
    line, used when the request has none; ``replayable``: the body (``body_len`` bytes) is held
    whole, else it is streamed."""
    fields = [hop]
    if add_host:
        fields.append(b"host: " + add_host + b"\r\n")
    elif not req.host:
        fields.append(host_line)
    if req.upgrade:
        fields.append(b"connection: upgrade\r\n")
        upgrade = header(req.headers, b"upgrade")
        if upgrade:
            fields.append(b"upgrade: " + upgrade + b"\r\n")
    if req.has_body and req.chunked:
        if replayable:
            fields.append(b"content-length: %d\r\n" % body_len)
        else:
            fields.append(b"transfer-encoding: chunked\r\n")
    return fields


def request_head(req: RequestHead, target: bytes, fields: list[bytes], mesh_line: bytes) -> bytes:
    """The head for one endpoint: ``fields`` plus that endpoint's mesh fields (b"" for none)."""
    return build_request_head(req, target, [*fields, mesh_line] if mesh_line else fields)


def mesh_fields(dest: bytes, service: bytes) -> bytes:
    """The fields of a hop to a peer agent's inbound listener."""
    return b"x-gossipmesh-dest: " + dest + b"\r\nx-gossipmesh-service: " + service + b"\r\n"


def connect_request(dest: bytes, service: bytes) -> bytes:
    """The CONNECT that asks a peer agent's inbound listener for a TCP tunnel to ``dest``."""
    return (
        b"CONNECT "
        + dest
        + b" HTTP/1.1\r\nhost: "
        + dest
        + b"\r\n"
        + mesh_fields(dest, service)
        + b"\r\n"
    )


def connect_refusal(head: bytes) -> bytes | None:
    """None if the CONNECT answer ``head`` (through its blank line) accepts, else its status line."""
    status_line = head[: head.find(b"\r\n")]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or parts[1] != b"200":
        return status_line
    return None


def fast_reply(
    buf: bytearray,
    mv: memoryview,
    n: int,
    retry_on_status: Container[int],
    head_request: bool,
) -> tuple[int, bytes] | int | None:
    """The first ``n`` bytes of ``buf`` (``mv`` over it) as (status, bytes for the client) if
    they are one whole response of the fast shape; an int if they begin one whose
    Content-Length body fits the buffer but is still coming (call again once that many bytes
    are in); None if the general path must judge it (then nothing was decided)."""
    he = buf.find(b"\r\n\r\n", 0, n)
    if he <= 0 or not buf.startswith(b"HTTP/1.1 "):
        return None
    raw = bytes(buf[:he])
    status = STATUS_CODES.get(raw[9:12], 0)
    if status < 200 or status == 204 or status == 304 or status in retry_on_status or head_request:
        return None
    fields = HEAD_MEMO.get(raw)
    if fields is None:
        fields = relayed_head(raw)
        if len(raw) <= MAX_MEMO_HEAD:
            if len(HEAD_MEMO) >= MAX_MEMO_HEADS:
                HEAD_MEMO.clear()  # heads that no longer come (an old Date) go with it
            HEAD_MEMO[raw] = fields
    cl, head = fields
    if cl < 0:
        return None
    total = he + 4 + cl
    if total != n:
        return total if n < total <= len(buf) else None
    return status, b"".join((head, b"\r\n\r\n", mv[he + 4 : n]))


def relayed_head(raw: bytes) -> tuple[int, bytes]:
    """(Content-Length, the head for the client without its hop-by-hop lines) of a response
    head ``raw`` (through its last field line) that is of the fast shape, else (-1, b"")."""
    cl = -1
    hop = 0
    exact = False
    for name, value in RESP_FIELDS_RE.findall(raw):
        # The spellings most upstreams use are told without lower-casing (same branches).
        if name == b"Connection" and value == b"keep-alive":
            hop += 1
            exact = True
            continue
        lname = b"content-length" if name == b"Content-Length" else name.lower()
        if lname == b"content-length":
            value = value.rstrip(b" \t")
            if cl >= 0 or not value.isdigit():
                return NOT_FAST
            cl = int(value)
        elif (lname == b"connection" and value.rstrip(b" \t").lower() == b"keep-alive") or (
            lname == b"keep-alive"
        ):
            hop += 1
            exact = name == b"Connection" and value == b"keep-alive"
        else:
            return NOT_FAST  # framing or hop-by-hop fields the general path must judge
    if cl < 0:
        return NOT_FAST
    if hop:
        # The one hop-by-hop line most upstreams send, spelled as nginx and most servers do:
        # cut by one replace instead of a second regex pass. The replace can only find that
        # line (a second one would be a second hop field); any other spelling leaves ``raw``
        # as it was, and the regex cuts it.
        cut = raw.replace(KEEP_ALIVE_LINE, b"", 1) if hop == 1 and exact else raw
        raw = cut if len(cut) != len(raw) else RESP_HOP_RE.sub(b"", raw)
    return cl, raw


@dataclass(frozen=True, slots=True)
class Framing:
    """How the general path relays one response to the client."""

    head: bytes  # the response head for the client
    chunked: bool  # re-chunk the body toward the client
    close_delimited: bool  # the upstream's body ends when it closes
    close_after: bool  # the client connection ends after this response


def response_framing(req: RequestHead, rh: ResponseHead) -> Framing:
    status = rh.status
    no_body = req.method == b"HEAD" or status == 204 or status == 304 or status < 200
    # After a refused upgrade the request parser is in tunnel mode: end the connection.
    close_after = not req.keep_alive or req.upgrade
    chunked = close_delimited = False
    fields: list[bytes] = []
    if not no_body and (rh.chunked or rh.content_length is None):
        close_delimited = not rh.chunked
        if req.version == "1.1":
            chunked = True
            fields.append(b"transfer-encoding: chunked\r\n")
        else:
            close_after = True
    if close_after:
        fields.append(b"connection: close\r\n")
    elif req.version == "1.0":
        fields.append(b"connection: keep-alive\r\n")
    return Framing(build_response_head(rh, fields), chunked, close_delimited, close_after)


def upgrade_reply_head(rh: ResponseHead) -> bytes:
    """The 101 head for the client of a tunnel the upstream accepted."""
    upgrade = header(rh.headers, b"upgrade")
    fields = [b"connection: upgrade\r\n"]
    if upgrade:
        fields.append(b"upgrade: " + upgrade + b"\r\n")
    return build_response_head(rh, fields)


__all__ = [
    "CONNECT_ESTABLISHED",
    "Framing",
    "connect_refusal",
    "connect_request",
    "fast_reply",
    "forward_fields",
    "header",
    "hop_fields",
    "mesh_fields",
    "new_request_id",
    "next_traceparent",
    "request_head",
    "request_target",
    "response_framing",
    "upgrade_reply_head",
]
