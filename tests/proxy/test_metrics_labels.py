"""Metrics that show the mesh: route, destination (service@subset), endpoint node and status class
on every request; latency per destination; every label set capped, with an ``other`` bucket."""

from __future__ import annotations

import trio
from proxy_helpers import Client, route, start_mesh

from gossipmesh.proxy.metrics import OTHER, ProxyMetrics, render_metrics, status_class


async def test_a_split_is_visible_per_destination_and_node(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["stable", "canary"]})
    split = route(
        "split",
        {
            "hosts": ["api"],
            "destinations": [
                {"service": "api", "weight": 80, "tags": ["v1"]},
                {"service": "api", "weight": 20, "tags": ["v2"]},
            ],
        },
    )
    mesh.set_table(routes={"split": split}, tags={"stable": ("v1",), "canary": ("v2",)})
    c = await Client.open(mesh.outbound)
    bodies: dict[bytes, int] = {}
    for _ in range(300):
        r = await c.request("GET", "/name", "api")
        bodies[r.body] = bodies.get(r.body, 0) + 1
    r = await c.request("GET", "/name", "nosuch")
    assert r.status == 404
    await c.aclose()
    out = mesh.a.metrics.requests
    # What the backends saw is exactly what the labels say, per subset.
    assert out[("api", "split", "api@v1", "b", 200, "outbound")] == bodies[b"stable"]
    assert out[("api", "split", "api@v2", "b", 200, "outbound")] == bodies[b"canary"]
    assert out[("", "", "", "", 404, "outbound")] == 1  # no label from the client's Host
    text = render_metrics(mesh.a.metrics).decode()
    assert (
        'gossipmesh_proxy_requests_total{destination="api@v2",direction="outbound",node="b",'
        f'route="split",service="api",status_class="2xx"}} {float(bodies[b"canary"])}'
    ) in text
    # A latency histogram per destination, whose count is that destination's requests.
    assert (
        'gossipmesh_proxy_request_duration_seconds_count{destination="api@v1",'
        f'direction="outbound",service="api"}} {float(bodies[b"stable"])}'
    ) in text
    assert 'gossipmesh_proxy_label_overflow_total{metric="requests"}' not in text


def test_a_full_label_set_counts_new_keys_under_other() -> None:
    m = ProxyMetrics(max_series=2)
    m.observe("a", "r", 200, "outbound", 1000, "a@v1", "n1")
    m.observe("b", "r", 200, "outbound", 1000, "b", "n2")
    for i in range(5):  # five new series past the cap: all under other, counted
        m.observe(f"host{i}", "", 404, "outbound", 1000)
    m.observe("a", "r", 200, "outbound", 1000, "a@v1", "n1")  # a known key keeps counting
    assert m.requests == {
        ("a", "r", "a@v1", "n1", 200, "outbound"): 2,
        ("b", "r", "b", "n2", 200, "outbound"): 1,
        (OTHER, OTHER, OTHER, OTHER, 404, "outbound"): 5,
    }
    assert set(m.latency) == {("a", "a@v1", "outbound"), ("b", "b", "outbound"),
                              (OTHER, OTHER, "outbound")}  # fmt: skip
    assert sum(m.latency[(OTHER, OTHER, "outbound")]) == 5
    assert m.overflow == {"requests": 5, "latency": 5}
    for i in range(4):
        m.error(f"host{i}", "no_route")
    assert m.errors == {("host0", "no_route"): 1, ("host1", "no_route"): 1,
                        (OTHER, "no_route"): 2}  # fmt: skip
    text = m.render().decode()
    assert 'gossipmesh_proxy_label_overflow_total{metric="requests"} 5.0' in text
    assert 'gossipmesh_proxy_label_overflow_total{metric="errors"} 2.0' in text
    assert 'node="other",route="other",service="other",status_class="4xx"} 5.0' in text


def test_status_classes() -> None:
    assert [status_class(s) for s in (0, 101, 200, 302, 404, 503, 999)] == [
        "1xx", "1xx", "2xx", "3xx", "4xx", "5xx", "5xx"
    ]  # fmt: skip
