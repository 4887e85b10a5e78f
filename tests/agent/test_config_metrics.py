"""The replica's writes, merges and rejections under their own Prometheus names."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from gossipmesh.agent.config_metrics import config_families


class _Families(Collector):
    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters

    def collect(self):  # type: ignore[no-untyped-def]
        return config_families(self.counters)


def test_writes_merges_and_rejections_by_reason() -> None:
    counters: Counter[str] = Counter()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(counters))
    empty = generate_latest(registry).decode()
    assert "gossipmesh_config_writes_total 0.0" in empty
    assert "gossipmesh_config_rejected_total{" not in empty
    counters.update({"config.local_writes": 3, "config.merged_entries": 7,
                     "config.merged_nothing_new": 2, "config.refused": 5,
                     "config.refused.unsigned": 2, "config.refused.bad_signature": 3,
                     "config.syncs": 9})  # fmt: skip
    lines = set(generate_latest(registry).decode().splitlines())
    assert "gossipmesh_config_writes_total 3.0" in lines
    assert "gossipmesh_config_merged_entries_total 7.0" in lines
    assert "gossipmesh_config_merges_nothing_new_total 2.0" in lines
    assert 'gossipmesh_config_rejected_total{reason="unsigned"} 2.0' in lines
    assert 'gossipmesh_config_rejected_total{reason="bad_signature"} 3.0' in lines
    assert not any("syncs" in ln for ln in lines)
