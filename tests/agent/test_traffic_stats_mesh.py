"""``GET /v1/stats``, ``gossipmesh stat`` and ``gossipmesh top`` on a real three-agent mesh with an
80/20 canary: what they report equals what the backends served, from any agent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from agent_procs import Procs, requires_loopback_aliases
from traffic_mesh import CanaryMesh, cli, traffic

pytestmark = requires_loopback_aliases


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[CanaryMesh]:
    m = CanaryMesh(procs)
    try:
        yield m.start()
    finally:
        m.close()


def test_stats_from_another_agent_match_what_the_backends_served(mesh: CanaryMesh) -> None:
    traffic(mesh, 100)
    assert mesh.get("/", host="nowhere.example")[0] == 404
    # The mesh is younger than the widest window: every request since it started is in it,
    # the ones its start-up sent included (``mesh.sent`` counts them all).
    seen = {body: n for (host, _, body), n in mesh.sent.items() if host == "web"}
    total = sum(seen.values())
    stats = mesh.agents["a3"].client.stats(window_s=60)  # a3 serves, a1 called: a fan-out
    assert stats["nodes"] == ["a1", "a2", "a3"] and stats["unreachable"] == []
    web = {(s["direction"], s["service"]): s for s in stats["services"]}
    out = web[("outbound", "web")]
    assert out["requests"] == total and out["success_rate"] == 1.0
    assert out["rps"] > 0 and out["p50_ms"] is not None and out["p50_ms"] <= out["p99_ms"]
    assert web[("inbound", "web")]["requests"] == total  # counted again at a2's and a3's inbound
    # A Host naming no service counts under the empty service (a client's Host is no label).
    assert web[("outbound", "")]["success_rate"] == 1.0  # a 404 is an answer
    assert all(s["service"] != "nowhere.example" for s in stats["services"])
    dests = {d["destination"]: d for d in stats["destinations"] if d["direction"] == "outbound"}
    assert dests["web@v1"]["requests"] == seen[b"v1"]
    assert dests["web@v2"]["requests"] == seen[b"v2"]
    [route] = stats["routes"]
    assert route["route"] == "web-canary"
    split = {d["destination"]: d for d in route["destinations"]}
    assert split["web@v1"]["configured_share"] == 0.8 and split["web@v2"]["weight"] == 20
    assert split["web@v2"]["observed_share"] == round(seen[b"v2"] / total, 4)
    nodes = {p["node"] for p in stats["paths"] if p["direction"] == "outbound"}
    assert {"a2", "a3"} <= nodes
    local = mesh.agents["a3"].client.stats(window_s=60, scope="local")
    assert local["nodes"] == ["a3"]
    assert all(s["direction"] == "inbound" for s in local["services"])


def test_stat_and_top_commands(mesh: CanaryMesh) -> None:
    traffic(mesh, 50)
    admin = mesh.agents["a2"].admin
    out = cli("stat", "web", "--window", "60", "--json", "--agent", admin)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {s["service"] for s in data["services"]} == {"web"}
    assert data["routes"][0]["route"] == "web-canary"
    shown = cli("stat", "--window", "60", "--agent", admin)
    assert shown.returncode == 0, shown.stderr
    for text in ("web@v1", "web@v2", "web-canary", "80.0%", "20.0%", "P99 ms"):
        assert text in shown.stdout, shown.stdout
    top = cli("top", "--once", "--json", "--window", "60", "--agent", admin)
    assert top.returncode == 0, top.stderr
    paths = json.loads(top.stdout)["paths"]
    assert paths and paths[0]["route"] == "web-canary" and paths[0]["destination"] == "web@v1"
    rounds = cli("top", "--iterations", "2", "--interval", "0.2", "--agent", admin)
    assert rounds.returncode == 0 and rounds.stdout.count("busiest paths") == 2, rounds.stdout
    bad = cli("stat", "--window", "0", "--agent", admin)
    assert bad.returncode == 2 and "--window" in bad.stderr
