"""HTTP/2 header blocks for the next hop: what is read off a request, what is sent on. Pure.

Theory of operation
-------------------
An HTTP/2 request is turned into the ``RequestHead`` the HTTP/1 path parses into
(``request_head``), so routing, balancing, hashing, authorization and the hop's fields
(``heads.hop_fields``: traceparent, x-forwarded-for, x-request-id) are the same functions for
both protocols. The header block for the next hop (``forward_headers``) is rebuilt, never
copied, with the RFC 9113 §8.2.2 rules: a request with a connection-specific field
(``connection``, ``keep-alive``, ``proxy-connection``, ``transfer-encoding``, ``upgrade``) or a
``te`` other than ``trailers`` is malformed (``Malformed``: the stream is reset with
PROTOCOL_ERROR), and none of them crosses on a response either; ``te: trailers`` (gRPC needs
it) is forwarded;
the mesh's control fields (``x-gossipmesh-*``) from a client are dropped, as on HTTP/1, so an
app cannot pick the destination instance. Responses and trailers lose the same
connection-specific fields (``response_headers``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gossipmesh.proxy.http1 import RequestHead

Headers = list[tuple[bytes, bytes]]

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Request fields the proxy rewrites or that carry the mesh's own control: never copied on.
_REQ_DROP = CONNECTION_SPECIFIC | {
    b"traceparent",
    b"x-forwarded-for",
    b"x-gossipmesh-dest",
    b"x-gossipmesh-service",
    b"host",
}


class Malformed(Exception):
    """A request RFC 9113 calls malformed: a stream error (RST_STREAM PROTOCOL_ERROR)."""


def request_head(headers: Sequence[tuple[bytes, bytes]], ended: bool) -> RequestHead | str:
    """The request as the HTTP/1 path's ``RequestHead`` (``url`` is ``:path``, ``host`` the
    ``:authority`` or Host), or why it cannot be served (a reason detail for a 400). Raises
    ``Malformed`` for a connection-specific field or a ``te`` other than ``trailers``."""
    req = RequestHead()
    regular: Headers = []
    scheme = b""
    for field_ in headers:
        name, value = field_
        if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            raise Malformed(name.decode("latin-1"))
        if name[:1] == b":":
            if name == b":method":
                req.method = value
            elif name == b":path":
                req.url = value
            elif name == b":authority":
                req.host = value
            elif name == b":scheme":
                scheme = value
            continue
        regular.append(field_)  # as received: a never-indexed field stays one (RFC 7541 §7.1.3)
        if name == b"host" and not req.host:
            req.host = value
        elif name == b"x-request-id":
            req.request_id = value
        elif name == b"traceparent":
            req.traceparent = value
        elif name == b"x-forwarded-for":
            req.xff = value if not req.xff else req.xff + b", " + value
        elif name == b"x-gossipmesh-dest":
            req.dest = value
        elif name == b"x-gossipmesh-service":
            req.service = value
    if req.method == b"CONNECT":
        return "CONNECT over HTTP/2 is not proxied"
    if not req.method or not scheme or req.url[:1] != b"/":
        return "an HTTP/2 request needs :method, :scheme and an origin-form :path"
    req.headers = regular
    req.version = "2"
    req.has_body = not ended
    req.body_done = ended
    return req


def forward_headers(
    req: RequestHead,
    scheme: bytes,
    authority: bytes,
    hop: bytes,
    mesh: tuple[bytes, bytes] | None,
) -> Headers:
    """The header block for the next hop. ``hop``: the fields this hop adds
    (``heads.hop_fields``: traceparent, x-forwarded-for, x-request-id); ``mesh``: (dest,
    service) of a hop to a peer agent's inbound listener (``x-gossipmesh-dest`` /
    ``-service``), None to the instance itself."""
    out: Headers = [
        (b":method", req.method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", req.url),
    ]
    for field_ in req.headers:
        name, value = field_
        if name in _REQ_DROP or (name == b"te" and value.lower() != b"trailers"):
            continue
        out.append(field_)
    for line in hop.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            out.append((name, value))
    if mesh is not None:
        out.append((b"x-gossipmesh-dest", mesh[0]))
        out.append((b"x-gossipmesh-service", mesh[1]))
    return out


def response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """A response header block or trailers for the client: connection-specific fields out."""
    return [f for f in headers if f[0] not in CONNECTION_SPECIFIC]


def status_of(headers: Sequence[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b":status":
            return int(value) if value.isdigit() else 0
    return 0


def field(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of ``name``, or b""."""
    for n, v in headers:
        if n == name:
            return v
    return b""


__all__ = [
    "CONNECTION_SPECIFIC",
    "Headers",
    "Malformed",
    "field",
    "forward_headers",
    "request_head",
    "response_headers",
    "status_of",
]
