"""Responses the proxy generates itself, so a user can tell them from the application's.

Every one carries ``x-gossipmesh-error: <reason>`` (a stable slug, also the metrics label) and a
one-line text body naming the service and the reason. Mapping, as docs/CONFIG.md and issue 5 say:

| reason | status | when |
|---|---|---|
| ``no_route`` | 404 | no route matched and the Host names no known service |
| ``no_healthy_endpoint`` | 503 | the service has no endpoint to try |
| ``overloaded`` | 503 | a circuit-breaker limit (``x-gossipmesh-overloaded`` names it) |
| ``upstream_timeout`` | 504 | per-try or whole-request timeout before the response head |
| ``upstream_connect_failure`` | 502 | could not connect (after any retries) |
| ``upstream_reset`` | 502 | the upstream closed or sent garbage before a complete head |
| ``bad_request`` | 400 | the request could not be parsed |
| ``headers_too_large`` | 431 | header block over the size or count limit |
| ``forbidden_destination`` | 403 | inbound: the destination is not a local instance |
| ``forbidden_by_policy`` | 403 | inbound: a ``policy/`` (or the service's default) denies the caller |
"""

from __future__ import annotations

STATUS_FOR_REASON = {
    "no_route": 404,
    "no_healthy_endpoint": 503,
    "overloaded": 503,
    "upstream_timeout": 504,
    "upstream_connect_failure": 502,
    "upstream_reset": 502,
    "bad_request": 400,
    "headers_too_large": 431,
    "forbidden_destination": 403,
    "forbidden_by_policy": 403,
    "unsupported": 501,
}

PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_TEXT = {
    "no_route": "no route and no service named by the Host",
    "no_healthy_endpoint": "no healthy endpoint",
    "overloaded": "circuit breaker open",
    "upstream_timeout": "upstream timed out",
    "upstream_connect_failure": "could not connect to upstream",
    "upstream_reset": "upstream closed the connection or sent an invalid response",
    "bad_request": "malformed request",
    "headers_too_large": "request headers too large",
    "forbidden_destination": "destination is not a local instance",
    "forbidden_by_policy": "denied",
    "unsupported": "unsupported request",
}


def error_response(
    reason: str,
    service: str = "",
    detail: str = "",
    *,
    keep_alive: bool = True,
    request_id: bytes = b"",
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    head_only: bool = False,
) -> tuple[int, bytes]:
    """(status, full response bytes). ``head_only`` for HEAD requests: same head, no body."""
    status = STATUS_FOR_REASON[reason]
    body = (error_text(reason, service, detail) + "\n").encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {status} {PHRASES[status]}\r\n".encode(),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-gossipmesh-error: " + reason.encode() + b"\r\n",
    ]
    if request_id:
        lines.append(b"x-request-id: " + request_id + b"\r\n")
    for name, value in extra_headers:
        lines.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return status, b"".join(lines)


def error_text(reason: str, service: str = "", detail: str = "") -> str:
    """The one-line text of a proxy error (HTTP/1 body, HTTP/2 body, ``grpc-message``)."""
    text = f"gossipmesh: {_TEXT[reason]}"
    if service:
        text += f" (service {service!r})"
    if detail:
        text += f": {detail}"
    return text
