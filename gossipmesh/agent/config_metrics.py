"""The config replica's activity as Prometheus families: writes, merges and rejections.

The replica core and the admin API count into the agent's counter table (``config.*``, also in
``/v1/health`` and, by name, in ``gossipmesh_agent_events``); these families give the three an
operator graphs first their own names: changes written through this agent, entries merged from
peers, and entries or requests refused, by reason (a merge's refusals, ``bad_signature`` ...,
and the admin API's, ``unsigned`` ...; both count under ``config.refused.REASON``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from gossipmesh.metric_export import families

if TYPE_CHECKING:
    from prometheus_client.core import Metric


def config_families(counters: Mapping[str, int]) -> Iterator[Metric]:
    fam = families()
    yield fam.counter(
        "gossipmesh_config_writes",
        "Config changes committed through this agent's admin API",
        value=counters.get("config.local_writes", 0),
    )
    yield fam.counter(
        "gossipmesh_config_merged_entries",
        "Config entries merged from peers (gossip, pushes and anti-entropy) that were new here",
        value=counters.get("config.merged_entries", 0),
    )
    yield fam.counter(
        "gossipmesh_config_merges_nothing_new",
        "Config deltas from peers that held nothing new (the end of an epidemic)",
        value=counters.get("config.merged_nothing_new", 0),
    )
    rejected = fam.counter(
        "gossipmesh_config_rejected",
        "Config entries and writes refused, by reason (merges and the admin API)",
        labels=["reason"],
    )
    for key, n in sorted(counters.items()):
        if key.startswith("config.refused."):
            rejected.add_metric([key.removeprefix("config.refused.")], n)
    yield rejected


__all__ = ["config_families"]
