"""Span export's pure parts: the sampling test on the trace id, the span a record becomes, and a
clear refusal without the otel extra."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from test_routing import canary_directory

from gossipmesh.proxy.http1 import RequestHead
from gossipmesh.proxy.pipeline import Exchange
from gossipmesh.proxy.request_log import Probe, RequestRecord
from gossipmesh.proxy.spans import INSTALL_HINT, ExportUnavailable, SpanSink, otlp_sink


class Processor:
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_end(self, span: Any) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass


def probe(trace: str, flags: str = "01") -> Probe:
    """A probe whose exchange sent this traceparent (``hop``: the one field the sink reads). A
    real Exchange: in the compiled build a Probe's ``x`` takes nothing else."""
    dest = canary_directory().view.dests[("api", ("v1",))]
    x = Exchange(RequestHead(), 0, "", dest, b"/")
    x.hop = f"traceparent: 00-{trace}-{'ab' * 8}-{flags}\r\n".encode()
    p = Probe()
    p.x = x
    return p


def test_the_ratio_tests_the_trace_ids_low_64_bits() -> None:
    from opentelemetry.sdk.resources import Resource

    sink = SpanSink(Processor(), Resource.create({}), ratio=0.25)
    low = "f" * 16 + "0" * 15 + "1"  # low 64 bits tiny: under any ratio above 0
    high = "0" * 16 + "f" * 16  # low 64 bits at the top: over any ratio below 1
    assert sink.wants(probe(low)) and not sink.wants(probe(high))
    assert not sink.wants(probe(low, "00"))  # "not sampled" by the caller: never
    sink.set_ratio(0.0)
    assert not sink.wants(probe(low))
    sink.set_ratio(1.0)
    assert sink.wants(probe(high))
    assert not sink.wants(Probe())  # no hop: the request never left (a proxy error early on)


def test_a_record_becomes_a_span_with_its_ids_and_parent() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import SpanKind, StatusCode

    proc = Processor()
    sink = SpanSink(proc, Resource.create({"host.name": "n1"}), ratio=1.0)
    rec = RequestRecord()
    rec.ts, rec.total_ns = 1_700_000_000.5, 2_000_000
    rec.trace_id, rec.span_id, rec.parent_span_id = "1" * 32, "2" * 16, "3" * 16
    rec.direction, rec.service, rec.status, rec.error = "inbound", "api", 503, "overloaded"
    sink.take(rec)
    (span,) = proc.spans
    assert span.context.trace_id == int("1" * 32, 16) and span.context.span_id == int("2" * 16, 16)
    assert span.parent.span_id == int("3" * 16, 16) and span.kind is SpanKind.SERVER
    assert span.end_time - span.start_time == 2_000_000 and span.name == "inbound api"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "overloaded"


def test_without_the_extra_the_refusal_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like to import
    with pytest.raises(ExportUnavailable, match="gossipmesh\\[otel\\]"):
        otlp_sink("http://127.0.0.1:1/v1/traces", "n1", 1.0)
    assert "pip install" in INSTALL_HINT
