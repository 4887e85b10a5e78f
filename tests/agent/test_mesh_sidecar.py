"""The mesh end to end: three agent processes on 127.0.0.2-4, each with an agent.toml registering
one HTTP backend (a small subprocess on 127.0.0.1, its own port), and an app (this test) sending
requests into agent a1's outbound listener.

    app -> a1 outbound (Host: web|solo) -> a1/a2/a3 inbound -> backend

``web`` runs behind a1 and a2, ``solo`` behind a3 only. The tests share one mesh (starting it
costs seconds), but none relies on another: the ``steady`` fixture restarts any agent an earlier
test killed, heals every backend and waits until every agent routes to all three instances, so
each test passes alone and in any order. Every process is stopped by a fixture; every wait polls
with a generous deadline and fails naming what it waited for.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_procs import (
    SETTLE_S,
    AgentProc,
    Procs,
    free_port_on,
    requires_loopback_aliases,
    wait_until,
)

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
# (agent, service, backend name) — one backend per agent
LAYOUT = [("a1", "web", "w1"), ("a2", "web", "w2"), ("a3", "solo", "w3")]

BACKEND = r"""
import http.server, os, sys
name, port, fail_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/health":
            code, body = (500, b"down") if os.path.exists(fail_file) else (200, b"ok")
        else:
            code, body = 200, name.encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-seen-request-id", self.headers.get("x-request-id", ""))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class Backend:
    def __init__(self, name: str, port: int, root: Path) -> None:
        self.name = name
        self.port = port
        self.fail_file = root / f"{name}.fail"
        script = root / "backend.py"
        script.write_text(BACKEND)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), name, str(port), str(self.fail_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(f"backend {name}", self._up, timeout_s=SETTLE_S)

    def _up(self) -> bool:
        try:
            return get("127.0.0.1", self.port, "/health", host="x")[0] == 200
        except OSError:
            return False

    def set_failing(self, failing: bool) -> None:
        if failing:
            self.fail_file.touch()
        else:
            self.fail_file.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def get(ip: str, port: int, path: str, host: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class Mesh:
    def __init__(self, procs: Procs, backends: dict[str, Backend]) -> None:
        self.backends = backends
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)  # outbound on `proxy`, inbound on `proxy + 1`, on each IP
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        # a1 also gives its apps a raw TCP port for `solo` (which only a3 runs): bytes in, the
        # same bytes out at a3's backend, through a3's inbound listener.
        self.tcp_port = free_port_on([IPS[0]])
        while self.tcp_port in (gossip, proxy, proxy + 1):
            self.tcp_port = free_port_on([IPS[0]])
        self.agents: dict[str, AgentProc] = {}
        for (name, service, backend), ip in zip(LAYOUT, IPS, strict=True):
            toml = procs.root / f"{name}.toml"
            listener = (
                f'[[listener]]\nservice = "solo"\nport = {self.tcp_port}\naddress = "{ip}"\n'
                if name == "a1"
                else ""
            )
            toml.write_text(
                f"[[service]]\nname = {service!r}\nport = {backends[backend].port}\n"
                'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n' + listener
            )
            args = [
                "--cluster",
                "mesh",
                "--config",
                str(toml),
                "--outbound",
                f"{ip}:{proxy}",
                "--inbound",
                f"{ip}:{proxy + 1}",
            ]
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)

    def app_get(self, host: str, via: str = "a1") -> tuple[int, bytes, dict[str, str]]:
        return get(self.agents[via].ip, self.out_port, "/", host)

    def services(self, name: str) -> list[dict[str, Any]]:
        return self.agents[name].client.services()

    def healthy(self) -> bool:
        """Every agent sees all three members alive and all three instances passing, routable."""
        for agent in self.agents.values():
            if set(agent.members().values()) != {"alive"} or len(agent.members()) != len(IPS):
                return False
            seen = instances(agent.client.services())
            if set(seen) != WANT or any(v != ("passing", True) for v in seen.values()):
                return False
        return True

    def heal(self) -> None:
        """Restart any agent that is not running, make every backend pass its health check,
        and wait until the mesh is whole again."""
        for backend in self.backends.values():
            backend.set_failing(False)
        for agent in self.agents.values():
            if not agent.running:
                agent.start()
        wait_until("every agent routing to all 3 instances", self.healthy, SETTLE_S, 0.2)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[Mesh]:
    ports: set[int] = set()
    while len(ports) < len(LAYOUT):
        ports.add(free_port_on(["127.0.0.1"]))
    backends: dict[str, Backend] = {}
    try:
        for (_, _, name), port in zip(LAYOUT, sorted(ports), strict=True):
            backends[name] = Backend(name, port, procs.root)
        m = Mesh(procs, backends)
        for agent in m.agents.values():
            agent.start()
        yield m
    finally:
        for b in backends.values():
            b.stop()


@pytest.fixture
def steady(mesh: Mesh) -> Mesh:
    """The shared mesh with every agent and backend up and every instance routable."""
    mesh.heal()
    return mesh


WANT = {("web", "a1"), ("web", "a2"), ("solo", "a3")}


def instances(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, bool]]:
    return {(r["service"], r["node"]): (r["health"], r["routable"]) for r in rows}


def test_every_agent_lists_every_instance_healthy(steady: Mesh) -> None:
    mesh = steady  # it waited for 3 instances passing on every agent, through the admin API
    for name in mesh.agents:  # ... and the CLI's --json view, as scripts read it, agrees
        out = cli("services", "--json", "--agent", mesh.agents[name].admin)
        assert out.returncode == 0, out.stderr
        assert set(instances(json.loads(out.stdout))) == WANT
    row = next(r for r in mesh.services("a2") if r["node"] == "a3")
    assert row["member_state"] == "alive" and row["ejected"] is False
    assert row["address"] == "127.0.0.1" and row["port"] == mesh.backends["w3"].port
    table = cli("services", "--agent", mesh.agents["a1"].admin)
    assert table.returncode == 0 and "solo" in table.stdout and "passing" in table.stdout


def test_request_crosses_from_a1_outbound_to_a3_inbound(steady: Mesh) -> None:
    mesh = steady
    status, body, headers = mesh.app_get("solo")
    assert (status, body) == (200, b"w3")
    assert headers.get("x-seen-request-id")  # the proxy stamped the request on its way
    # web: both instances take traffic, the remote one through a2's inbound listener.
    seen = Counter(mesh.app_get("web")[1] for _ in range(30))
    assert set(seen) == {b"w1", b"w2"}, seen


def test_tcp_listener_splices_raw_bytes_to_a_remote_instance(steady: Mesh) -> None:
    mesh = steady
    # [[listener]] on a1 for `solo`: not parsed as HTTP by a1; the bytes cross to a3's inbound
    # and on to the backend, and the backend's answer comes back byte for byte.
    with socket.create_connection((mesh.agents["a1"].ip, mesh.tcp_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0], reply[:200]
    assert reply.endswith(b"w3")
    assert b"x-seen-request-id: \r\n" in reply.lower()  # raw TCP: no HTTP hop stamped it


def test_a_route_written_at_a2_steers_requests_at_a1(steady: Mesh, tmp_path: Path) -> None:
    mesh = steady
    # The config replica is the sidecar's ConfigSource: a route written through any agent
    # reaches every proxy's table.
    assert mesh.app_get("shop.example")[0] == 404  # no route, and no service of that name
    route = tmp_path / "route.json"
    route.write_text(json.dumps({"hosts": ["shop.example"], "destinations": [{"service": "solo"}]}))
    out = cli("config", "set", "route/shop", "-f", str(route), "--agent", mesh.agents["a2"].admin)
    assert out.returncode == 0, out.stderr
    wait_until(
        "route/shop at a1",
        lambda: mesh.app_get("shop.example")[:2] == (200, b"w3"),
        timeout_s=SETTLE_S,
        interval_s=0.1,
    )


def test_failing_health_check_takes_an_instance_out_of_routing(steady: Mesh) -> None:
    mesh = steady
    mesh.backends["w3"].set_failing(True)
    try:

        def solo_down() -> bool:
            seen = instances(mesh.services("a1"))
            return seen.get(("solo", "a3")) == ("critical", False)

        wait_until("a1 sees solo critical", solo_down, timeout_s=SETTLE_S, interval_s=0.2)
        status, body, headers = mesh.app_get("solo")
        assert status == 503
        assert b"no healthy endpoint" in body
        assert headers.get("x-gossipmesh-error") == "no_healthy_endpoint"
    finally:
        mesh.backends["w3"].set_failing(False)
    wait_until("solo back", lambda: mesh.app_get("solo")[:2] == (200, b"w3"), timeout_s=SETTLE_S)


def metric(text: str, name: str, *labels: str) -> float:
    """The sum of the samples of ``name`` carrying every label in ``labels`` (0 if none): a
    request is also labelled by destination and endpoint node, so one service has several."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def test_metrics_count_requests_and_members(steady: Mesh) -> None:
    mesh = steady
    a1 = mesh.agents["a1"]

    def scrape() -> str:
        status, body, headers = get(a1.ip, a1.port + 1, "/metrics", host="admin")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        return body.decode()

    web_2xx = ("gossipmesh_proxy_requests_total", 'service="web"', 'status_class="2xx"',
               'direction="outbound"')  # fmt: skip
    # A Host that names no service is no label (a client would choose the series).
    no_route = ("gossipmesh_proxy_errors_total", 'reason="no_route"', 'service=""')
    before = scrape()
    for _ in range(30):
        assert mesh.app_get("web")[0] == 200
    assert mesh.app_get("nowhere.example")[0] == 404  # no route, no service of that name
    text = scrape()
    assert metric(text, *web_2xx) - metric(before, *web_2xx) >= 30, text
    assert metric(text, *no_route) - metric(before, *no_route) >= 1, text
    assert "nowhere.example" not in text
    assert 'gossipmesh_agent_members{state="alive"} 3.0' in text
    assert "gossipmesh_agent_records_total{" in text


def test_killed_agent_stops_receiving_traffic_and_requests_keep_succeeding(steady: Mesh) -> None:
    mesh = steady
    mesh.agents["a2"].signal(signal.SIGKILL)
    mesh.agents["a2"].wait_exit(SETTLE_S)
    # Until SWIM declares a2 dead its endpoint is still in the table; connect failures there are
    # retried on the survivor, so the app sees no error.
    statuses: Counter[int] = Counter()

    def a2_dead() -> bool:
        statuses[mesh.app_get("web")[0]] += 1
        return mesh.agents["a1"].members().get("a2") == "dead"

    _, took_s = wait_until("a1 sees a2 dead", a2_dead, timeout_s=SETTLE_S, interval_s=0.1)
    assert set(statuses) == {200}, statuses
    wait_until(
        "a2's instance unroutable at a1",
        lambda: instances(mesh.services("a1")).get(("web", "a2"), ("", True))[1] is False,
        timeout_s=SETTLE_S,
        interval_s=0.1,
    )
    after = Counter(mesh.app_get("web")[:2] for _ in range(20))
    assert after == {(200, b"w1"): 20}, after
    # w2 itself is still up: only its agent died, and nothing reaches it any more.
    assert mesh.backends["w2"].proc.poll() is None
    print(f"a2 declared dead after {took_s:.1f}s; {sum(statuses.values())} requests meanwhile")
