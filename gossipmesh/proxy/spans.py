"""Trace spans: each sidecar hop of a sampled trace exported over OTLP/HTTP with OpenTelemetry.

Theory of operation
-------------------
The proxy already continues W3C trace context on every hop (heads.next_traceparent): it keeps
the caller's trace id and flags and puts a new span id, this hop's, in the ``traceparent`` it
sends on. So the span a hop exports is already named on the wire: its trace id and span id are
those of the ``traceparent`` it sent, its parent the span id of the one it received (none when
the trace starts here). The outbound hop's span is the inbound hop's parent, and the app's own
spans hang under the inbound's: a trace across two sidecars links by itself, with no state kept
between requests.

Sampling: a hop exports when the trace's sampled flag is set and the low 64 bits of its trace id
fall under the mesh-wide ratio (``telemetry/mesh`` in the replicated document). Every hop
applies the same test to the same trace id, so a trace is exported whole or not at all.

Cost: ``SpanSink.wants`` reads two slices of the hop's bytes; only a sampled request builds a
record (request_log.py) and an SDK ``ReadableSpan``, which ``BatchSpanProcessor.on_end`` only
enqueues (its own bounded queue: 2,048 spans, the excess dropped by the SDK). Serialising and
the HTTP export run on the SDK's worker thread, off the event loop.

The SDK is an optional extra (``pip install 'gossipmesh[otel]'``) imported here only when an
exporter is built (``otlp_sink``), so an agent without ``--otlp-endpoint`` never loads it.
"""

from __future__ import annotations

from typing import Any

from gossipmesh.proxy.request_log import SAMPLED_FLAGS, Probe, RequestRecord

INSTALL_HINT = "span export needs the otel extra: pip install 'gossipmesh[otel]'"
SCOPE_NAME = "gossipmesh.proxy"
LOW64 = 1 << 64


class ExportUnavailable(RuntimeError):
    """The OpenTelemetry SDK or its OTLP/HTTP exporter is not installed."""


class SpanSink:
    """A request-log sink that turns sampled hops into spans handed to ``processor``
    (anything with the SDK's ``on_end(span)`` and ``shutdown()``)."""

    def __init__(self, processor: Any, resource: Any, ratio: float = 0.01) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope(SCOPE_NAME)
        self.threshold = 0
        self.set_ratio(ratio)
        self.exported = 0

    def set_ratio(self, ratio: float) -> None:
        """The share of traces exported, 0..1 (the document's ``telemetry/mesh``)."""
        self.threshold = round(min(1.0, max(0.0, ratio)) * LOW64)

    def wants(self, p: Probe) -> bool:
        x = p.x
        if x is None:
            return False
        hop = x.hop
        if not hop or hop[66:68] not in SAMPLED_FLAGS:
            return False
        return int(hop[32:48], 16) < self.threshold

    def take(self, rec: RequestRecord) -> None:
        self.processor.on_end(self.span(rec))
        self.exported += 1

    def span(self, rec: RequestRecord) -> Any:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        flags = TraceFlags(TraceFlags.SAMPLED)
        trace_id = int(rec.trace_id, 16)
        context = SpanContext(trace_id, int(rec.span_id, 16), False, flags)
        parent = None
        if rec.parent_span_id:
            parent = SpanContext(trace_id, int(rec.parent_span_id, 16), True, flags)
        end_ns = int(rec.ts * 1e9)
        outbound = rec.direction == "outbound"
        failed = rec.status >= 500 or rec.status == 0 or bool(rec.error)
        status = Status(StatusCode.ERROR, rec.error or str(rec.status)) if failed else Status()
        attributes: dict[str, Any] = {
            "http.request.method": rec.method,
            "url.path": rec.path,
            "http.response.status_code": rec.status,
            "server.address": rec.authority,
            "gossipmesh.node": rec.node,
            "gossipmesh.direction": rec.direction,
            "gossipmesh.service": rec.service,
            "gossipmesh.route": rec.route,
            "gossipmesh.destination": rec.destination,
            "gossipmesh.endpoint": rec.endpoint,
            "gossipmesh.retries": rec.retries,
            "gossipmesh.request_id": rec.request_id,
        }
        if rec.caller:
            attributes["gossipmesh.caller"] = rec.caller
        if rec.error:
            attributes["error.type"] = rec.error
        return ReadableSpan(
            name=f"{rec.direction} {rec.service or '-'}",
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            kind=SpanKind.CLIENT if outbound else SpanKind.SERVER,
            status=status,
            start_time=end_ns - rec.total_ns,
            end_time=end_ns,
            instrumentation_scope=self.scope,
        )

    def shutdown(self) -> None:
        self.processor.shutdown()


def otlp_sink(endpoint: str, node: str, ratio: float) -> SpanSink:
    """A ``SpanSink`` exporting to ``endpoint`` (OTLP/HTTP protobuf, e.g.
    ``http://collector:4318/v1/traces``) through the SDK's ``BatchSpanProcessor``; raises
    ``ExportUnavailable`` when the extra is not installed."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ExportUnavailable(INSTALL_HINT) from exc
    resource = Resource.create({"service.name": "gossipmesh-sidecar", "host.name": node})
    # The SDK's defaults: an export every 5 s or 512 spans, whichever comes first; each export
    # is an HTTP request on the SDK's thread, so fewer, fuller batches cost less per span.
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    return SpanSink(processor, resource, ratio)


__all__ = ["INSTALL_HINT", "ExportUnavailable", "SpanSink", "otlp_sink"]
