"""``--proxy-workers N`` on real agents with a real CA (test_mesh_mtls.py's mesh):

    app -> a1 outbound (3 processes) -> mTLS -> a2 inbound (2 processes) -> backend

Every request opens its own connection, so the kernel's SO_REUSEPORT spread decides which
process of a1 serves it; ``/metrics`` tells which one did (label ``worker``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, requires_loopback_aliases
from agent_procs import wait_until as wait_for
from test_mesh_mtls import LIFETIME_MS, Mesh, start_mesh

pytestmark = requires_loopback_aliases

SAMPLE_RE = re.compile(r"^gossipmesh_proxy_requests_total\{(?P<labels>[^}]*)\} (?P<n>\S+)$")


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[Mesh]:
    procs.backends = []  # type: ignore[attr-defined]
    try:
        m = start_mesh(procs, {"a1": ["--proxy-workers", "3"], "a2": ["--proxy-workers", "2"]})
        for agent, n in ((m.a1, 3), (m.a2, 2)):
            wait_for(f"{agent.name}'s workers", lambda a=agent, n=n: workers_up(a) == n, SETTLE_S)
        yield m
    finally:
        for b in procs.backends:  # type: ignore[attr-defined]
            b.kill()
            b.wait()


def get(ip: str, port: int, host: str, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def served_by_worker(text: str, direction: str) -> dict[str, float]:
    """Requests per ``worker`` label in one exposition, for ``direction``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if m is None or f'direction="{direction}"' not in m["labels"]:
            continue
        worker = re.search(r'worker="(\d+)"', m["labels"])
        assert worker is not None, f"a sample without a worker label: {line}"
        out[worker[1]] = out.get(worker[1], 0.0) + float(m["n"])
    return out


def health(agent: AgentProc) -> dict[str, Any]:
    status, body = get(agent.ip, agent.port + 1, "admin", "/v1/health")
    assert status in (200, 503), body
    return json.loads(body)


def workers_up(agent: AgentProc) -> int:
    """Proxy processes serving (the admin API answers before the sidecar has started its
    workers: until then there is no section)."""
    return int(health(agent).get("proxy_workers", {}).get("up", 0))


def worker_pids(agent: AgentProc) -> list[int]:
    rows = health(agent)["proxy_workers"]["workers"]
    return [r["pid"] for r in rows if r["worker"] != 0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_connections_spread_over_the_workers_and_all_succeed(mesh: Mesh) -> None:
    a1 = mesh.a1
    results = [get(a1.ip, mesh.out_port, "api", f"/n{i}") for i in range(90)]
    assert all(r == (200, f"api GET /n{i}".encode()) for i, r in enumerate(results)), results
    hp = health(a1)["proxy_workers"]
    assert hp["count"] == 3 and hp["up"] == 3, hp
    per_worker = served_by_worker(mesh.metrics(a1), "outbound")
    assert set(per_worker) <= {"0", "1", "2"}
    assert sum(per_worker.values()) >= 90
    assert len([w for w, n in per_worker.items() if n > 0]) >= 2, per_worker
    # The peer's inbound judged every caller's certificate in whichever process took it.
    inbound = served_by_worker(mesh.metrics(mesh.a2), "inbound")
    assert sum(inbound.values()) >= 90, inbound

    # /v1/stats counts the requests of every process (its ring is refreshed every second).
    def counted() -> float:
        stats = a1.client.stats(window_s=60, scope="local")
        rows = [r for r in stats["services"] if r["direction"] == "outbound"]
        return sum(r["requests"] for r in rows if r["service"] == "api")

    wait_for("a1's /v1/stats counts every worker's requests", lambda: counted() >= 90, SETTLE_S)
    status, body = get(a1.ip, a1.port + 1, "admin", "/v1/services")  # ejections of every process
    assert status == 200 and {r["service"] for r in json.loads(body)} == {"api", "web"}, body
    out = subprocess.run([sys.executable, "-m", "gossipmesh", "status", "--agent", a1.admin],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "proxy workers: 3/3 serving" in out.stdout, out.stdout + out.stderr


def test_a_new_route_reaches_every_worker(mesh: Mesh) -> None:
    a1 = mesh.a1
    assert get(a1.ip, mesh.out_port, "shop.example")[0] == 404  # no route, no such service
    mesh.set("route/shop", {"hosts": ["shop.example"], "destinations": [{"service": "api"}]})
    try:
        wait_for("route/shop at a1", lambda: get(a1.ip, mesh.out_port, "shop.example")[0] == 200,
                 SETTLE_S)  # fmt: skip
        # Each new connection may land on any process: all of them have the route.
        statuses = [get(a1.ip, mesh.out_port, "shop.example")[0] for _ in range(60)]
        assert statuses == [200] * 60, statuses
    finally:
        mesh.config("delete", "route/shop")


@pytest.mark.slow  # waits a whole certificate lifetime (11 s)
def test_renewed_workload_certificates_reach_every_worker(mesh: Mesh) -> None:
    """The mesh's certificates live LIFETIME_MS and are renewed at half of it: once a whole
    lifetime has passed, a worker still presenting (or trusting) the first ones could complete
    no new handshake. a1's processes all dial a2's anew after the pause (pooled connections are
    retired at half-life)."""
    time.sleep(LIFETIME_MS / 1000 + 1)
    before = served_by_worker(mesh.metrics(mesh.a1), "outbound")
    statuses = [get(mesh.a1.ip, mesh.out_port, "api", f"/late{i}")[0] for i in range(60)]
    assert statuses == [200] * 60, statuses
    after = served_by_worker(mesh.metrics(mesh.a1), "outbound")
    served = {w: n - before.get(w, 0) for w, n in after.items()}
    assert len([w for w, n in served.items() if n > 0]) >= 2, served


def test_a_killed_worker_is_restarted_and_traffic_recovers(mesh: Mesh) -> None:
    a1 = mesh.a1
    before = health(a1)
    victim = worker_pids(a1)[0]
    exits = before["counters"].get("proxy_workers.exits", 0)
    os.kill(victim, signal.SIGKILL)
    degraded, _ = wait_for(
        "a1 degraded", lambda: (h := health(a1))["status"] == "degraded" and h, SETTLE_S, 0.02
    )
    assert any("proxy worker 1" in r for r in degraded["reasons"]), degraded["reasons"]

    def restarted() -> dict[str, Any] | None:
        h = health(a1)
        rows = {r["worker"]: r for r in h["proxy_workers"]["workers"]}
        ok = h["proxy_workers"]["up"] == 3 and rows[1]["pid"] != victim and rows[1]["starts"] == 2
        return h if ok else None

    after, _ = wait_for("worker 1 restarted", restarted, SETTLE_S)
    assert after["status"] == "ok", after.get("reasons")
    assert after["counters"]["proxy_workers.exits"] == exits + 1
    assert not alive(victim)
    results = [get(a1.ip, mesh.out_port, "api", f"/again{i}")[0] for i in range(60)]
    assert results == [200] * 60, results


def solo(procs: Procs, name: str, ip: str, extra: list[str] | None = None) -> AgentProc:
    port = free_port_on([ip])
    proxy = free_port_on([ip])
    agent = procs.new(name, ip, port, ["--proxy-workers", "3", "--outbound", f"{ip}:{proxy}",
                                       "--inbound", f"{ip}:{proxy + 1}", *(extra or [])],
                      proxy=True)  # fmt: skip
    agent.proxy_port = proxy  # type: ignore[attr-defined]
    agent.start()
    # The admin API answers before the sidecar has started its workers: until then, no section.
    wait_for(f"{name}'s workers", lambda: workers_up(agent) == 3, SETTLE_S)
    return agent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_agent(procs: Procs, sig: int) -> None:
    agent = solo(procs, f"solo-{sig}", "127.0.0.4")
    pids = worker_pids(agent)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    agent.signal(sig)
    agent.wait_exit(30)
    wait_for("no worker left", lambda: not any(alive(p) for p in pids), 10, 0.05)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--proxy-workers", "0"], "proxy_workers must be an integer in 1-64"),
        (["--proxy-workers", "65"], "proxy_workers must be an integer in 1-64"),
        (["--proxy-workers", "2", "--dataplane", "nginx", "--inbound-plaintext"],
         "workers need --dataplane native"),
        (["--proxy-workers", "2", "--no-proxy"], "no proxy to run in workers"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_in_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gossipmesh", "agent", "--data-dir",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], done.stderr


def test_the_flag_reaches_the_settings_file_too(tmp_path: Path) -> None:
    from gossipmesh.agent.settings import load_settings

    toml = tmp_path / "agent.toml"
    toml.write_text("proxy_workers = 4\n")
    assert load_settings({}, toml).sidecar.proxy_workers == 4
    assert load_settings({"proxy_workers": 2}, toml).sidecar.proxy_workers == 2
    assert load_settings({}).sidecar.proxy_workers == 1


def test_every_process_appends_to_the_access_log(procs: Procs, tmp_path: Path) -> None:
    """Each process writes its own lines (whole: one O_APPEND write per batch); taps and spans
    see worker 0 only, which the agent says at start (the documented limitation)."""
    access = tmp_path / "access.log"
    agent = solo(procs, "solo-log", "127.0.0.5", ["--access-log", str(access)])
    try:
        port = agent.proxy_port  # type: ignore[attr-defined]
        statuses = [get(agent.ip, port, "nowhere.example")[0] for _ in range(60)]
        assert statuses == [404] * 60  # no such service: the proxy's own answer, still a request
        status, body = get(agent.ip, agent.port + 1, "admin", "/metrics")
        per_worker = served_by_worker(body.decode(), "outbound")
        assert sum(per_worker.values()) == 60 and per_worker.get("0", 0) < 60, per_worker
        wait_for("the access log", lambda: access.exists() and len(access.read_text().splitlines())
                 >= 60, SETTLE_S)  # fmt: skip
        lines = [json.loads(line) for line in access.read_text().splitlines()]
        assert len(lines) == 60 and all(r["node"] == "solo-log" for r in lines), lines[:2]
        assert sorted(r["status"] for r in lines) == [404] * 60
        assert "request_streams_worker_0_only" in agent.log_path.read_text()
    finally:
        agent.stop()
