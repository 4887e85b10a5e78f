"""The agent's side of the per-request stream: the access log's file and its counters.

``open_access_log`` opens ``--access-log FILE`` (appended, created 0600 under the agent's umask)
or stdout (``-``) and returns the proxy's ``AccessLog`` sink with the TOML's sampling ratio and
rate limit; its writer runs in the sidecar's nursery (``AccessLog.run``). ``RequestLogCollector``
puts the access log's and the taps' counters in ``/metrics``:

- ``gossipmesh_proxy_access_log_lines_total{outcome}``: ``written``, ``dropped_rate`` (over
  ``access_log_max_lines_per_s``), ``dropped_buffer`` (the writer fell behind), ``write_errors``;
- ``gossipmesh_proxy_taps`` (open now) and ``gossipmesh_proxy_tap_records_total{outcome}``:
  ``sent``, ``dropped`` (a slow reader), ``skipped`` (over a tap's ``max_rps``);
- ``gossipmesh_proxy_spans_exported_total``: spans handed to the OTLP exporter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gossipmesh.agent.sidecar_config import SidecarSettings
from gossipmesh.metric_export import families
from gossipmesh.proxy.record_sinks import AccessLog

if TYPE_CHECKING:
    from prometheus_client.core import Metric


def open_access_log(settings: SidecarSettings) -> AccessLog | None:
    """The access log ``settings`` ask for (None: none); AgentStartError if it cannot be opened."""
    from gossipmesh.agent.transport import AgentStartError

    path = settings.access_log
    if path is None:
        return None
    try:
        fd = access_log_fd(path)
    except OSError as exc:
        raise AgentStartError(f"cannot open the access log {path}: {exc.strerror or exc}") from exc
    return AccessLog(fd, settings.access_log_sample_ratio, settings.access_log_max_lines_per_s)


def access_log_fd(path: str) -> int:
    """``path`` opened for appending (created 0600), or a copy of stdout for ``-``. Several
    processes may append to one file (proxy workers): each batch is one ``write`` of whole lines
    with ``O_APPEND``, so lines never interleave in a regular file."""
    if path == "-":
        return os.dup(1)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


class RequestLogCollector:
    """The access log's and the taps' counters, read at scrape time."""

    def __init__(
        self,
        access: Callable[[], AccessLog | None],
        taps: Callable[[], dict[str, Any]],
        spans: Callable[[], int],
    ) -> None:
        self.access = access
        self.taps = taps
        self.spans = spans

    def collect(self) -> Iterator[Metric]:
        fam = families()
        lines = fam.counter(
            "gossipmesh_proxy_access_log_lines",
            "Access log lines: written, dropped over the rate limit or a full buffer, write errors",
            labels=["outcome"],
        )
        access = self.access()
        if access is not None:
            for outcome, n in access.counters.items():
                lines.add_metric([outcome], n)
        yield lines
        taps = self.taps()
        yield fam.gauge("gossipmesh_proxy_taps", "Tap streams open now", value=taps["open"])
        records = fam.counter(
            "gossipmesh_proxy_tap_records",
            "Records of tap streams: sent, dropped for a slow reader, skipped over max_rps",
            labels=["outcome"],
        )
        for outcome in ("sent", "dropped", "skipped"):
            records.add_metric([outcome], taps[outcome])
        yield records
        yield fam.counter(
            "gossipmesh_proxy_spans_exported",
            "Spans handed to the OTLP exporter (--otlp-endpoint); its own queue drops beyond 2048",
            value=self.spans(),
        )


__all__ = ["RequestLogCollector", "open_access_log"]
