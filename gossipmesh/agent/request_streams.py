"""The per-request stream wired into the sidecar: access log, taps and (with the extra) spans.

``RequestStreams(sidecar)`` is built with the sidecar (before the agent runs: the ``tap`` stream
kind and ``/v1/tap`` must be registered before the first packet or request); ``start`` runs once
the proxy exists, in the sidecar's nursery: it names the node in every record, opens the access
log (agent/access_log.py) and starts its writer, the tap hub (agent/tap.py) and, with
``--otlp-endpoint``, span export (proxy/spans.py). Their counters are in ``/metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from gossipmesh.agent.access_log import RequestLogCollector, open_access_log
from gossipmesh.agent.tap import TapHub
from gossipmesh.config.schema import TelemetryConfig, validate_entity
from gossipmesh.errors import ConfigValidationError
from gossipmesh.proxy.record_sinks import AccessLog
from gossipmesh.proxy.spans import ExportUnavailable, SpanSink, otlp_sink

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar
    from gossipmesh.proxy.server import Proxy


class RequestStreams:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.access: AccessLog | None = None
        self.spans: SpanSink | None = None
        self.taps = TapHub(sidecar)
        sidecar.registry.register(RequestLogCollector(
            lambda: self.access, self.taps.stats,
            lambda: self.spans.exported if self.spans is not None else 0,
        ))  # fmt: skip

    async def start(self, nursery: trio.Nursery, proxy: Proxy | None) -> None:
        sidecar = self.sidecar
        log = sidecar.agent.log
        settings = sidecar.settings
        if proxy is not None:
            proxy.requests.node = sidecar.name
            self.access = open_access_log(settings)
            if self.access is not None:
                proxy.requests.add(self.access)
                nursery.start_soon(self.access.run)
                log.info("access_log", path=settings.access_log,
                         sample_ratio=settings.access_log_sample_ratio,
                         max_lines_per_s=settings.access_log_max_lines_per_s)  # fmt: skip
        elif settings.access_log is not None:
            log.warn("access_log_unused", detail="the access log needs the native proxy")
        if proxy is not None and settings.otlp_endpoint is not None:
            await nursery.start(self.export_spans, proxy, settings.otlp_endpoint)
        if proxy is not None and settings.proxy_workers > 1:
            # Request records do not cross the workers' control channel (worker_pool.py).
            log.warn("request_streams_worker_0_only", workers=settings.proxy_workers,
                     detail="taps and spans see only the requests the agent's own proxy process "
                     "(worker 0) serves; the access log has every process's lines")  # fmt: skip
        await nursery.start(self.taps.run)

    def sample_ratio(self) -> float:
        """``telemetry/mesh``'s trace ratio in the replicated document (its default if unset)."""
        source = self.sidecar.agent.config
        body = dict(source.items("telemetry/")).get("telemetry/mesh") if source else None
        if body is not None:
            try:
                entity = validate_entity("telemetry", "mesh", body)
            except ConfigValidationError:
                entity = None  # the document refuses invalid values; keep the default then
            if isinstance(entity, TelemetryConfig):
                return entity.trace_sample_ratio
        return TelemetryConfig().trace_sample_ratio

    async def export_spans(
        self, proxy: Proxy, endpoint: str, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """A span per sampled hop to ``endpoint`` (proxy/spans.py) until the sidecar stops."""
        from gossipmesh.agent.transport import AgentStartError

        agent = self.sidecar.agent
        try:
            sink = otlp_sink(endpoint, self.sidecar.name, self.sample_ratio())
        except ExportUnavailable as exc:
            raise AgentStartError(f"--otlp-endpoint: {exc}") from exc
        self.spans = sink
        proxy.requests.add(sink)
        ratio = self.sample_ratio()
        agent.log.info("span_export", endpoint=endpoint, sample_ratio=ratio)

        def changed(keys: frozenset[str]) -> None:
            if any(k.startswith("telemetry/") for k in keys):
                sink.set_ratio(self.sample_ratio())
                agent.log.info("span_sampling", sample_ratio=self.sample_ratio())

        if agent.config is not None:
            agent.config.add_change_listener(changed)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            proxy.requests.remove(sink)
            sink.processor.force_flush(1000)  # what is queued, within a second, at exit


__all__ = ["RequestStreams"]
