"""External data planes: HAProxy or nginx carry the sidecar's bytes, driven by the agent.

The control plane stays the agent's own (membership, health, the replicated config); with
``--dataplane haproxy|nginx`` the sidecar gives each routing snapshot to an ``ExternalPlane``
instead of the native proxy. The pieces, one job each:

- ``model.py``: the routing snapshot as backends, servers and routes (pure);
- ``diff.py``: runtime API change or reload (pure);
- ``haproxy_config.py``, ``nginx_config.py``: the engines' configuration files (pure);
- ``haproxy_api.py``: HAProxy's master CLI (commands, answers);
- ``plane.py``: coalescing, lifecycle, restarts, status; ``haproxy.py`` and ``nginx.py``: the
  two engines; ``process.py``: the child process; ``stats.py``: their counters as metrics.

docs/DATAPLANES.md says what each engine supports and how changes are applied.
"""

from __future__ import annotations

from collections import Counter

from gossipmesh.dataplane.model import ENGINES, EXTERNAL_ENGINES
from gossipmesh.dataplane.plane import UNSUPPORTED, ExternalPlane, Log, PlaneSettings
from gossipmesh.dataplane.process import DataplaneStartError, find_binary


def open_plane(settings: PlaneSettings, log: Log, counters: Counter[str]) -> ExternalPlane:
    """The supervisor for ``settings.engine`` (not started: ``await nursery.start(p.run)``)."""
    if settings.engine == "haproxy":
        from gossipmesh.dataplane.haproxy import HAProxyPlane

        return HAProxyPlane(settings, log, counters)
    if settings.engine == "nginx":
        from gossipmesh.dataplane.nginx import NginxPlane

        return NginxPlane(settings, log, counters)
    raise ValueError(f"no external data plane called {settings.engine!r}")


__all__ = [
    "ENGINES",
    "EXTERNAL_ENGINES",
    "UNSUPPORTED",
    "DataplaneStartError",
    "ExternalPlane",
    "PlaneSettings",
    "find_binary",
    "open_plane",
]
