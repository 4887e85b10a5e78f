"""The external engines' counters as the native proxy's Prometheus families. Pure.

HAProxy's ``show stat`` has per-backend response classes, retries and redispatches, current
sessions and per-server down transitions; they fill a ``ProxyMetrics`` the way the native proxy
fills its own, so ``/metrics`` keeps its family names and labels (``route`` is empty: HAProxy
counts per backend, not per route; ``destination`` is the backend's cluster, ``node`` empty). Generated answers (404 ``no_route``, 403, the backends' 503s)
are counted with the responses, not under ``gossipmesh_proxy_errors``.

nginx's open-source build has only ``stub_status``: connections (open, accepted) and a request
total, without service or direction. They are exported as ``direction="all"`` and
``gossipmesh_dataplane_requests_total``; the per-service families are absent (docs/DATAPLANES.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gossipmesh.dataplane.haproxy_config import backend_name, local_backend_name
from gossipmesh.dataplane.model import Layout, LocalInstance
from gossipmesh.proxy.metrics import ProxyMetrics, render_metrics
from gossipmesh.proxy.routing import dest_label

_CLASSES = (("hrsp_1xx", 100), ("hrsp_2xx", 200), ("hrsp_3xx", 300), ("hrsp_4xx", 400),
            ("hrsp_5xx", 500))  # fmt: skip
_FRONTENDS = {"gm-outbound": "outbound", "gm-inbound": "inbound"}


def _int(row: Mapping[str, str], key: str) -> int:
    value = row.get(key, "")
    return int(value) if value.isdigit() else 0


def _add(table: dict[str, int], key: str, n: int) -> None:
    table[key] = table.get(key, 0) + n


def haproxy_metrics(
    rows: Sequence[Mapping[str, str]], layout: Layout, local: Sequence[LocalInstance]
) -> bytes:
    """Prometheus text from ``show stat`` rows (``haproxy_api.parse_stat_csv``)."""
    owners: dict[str, tuple[str, str, str]] = {
        backend_name(b.key): (b.service, dest_label(*b.key), "outbound") for b in layout.backends
    }
    for i, inst in enumerate(local):
        owners[local_backend_name(i)] = (inst.service, inst.service, "inbound")
    m = ProxyMetrics()
    for row in rows:
        px, sv = row.get("pxname", ""), row.get("svname", "")
        if px in _FRONTENDS and sv == "FRONTEND":
            d = _FRONTENDS[px]
            m.open_connections[d] = _int(row, "scur")
            m.connections_total[d] = _int(row, "stot")
            m.bytes_in[d] = _int(row, "bin")
            m.bytes_out[d] = _int(row, "bout")
            continue
        owner = owners.get(px)
        if owner is None:
            continue
        service, dest, direction = owner
        if sv == "BACKEND":
            for column, status in _CLASSES:
                n = _int(row, column)
                if n:
                    key = (service, "", dest, "", status, direction)
                    m.requests[key] = m.requests.get(key, 0) + n
            if direction == "outbound":
                _add(m.upstream_connections, service, _int(row, "scur"))
                _add(m.retries, service, _int(row, "wretr") + _int(row, "wredis"))
        elif direction == "outbound":
            _add(m.ejections, service, _int(row, "chkdown"))
    return render_metrics(m)


def parse_stub_status(text: str) -> dict[str, int]:
    """nginx's ``stub_status`` page: active, accepts, handled, requests, reading, writing,
    waiting (missing or garbled fields are left out)."""
    out: dict[str, int] = {}
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Active connections:"):
            value = line.split(":", 1)[1].strip()
            if value.isdigit():
                out["active"] = int(value)
        elif line.startswith("server accepts") and i + 1 < len(lines):
            numbers = lines[i + 1].split()
            if len(numbers) == 3 and all(n.isdigit() for n in numbers):
                out.update(zip(("accepts", "handled", "requests"), map(int, numbers), strict=True))
        elif line.startswith("Reading:"):
            parts = line.replace(":", "").split()
            for name, value in zip(parts[::2], parts[1::2], strict=False):
                if value.isdigit():
                    out[name.lower()] = int(value)
    return out


def nginx_metrics(stub: Mapping[str, int]) -> bytes:
    m = ProxyMetrics()
    m.open_connections = {"all": stub.get("active", 0)}
    m.connections_total = {"all": stub.get("accepts", 0)}
    m.bytes_in, m.bytes_out = {}, {}
    text = render_metrics(m)
    requests = stub.get("requests", 0)
    return (
        text
        + (
            "# HELP gossipmesh_dataplane_requests_total Requests the external proxy served (every"
            " pass, internal hops included)\n"
            "# TYPE gossipmesh_dataplane_requests_total counter\n"
            f'gossipmesh_dataplane_requests_total{{engine="nginx"}} {requests}.0\n'
        ).encode()
    )


__all__ = ["haproxy_metrics", "nginx_metrics", "parse_stub_status"]
