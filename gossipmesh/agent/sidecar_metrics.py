"""The agent's own Prometheus families on ``/metrics`` (beside the proxy's): build, members,
drops, record and membership events, every counter by name, the gossip port's and the admin
API's limits and their use, catalog endpoints and instance health. Read from the agent's plain
structures at scrape time (metric_export.py: prometheus_client is imported at the first scrape).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gossipmesh.agent import http
from gossipmesh.agent.config_metrics import config_families
from gossipmesh.buildinfo import current_build
from gossipmesh.metric_export import families
from gossipmesh.version import package_version, python_version

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from gossipmesh.agent.runtime import Agent
    from gossipmesh.agent.sidecar import Sidecar


class AgentCollector:
    """Agent gauges and counters, read from the agent's plain structures at scrape time."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.s = sidecar

    def collect(self) -> Iterator[Metric]:
        fam = families()
        s = self.s
        counters = dict(s.agent.counters)
        build = fam.gauge(
            "gossipmesh_build_info",
            "Always 1; the labels say which gossipmesh, Python and build (mypyc or pure) this "
            "agent runs",
            labels=["version", "python", "build"],
        )
        build.add_metric([package_version(), python_version(), current_build().kind], 1)
        yield build
        members = fam.gauge(
            "gossipmesh_agent_members", "Members this agent knows, by state", labels=["state"]
        )
        for state, n in sorted(s.members_by_state.items()):
            members.add_metric([state], n)
        yield members
        dropped = fam.counter(
            "gossipmesh_agent_dropped", "Inputs dropped, by reason", labels=["reason"]
        )
        for key, n in sorted(counters.items()):
            if key.startswith("dropped."):
                dropped.add_metric([key.removeprefix("dropped.")], n)
        yield dropped
        records = fam.counter(
            "gossipmesh_agent_records",
            "Node-record events: offer outcomes, decode failures, syncs",
            labels=["event"],
        )
        for key, n in sorted(counters.items()):
            if key.startswith("records."):
                records.add_metric([key.removeprefix("records.")], n)
        yield records
        # Every agent counter by name, rejections included (``admin.unauthorized``, the signed
        # layers' refusals): what /v1/health's ``counters`` shows, for Prometheus.
        events = fam.counter(
            "gossipmesh_agent_events", "Every agent counter, by name", labels=["name"]
        )
        for key, n in sorted(counters.items()):
            events.add_metric([key], n)
        yield events
        yield from config_families(counters)
        membership = fam.counter(
            "gossipmesh_agent_membership_rejected",
            "Membership claims refused (forged, unsigned, out of bounds, over budget), by reason",
            labels=["reason"],
        )
        for key, n in sorted(s.agent.core_stats.items()):
            if key.startswith("reject."):
                membership.add_metric([key.removeprefix("reject.")], n)
        yield membership
        yield from port_gauges(s.agent)
        yield fam.counter("gossipmesh_agent_catalog_rebuilds", "Catalog rebuilds", value=s.rebuilds)
        yield fam.counter(
            "gossipmesh_agent_record_publishes", "Own node record publishes", value=s.publishes
        )
        endpoints = fam.gauge(
            "gossipmesh_agent_endpoints", "Routable endpoints per service", labels=["service"]
        )
        for svc, eps in s.catalog.endpoints.items():
            endpoints.add_metric([svc], len(eps))
        yield endpoints
        health = fam.gauge(
            "gossipmesh_agent_instances",
            "Service instances in the catalog by health (passing, warning, critical, unknown)",
            labels=["service", "health"],
        )
        by_health: dict[tuple[str, str], int] = {}
        for inst in s.catalog.instances:
            pair = (inst.service, str(inst.current_health))
            by_health[pair] = by_health.get(pair, 0) + 1
        for (svc, state), n in sorted(by_health.items()):
            health.add_metric([svc, state], n)
        yield health


def port_gauges(agent: Agent) -> Iterator[Metric]:
    """The gossip port's and the admin API's limits, and how much of each is in use."""
    fam = families()
    transport = agent.transport
    limits = fam.gauge(
        "gossipmesh_agent_limit",
        "The gossip port's and the admin API's limits (docs/LIMITS.md)",
        labels=["name"],
    )
    for name, value in transport.limits.as_dict().items():
        limits.add_metric([name], value)
    limits.add_metric(["admin_connections_max"], http.MAX_CONNECTIONS)
    limits.add_metric(["admin_monitors_max"], http.MAX_MONITORS)
    limits.add_metric(["admin_request_timeout_s"], http.REQUEST_TIMEOUT_S)
    limits.add_metric(["admin_monitor_max_s"], http.MONITOR_MAX_S)
    limits.add_metric(["admin_send_timeout_s"], http.SEND_TIMEOUT_S)
    limits.add_metric(["stream_timeout_s"], transport.stream_timeout_s)
    yield limits
    used = fam.gauge(
        "gossipmesh_agent_in_use",
        "How much of each gossip port and admin API limit is in use now",
        labels=["name"],
    )
    used.add_metric(["stream_unverified"], transport.unverified)
    used.add_metric(["stream_verified"], transport.verified)
    used.add_metric(["stream_buffered_bytes"], transport.budget.used)
    admin = agent.admin_server
    if admin is not None:
        used.add_metric(["admin_connections"], admin.connections)
        used.add_metric(["admin_monitors"], admin.monitors)
    yield used


__all__ = ["AgentCollector", "port_gauges"]
