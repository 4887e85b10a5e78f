"""A proxy worker's counters across the control channel, and every process's counters as one.

Theory of operation
-------------------
Each proxy process (the agent's own, worker 0, and each worker process) counts in its own
``ProxyMetrics`` (proxy/metrics.py: plain dicts keyed by label tuples). A worker answers the
agent's metrics request with ``snapshot``: every counter dict as rows ``[*key, value]``, plus its
endpoint states (outlier ejections are per process). The agent rebuilds a ``ProxyMetrics`` with
``restore``, which trusts nothing: ``FIELDS`` says each dict's key shape, every string is
bounded, every count a non-negative integer, rows per field at most ``MAX_ROWS``; a violation
is a ``ChannelError`` and the worker is restarted by the pool.

Then the agent shows them together:

- ``render_all``: one Prometheus exposition with each family once, the samples of every process
  labelled ``worker="N"`` (the text format allows a family's HELP/TYPE once, so expositions are
  merged by family, not concatenated);
- ``combined``: one ``ProxyMetrics`` with the request, latency and denial counts summed, what the
  traffic ring (agent/traffic.py, ``/v1/stats``) reads;
- ``merge_states``: an endpoint is ejected (or down) when any process has it so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gossipmesh.agent.worker_channel import MAX_TEXT, ChannelError
from gossipmesh.metric_export import Registry
from gossipmesh.proxy.metrics import LATENCY_BUCKETS_NS, MAX_SERIES, ProxyMetrics

if TYPE_CHECKING:
    from prometheus_client.core import Metric

S, I, P = "s", "i", "p"  # noqa: E741 - a key part: a string, a status (< 1000), a port
# Every counter dict of ProxyMetrics a worker reports, with its key's parts. Values are counts,
# except ``latency`` (a list of bucket counts).
FIELDS: dict[str, tuple[str, ...]] = {
    "requests": (S, S, S, S, I, S),
    "latency": (S, S, S),
    "latency_sum_ns": (S, S, S),
    "overflow": (S,),
    "open_connections": (S,),
    "connections_total": (S,),
    "upstream_connections": (S,),
    "retries": (S,),
    "budget_exhausted": (S,),
    "ejections": (S,),
    "breaker_trips": (S, S),
    "errors": (S, S),
    "bytes_in": (S,),
    "bytes_out": (S,),
    "listener_connections": (S,),
    "refused": (S, S),
    "head_timeouts": (S,),
    "idle_closes": (S,),
    "tls_handshakes": (S, S),
    "tls_rejected": (S, S),
    "tls_closed": (S,),
    "denied": (S, S),
    "plaintext": (S,),
    "grpc_status": (S, S, S),
    "h2_connections": (S,),
    "h2_protocol_errors": (S,),
    "h2_floods": (S, S),
}
MAX_ROWS = 2 * MAX_SERIES + 64  # a label set's cap, plus its ``other`` keys by status
STATE_FIELDS = ("inflight", "ewma_ms", "ejected", "down", "ejected_until_ms", "times_ejected",
                "consecutive_failures")  # fmt: skip
BUCKETS = len(LATENCY_BUCKETS_NS) + 1
MAX_COUNT = 2**63

_INT_MAX = {S: 0, I: 1000, P: 65536}

EndpointStates = dict[tuple[str, str, int], dict[str, float]]


def snapshot(metrics: ProxyMetrics, states: EndpointStates) -> dict[str, Any]:
    """In the worker: its counters and endpoint states as plain msgpack data."""
    out: dict[str, Any] = {}
    for name, shape in FIELDS.items():
        values: dict[Any, Any] = getattr(metrics, name)
        if len(shape) == 1:
            out[name] = [[k, v] for k, v in list(values.items())]
        else:
            out[name] = [[*k, v] for k, v in list(values.items())]
    out["plaintext_enabled"] = metrics.plaintext_enabled
    out["endpoints"] = [[*key, *(st[f] for f in STATE_FIELDS)] for key, st in states.items()]
    return out


def restore(data: dict[str, Any], worker: str) -> tuple[ProxyMetrics, EndpointStates]:
    """In the agent: a worker's snapshot, checked field by field (``ChannelError`` if not)."""
    m = ProxyMetrics(worker=worker)
    for name, shape in FIELDS.items():
        rows = data.get(name, [])
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise ChannelError(f"metrics field {name} not a list of at most {MAX_ROWS} rows")
        target: dict[Any, Any] = {}
        for row in rows:
            if not isinstance(row, list) or len(row) != len(shape) + 1:
                raise ChannelError(f"metrics field {name}: a row of the wrong shape")
            key = tuple(_part(name, kind, v) for kind, v in zip(shape, row, strict=False))
            value = row[-1]
            if name == "latency":
                if not isinstance(value, list) or len(value) != BUCKETS:
                    raise ChannelError("latency: not a list of bucket counts")
                target[key] = [_count(name, c) for c in value]
            else:
                target[key[0] if len(shape) == 1 else key] = _count(name, value)
        setattr(m, name, target)
    m.plaintext_enabled = 1 if data.get("plaintext_enabled") == 1 else 0
    return m, _states(data.get("endpoints", []))


def _states(rows: object) -> EndpointStates:
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise ChannelError("endpoints not a list of at most MAX_ROWS rows")
    out: EndpointStates = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != 3 + len(STATE_FIELDS):
            raise ChannelError("endpoints: a row of the wrong shape")
        node, address, port = (
            _part("endpoints", k, v) for k, v in zip((S, S, P), row[:3], strict=True)
        )
        values = row[3:]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < MAX_COUNT:
                raise ChannelError("endpoints: not a non-negative number")
        out[(str(node), str(address), int(port))] = dict(zip(STATE_FIELDS, values, strict=True))
    return out


def _part(field: str, kind: str, value: object) -> str | int:
    if kind == S and isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _INT_MAX[kind]:
        return value
    raise ChannelError(f"metrics field {field}: a bad label")


def _count(field: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT:
        return value
    raise ChannelError(f"metrics field {field}: not a count")


def combined(parts: Sequence[ProxyMetrics]) -> ProxyMetrics:
    """Requests, latency histograms and denials of every process, summed (for the traffic
    ring); ``parts[0]`` itself when there is only one."""
    if len(parts) == 1:
        return parts[0]
    out = ProxyMetrics()
    for m in parts:
        for key, n in list(m.requests.items()):
            out.requests[key] = out.requests.get(key, 0) + n
        for lkey, counts in list(m.latency.items()):
            acc = out.latency.setdefault(lkey, [0] * BUCKETS)
            for i, c in enumerate(counts):
                acc[i] += c
        for dkey, n in list(m.denied.items()):
            out.denied[dkey] = out.denied.get(dkey, 0) + n
    return out


def merge_states(parts: Sequence[EndpointStates]) -> EndpointStates:
    """An endpoint's state over every process: in-flight summed, ejected/down if any says so."""
    out: EndpointStates = {}
    for states in parts:
        for key, st in states.items():
            acc = out.get(key)
            if acc is None:
                out[key] = dict(st)
                continue
            acc["inflight"] += st["inflight"]
            for name in ("ejected", "down", "ejected_until_ms", "times_ejected",
                         "consecutive_failures", "ewma_ms"):  # fmt: skip
                acc[name] = max(acc[name], st[name])
    return out


def render_all(parts: Sequence[ProxyMetrics]) -> bytes:
    """One exposition of several processes' metrics: each family once, samples of all."""
    if len(parts) == 1:
        return parts[0].render()
    registry = Registry()
    registry.register(_Merged(parts))
    return registry.render()


class _Merged:
    def __init__(self, parts: Sequence[ProxyMetrics]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, Metric] = {}
        for m in self.parts:
            for fam in m.registry.collect():
                first = by_name.setdefault(fam.name, fam)
                if first is not fam:
                    first.samples.extend(fam.samples)
        yield from by_name.values()


__all__ = [
    "FIELDS",
    "MAX_ROWS",
    "EndpointStates",
    "combined",
    "merge_states",
    "render_all",
    "restore",
    "snapshot",
]
