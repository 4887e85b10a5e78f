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
from gossipmesh.proxy.request_log import AccessLog

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar
    from gossipmesh.proxy.server import Proxy


class RequestStreams:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.access: AccessLog | None = None
        self.taps = TapHub(sidecar)
        sidecar.registry.register(RequestLogCollector(lambda: self.access, self.taps.stats))

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
        await nursery.start(self.taps.run)


__all__ = ["RequestStreams"]
