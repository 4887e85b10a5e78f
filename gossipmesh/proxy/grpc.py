"""gRPC over the mesh: the few rules a proxy needs, as pure functions.

Theory of operation
-------------------
gRPC is HTTP/2 with ``content-type: application/grpc…``; a call's outcome is the ``grpc-status``
in its trailers (or in the response headers when the answer is *trailers-only*: one HEADERS
frame with END_STREAM). So the proxy:

- answers its own failures as trailers-only responses: ``:status 200``, ``grpc-status`` and
  ``grpc-message`` (``grpc_error``), with the HTTP/1 reason kept as ``x-gossipmesh-error`` so a
  peer agent can still tell "could not connect to the instance" apart; the reason maps to a
  code (``CODE_FOR_REASON``): no healthy endpoint and connect failures are UNAVAILABLE (14),
  a deadline is DEADLINE_EXCEEDED (4), a policy's denial PERMISSION_DENIED (7);
- honours ``grpc-timeout`` (``parse_timeout``) as the request's deadline when it is sooner than
  the service's ``request_ms``;
- reads ``grpc-status`` off a response (``status_of``) to retry on the configured codes (only a
  trailers-only answer can be retried: nothing has reached the client) and to count calls by
  code in the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossipmesh.proxy.errors import error_text

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 7, 8, 12, 13, 14

# The proxy's error reasons (errors.py) as gRPC codes (gRPC's own HTTP-to-gRPC mapping where
# the reason is an HTTP status, the codes the mesh promises where it is ours).
CODE_FOR_REASON = {
    "no_route": UNIMPLEMENTED,
    "no_healthy_endpoint": UNAVAILABLE,
    "overloaded": UNAVAILABLE,
    "upstream_timeout": DEADLINE_EXCEEDED,
    "upstream_connect_failure": UNAVAILABLE,
    "upstream_reset": UNAVAILABLE,
    "bad_request": INTERNAL,
    "headers_too_large": RESOURCE_EXHAUSTED,
    "forbidden_destination": PERMISSION_DENIED,
    "forbidden_by_policy": PERMISSION_DENIED,
    "unsupported": UNIMPLEMENTED,
}

_UNIT_NS = {b"H": 3600 * 10**9, b"M": 60 * 10**9, b"S": 10**9, b"m": 10**6, b"u": 10**3, b"n": 1}
MAX_TIMEOUT_DIGITS = 8  # the gRPC spec's bound on TimeoutValue


def is_grpc(content_type: bytes) -> bool:
    return content_type[:16].lower() == b"application/grpc"


def parse_timeout(value: bytes) -> int | None:
    """``grpc-timeout`` (1-8 digits and a unit) in nanoseconds; None if malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits or len(digits) > MAX_TIMEOUT_DIGITS or not digits.isdigit():
        return None
    scale = _UNIT_NS.get(unit)
    return None if scale is None else int(digits) * scale


def status_of(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` in a header block, or None (absent or not a number)."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() and len(value) <= 3 else None
    return None


def percent_encode(text: str) -> bytes:
    """``grpc-message`` encoding: printable ASCII except ``%`` as is, the rest %XX (UTF-8)."""
    out = bytearray()
    for byte in text.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def grpc_error(
    reason: str, service: str = "", detail: str = "", extra: Sequence[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """A trailers-only response for a proxy-generated failure (sent with END_STREAM)."""
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % CODE_FOR_REASON[reason]),
        (b"grpc-message", percent_encode(error_text(reason, service, detail))),
        (b"x-gossipmesh-error", reason.encode()),
        *extra,
    ]


def grpc_trailers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    """Trailers that end a call whose response headers already went out."""
    return [(b"grpc-status", b"%d" % code), (b"grpc-message", percent_encode(message))]


__all__ = [
    "CODE_FOR_REASON",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
    "OK",
    "PERMISSION_DENIED",
    "UNAVAILABLE",
    "grpc_error",
    "grpc_trailers",
    "is_grpc",
    "parse_timeout",
    "percent_encode",
    "status_of",
]
