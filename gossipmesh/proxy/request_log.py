"""Per-request records: what the access log, the tap streams and the trace spans see of a request.

Theory of operation
-------------------
The proxy accounts for a finished request in a few places (``FastPath.finish``,
``Forwarder.answered`` and ``after``, ``Downstreams.reply_error``); next to each metrics call each
one calls ``RequestLog.done``. With nothing listening (no access log, no tap, no span export)
``RequestLog.on`` is False and the call sites skip the call: one attribute test per request is
all logging-off costs.

When something listens, ``done`` first asks each sink whether it wants this request, from what
is already at hand (direction, service, method, path, status): the access log draws its sampling
ratio and then its rate limit, a tap checks its filters and its rate, the span sink the trace's
sampled flag and the mesh-wide ratio. Only when one says yes is a ``RequestRecord`` (slotted, no
header values in it at all) built, once, and handed to each sink that wanted it.

Sinks never block the event loop: the access log appends to a bounded list that a writer task
(``AccessLog.run``, record_sinks.py) empties in batches, serialising and writing on a worker
thread; a tap offers the record to its subscriber's bounded channel; the span sink only enqueues
into the OpenTelemetry SDK's batch processor (proxy/spans.py). What does not fit is dropped and
counted, never waited for.

What a record holds, and what it never holds: ids (trace, span, parent span, request id), the
caller's proven identity (inbound: the SPIFFE id of the mTLS peer; outbound: the local service the
listener presents), method, authority and path (without the query string, which can carry
tokens), route, destination (service and subset tags), endpoint (node and address), status, body
bytes in and bytes out, durations (total, upstream: the last try from its send to the response;
queue: from the request head to that send), retries and the proxy's error reason. No header value
and no body is ever copied into it, so Authorization and Cookie values cannot appear.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _esc
from typing import TYPE_CHECKING, Any, Protocol

from gossipmesh.proxy.clock import Clock

if TYPE_CHECKING:
    from gossipmesh.proxy.downstream import Downstream
    from gossipmesh.proxy.http1 import RequestHead
    from gossipmesh.proxy.pipeline import Exchange

MAX_PATH_CHARS = 512  # a longer path is cut (and says so with a trailing "...")


class RequestRecord:
    """One finished request, as every sink sees it (see the module docstring for what is left
    out). Durations in ns on the proxy's clock; ``ts`` is the wall clock at the end."""

    __slots__ = (
        "ts",
        "node",
        "direction",
        "trace_id",
        "span_id",
        "parent_span_id",
        "sampled",
        "request_id",
        "caller",
        "method",
        "authority",
        "path",
        "service",
        "route",
        "destination",
        "endpoint",
        "endpoint_address",
        "status",
        "bytes_in",
        "bytes_out",
        "total_ns",
        "upstream_ns",
        "queue_ns",
        "retries",
        "error",
    )

    def __init__(self) -> None:
        self.ts = 0.0
        self.node = ""
        self.direction = ""
        self.trace_id = ""
        self.span_id = ""
        self.parent_span_id = ""
        self.sampled = False
        self.request_id = ""
        self.caller = ""
        self.method = ""
        self.authority = ""
        self.path = ""
        self.service = ""
        self.route = ""
        self.destination = ""
        self.endpoint = ""
        self.endpoint_address = ""
        self.status = 0
        self.bytes_in: int | None = 0
        self.bytes_out = 0
        self.total_ns = 0
        self.upstream_ns = 0
        self.queue_ns = 0
        self.retries = 0
        self.error = ""

    def to_json(self) -> dict[str, Any]:
        """The access log's and the tap's line (durations in ms, 3 decimals)."""
        return {
            "ts": _iso(self.ts),
            "node": self.node,
            "direction": self.direction,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "request_id": self.request_id,
            "caller": self.caller,
            "method": self.method,
            "authority": self.authority,
            "path": self.path,
            "service": self.service,
            "route": self.route,
            "destination": self.destination,
            "endpoint": self.endpoint,
            "endpoint_address": self.endpoint_address,
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round(self.total_ns / 1e6, 3),
            "upstream_ms": round(self.upstream_ns / 1e6, 3),
            "queue_ms": round(self.queue_ns / 1e6, 3),
            "retries": self.retries,
            "error": self.error,
        }

    def json_line(self) -> str:
        """``to_json`` as one JSON line, built directly (the access log's writer: 2-3x cheaper
        than a dict through ``json.dumps``). Ids are hex made here; every other text escaped."""
        bytes_in = "null" if self.bytes_in is None else self.bytes_in
        return (
            f'{{"ts":"{_iso(self.ts)}","node":{_esc(self.node)},"direction":"{self.direction}",'
            f'"trace_id":"{self.trace_id}","span_id":"{self.span_id}",'
            f'"parent_span_id":{_esc(self.parent_span_id)},"request_id":{_esc(self.request_id)},'
            f'"caller":{_esc(self.caller)},"method":{_esc(self.method)},'
            f'"authority":{_esc(self.authority)},"path":{_esc(self.path)},'
            f'"service":{_esc(self.service)},"route":{_esc(self.route)},'
            f'"destination":{_esc(self.destination)},"endpoint":{_esc(self.endpoint)},'
            f'"endpoint_address":{_esc(self.endpoint_address)},"status":{self.status},'
            f'"bytes_in":{bytes_in},"bytes_out":{self.bytes_out},'
            f'"duration_ms":{round(self.total_ns / 1e6, 3)},'
            f'"upstream_ms":{round(self.upstream_ns / 1e6, 3)},'
            f'"queue_ms":{round(self.queue_ns / 1e6, 3)},"retries":{self.retries},'
            f'"error":{_esc(self.error)}}}\n'
        )


# The last whole second formatted, as one tuple: rebinding it is atomic, so the writer's thread
# and the event loop (taps) may both use it.
_second: tuple[int, str] = (-1, "")


def _iso(ts: float) -> str:
    global _second
    whole = int(ts)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int(ts * 1000) % 1000:03d}Z"


class Probe:
    """What a sink may look at before any record is built: set per request with no work at all
    (``path`` is cut from the target only when a sink asks)."""

    __slots__ = ("direction", "service", "method", "url", "status", "x", "now_ns")

    def __init__(self) -> None:
        self.direction = ""
        self.service = ""
        self.method = b""
        self.url = b""
        self.status = 0
        self.x: Exchange | None = None
        self.now_ns = 0

    @property
    def path(self) -> bytes:
        """The request target without its query string."""
        url = self.url
        q = url.find(b"?")
        return url if q < 0 else url[:q]


class RecordSink(Protocol):
    def wants(self, p: Probe) -> bool:
        """True commits to ``take`` (a rate token may have been spent)."""
        ...

    def take(self, rec: RequestRecord) -> None: ...


class RequestLog:
    """The proxy's one recorder; its sinks are the access log, taps and span export."""

    __slots__ = ("on", "sinks", "node", "clock", "probe", "wall")

    def __init__(self, clock: Clock | None = None, node: str = "") -> None:
        self.on = False
        self.sinks: list[RecordSink] = []
        self.node = node
        self.clock = clock
        self.probe = Probe()
        self.wall: Callable[[], float] = time.time

    def add(self, sink: RecordSink) -> None:
        self.sinks.append(sink)
        self.on = True

    def remove(self, sink: RecordSink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)
        self.on = bool(self.sinks)

    def done(
        self,
        conn: Downstream,
        req: RequestHead | None,
        x: Exchange | None,
        service: str,
        route: str,
        status: int,
        start_ns: int,
        end_ns: int,
        sent: int,
        reason: str = "",
    ) -> None:
        """A finished request (see the module docstring). ``sent``: bytes to the client for it."""
        if req is None:
            return  # no request head at all (a parse error): nothing to say who asked what
        p = self.probe
        p.direction = conn.direction
        p.service = service
        p.method = req.method
        p.url = req.url
        p.status = status
        p.x = x
        p.now_ns = end_ns
        wanting: list[RecordSink] | None = None
        for s in self.sinks:
            if s.wants(p):
                if wanting is None:
                    wanting = [s]
                else:
                    wanting.append(s)
        p.x = None
        if wanting is None:
            return
        rec = self.build(conn, req, x, service, route, status, start_ns, end_ns, sent, reason)
        for s in wanting:
            s.take(rec)

    def build(
        self,
        conn: Downstream,
        req: RequestHead,
        x: Exchange | None,
        service: str,
        route: str,
        status: int,
        start_ns: int,
        end_ns: int,
        sent: int,
        reason: str,
    ) -> RequestRecord:
        rec = RequestRecord()
        rec.ts = self.wall()
        rec.node = self.node
        rec.direction = conn.direction
        incoming = req.traceparent
        hop = x.hop if x is not None else b""
        if hop:
            # hop_fields (heads.py) opens with "traceparent: 00-TRACE-SPAN-FLAGS\r\n".
            rec.trace_id = hop[16:48].decode()
            rec.span_id = hop[49:65].decode()
            rec.sampled = hop[66:68] in SAMPLED_FLAGS
            parts = incoming.strip().split(b"-")
            if len(parts) >= 4 and parts[1].lower() == hop[16:48] and len(parts[2]) == 16:
                rec.parent_span_id = parts[2].lower().decode()
        else:
            parts = incoming.strip().split(b"-")
            if len(parts) >= 4 and len(parts[1]) == 32:
                rec.trace_id = parts[1].lower().decode("latin-1")
                rec.parent_span_id = parts[2][:16].lower().decode("latin-1")
        rid = x.rid if x is not None and x.rid else req.request_id
        rec.request_id = rid[:128].decode("latin-1")
        peer = conn.peer
        rec.caller = peer.spiffe if peer is not None else conn.caller
        rec.method = req.method[:32].decode("latin-1")
        rec.authority = req.host[:256].decode("latin-1")
        path = self.probe.path
        text = path[:MAX_PATH_CHARS].decode("latin-1")
        rec.path = text + "..." if len(path) > MAX_PATH_CHARS else text
        rec.service = service
        rec.route = route
        rec.status = status
        rec.bytes_out = sent
        rec.total_ns = end_ns - start_ns
        rec.error = reason
        if x is not None:
            d = x.dest
            rec.destination = destination_name(x)
            if 0 <= x.idx < len(d.endpoints):
                ep = d.endpoints[x.idx]
                rec.endpoint = ep.node
                rec.endpoint_address = f"{ep.address}:{ep.port}"
            rec.bytes_in = len(x.body) if x.body is not None else _declared_length(req)
            tried = x.tried
            rec.retries = max(0, len(tried) - 1) if tried is not None else 0
            sent_ns = x.try_ns
            if sent_ns:
                rec.queue_ns = max(0, sent_ns - start_ns)
                rec.upstream_ns = max(0, end_ns - sent_ns)
        else:
            rec.destination = service
        return rec


def _declared_length(req: RequestHead) -> int | None:
    """A streamed body's Content-Length (the parser enforced it); None when chunked."""
    for name, value in req.headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


SAMPLED_FLAGS = frozenset(b"%02x" % f for f in range(256) if f & 1)


def destination_name(x: Exchange) -> str:
    """``service`` or ``service:tag,tag`` (the route's subset the exchange went to)."""
    d = x.dest
    r = x.route
    dests = x.dests
    if r is not None and dests is not None:
        for key in r.clusters:
            if dests.get(key) is d:
                svc, tags = key
                return f"{svc}:{','.join(tags)}" if tags else svc
    return d.service


__all__ = [
    "SAMPLED_FLAGS",
    "Probe",
    "RecordSink",
    "RequestLog",
    "RequestRecord",
    "destination_name",
]
