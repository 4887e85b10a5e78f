"""Prometheus exposition, with ``prometheus_client`` imported at the first scrape, not at start.

Why: ``prometheus_client`` pulls in ``http.server``, ``wsgiref``, ``email`` and ``gzip`` for its
own HTTP server, which the agent never runs: 2.5 MiB of an idle agent's RSS (issue 19) for
metrics that an agent nobody scrapes never renders. The agent and the proxy keep their counters
in plain structures and turn them into metric families only when ``/metrics`` is read, so nothing
else needs the library.

The one lazy boundary is ``families()`` (the metric family classes, cached after the first call);
``Registry`` holds collectors from the start and builds prometheus_client's registry on the first
``render``. A collector is anything with ``collect()`` yielding metric families (``Collector``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )


class Collector(Protocol):
    def collect(self) -> Iterator[Metric]: ...


@dataclass(frozen=True, slots=True)
class Families:
    """prometheus_client's metric family classes, as ``families()`` hands them out."""

    counter: type[CounterMetricFamily]
    gauge: type[GaugeMetricFamily]
    histogram: type[HistogramMetricFamily]


@cache
def families() -> Families:
    """The metric family classes; the first call imports prometheus_client (collect time only)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    return Families(CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)


class Registry:
    """Collectors, rendered in the Prometheus text format (``auto_describe`` off: no collect at
    registration, so registering imports nothing either)."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self._registry: CollectorRegistry | None = None

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)
        if self._registry is not None:
            self._registry.register(collector)

    def collect(self) -> Iterator[Metric]:
        """Every collector's families, in registration order (to merge several registries)."""
        for collector in self._collectors:
            yield from collector.collect()

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            for collector in self._collectors:
                self._registry.register(collector)
        return generate_latest(self._registry)


__all__ = ["Collector", "Families", "Registry", "families"]
