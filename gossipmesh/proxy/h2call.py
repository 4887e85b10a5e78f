"""One HTTP/2 request's state on its way through the proxy, and the answers the proxy makes to
it when it fails (a gRPC error for a gRPC call, an HTTP error otherwise).

Theory of operation
-------------------
``Call`` is what h2exchange.py keeps per request: the client's stream, the retry state (endpoint
keys tried, retries left, the deadlines) and the request body held for a replay (``keep``:
while it fits the limit; past it the body only streams and the call is no longer replayable).
``answer_error`` is the HTTP/2 twin of ``Downstreams.reply_error``: the error is counted
(``ProxyMetrics.error`` and ``grpc`` by code; the exchange adds ``observe`` and the request
log, h2exchange.py ``fail``), and answered trailers-only with
``grpc-status`` (grpc.py) for a gRPC call, else with the HTTP status and a text body naming the
reason, as on HTTP/1 (errors.py). A request body still coming is then refused with RST_STREAM
NO_ERROR (RFC 9113 §8.1: the answer is complete, the rest is not wanted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossipmesh.proxy.clock import NEVER_NS
from gossipmesh.proxy.downstream import Downstream
from gossipmesh.proxy.errors import STATUS_FOR_REASON, error_text
from gossipmesh.proxy.grpc import CODE_FOR_REASON, grpc_error
from gossipmesh.proxy.h2frames import ErrorCodes
from gossipmesh.proxy.h2link import H2Link, LinkGone, Stream
from gossipmesh.proxy.metrics import ProxyMetrics

if TYPE_CHECKING:
    from gossipmesh.proxy.http1 import RequestHead
    from gossipmesh.proxy.pipeline import Exchange


class Call:
    """One HTTP/2 request: its client stream and its retry state."""

    __slots__ = (
        "conn",
        "dl",
        "s",
        "start_ns",
        "grpc",
        "service",
        "route",
        "rid",
        "tried",
        "left",
        "idempotent",
        "deadline_ns",
        "call_deadline_ns",
        "replay",
        "held",
        "replayable",
        "detail",
        "req",
        "x",
        "sent",
    )

    def __init__(self, conn: Downstream, dl: H2Link, s: Stream, start_ns: int) -> None:
        self.conn = conn
        self.dl = dl  # the client's connection
        self.s = s  # the client's stream
        self.start_ns = start_ns
        self.grpc = False
        self.service = ""
        self.route = ""
        self.rid = b""
        self.tried: list[tuple[str, str, int]] = []
        self.left = 0
        self.idempotent = False
        self.deadline_ns = NEVER_NS  # until the response headers, all tries together
        self.call_deadline_ns = NEVER_NS  # grpc-timeout: the whole call
        self.replay: list[bytes] = []  # the request body so far, while it is replayable
        self.held = 0
        self.replayable = True
        self.detail = ""
        self.req: RequestHead | None = None  # once the header block parsed
        self.x: Exchange | None = None  # once routed
        self.sent = 0  # body bytes to the client (the request log's bytes_out)

    def keep(self, data: bytes, limit: int) -> bool:
        """Hold ``data`` for a retry if the body still fits ``limit``; False once it does not."""
        if self.replayable:
            if self.held + len(data) <= limit:
                self.replay.append(data)
                self.held += len(data)
                return True
            self.replayable = False
            self.replay = []
        return False


async def answer_error(
    metrics: ProxyMetrics,
    c: Call,
    reason: str,
    detail: str = "",
    extra: tuple[tuple[bytes, bytes], ...] = (),
    service: str | None = None,
) -> int:
    """Answer with a proxy error: a gRPC error for a gRPC call, else an HTTP one. Returns the
    HTTP status sent (200 for a gRPC error: the code is in the trailers)."""
    if service is not None:
        c.service = service
    m = metrics
    m.error(c.service, reason)
    dl = c.dl
    s = c.s
    direction = c.conn.direction
    if c.rid:
        extra = (*extra, (b"x-request-id", c.rid))
    try:
        if c.grpc:
            status = 200
            dl.send_headers(s.sid, grpc_error(reason, c.service, detail, extra), True)
            m.grpc(c.service, CODE_FOR_REASON[reason], direction)
        else:
            status = STATUS_FOR_REASON[reason]
            body = (error_text(reason, c.service, detail) + "\n").encode("utf-8", "replace")
            head = [
                (b":status", b"%d" % status),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                (b"x-gossipmesh-error", reason.encode()),
                *extra,
            ]
            dl.send_headers(s.sid, head, False)
            await dl.send_data(s.sid, body, True)
            c.sent += len(body)
        if not s.ended and s.reset is None:
            dl.reset(s.sid, ErrorCodes.NO_ERROR)
    except LinkGone:
        pass
    return status


__all__ = ["Call", "answer_error"]
