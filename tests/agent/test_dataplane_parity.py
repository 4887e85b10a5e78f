"""The same mesh scenarios against every data plane: native, HAProxy and nginx, with real agents.

    app -> a1 outbound (ENGINE) -> a2 inbound (ENGINE) | a3 inbound (native) -> backend

a1 and a2 run the data plane under test, a3 always runs the native proxy, so every run also
crosses between engines both ways (ENGINE outbound -> native inbound for ``solo``, native
outbound at a3 -> ENGINE inbound for ``web``). ``web`` runs behind a1 and a2, ``solo`` behind a3.
One mesh per engine (module-scoped); each test heals it first (agents and backends up, every
instance routable) and removes the routes it wrote, so tests pass alone and in any order. An
engine whose binary is missing is skipped with the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
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
LAYOUT = [("a1", "web", "w1"), ("a2", "web", "w2"), ("a3", "solo", "w3")]
ENGINES = ["native", "haproxy", "nginx"]

BACKEND = r"""
import http.server, os, sys
name, port, fail_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # head and body leave in one write (no Nagle / delayed-ACK stall)
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path == "/health":
            code, body = (500, b"down") if os.path.exists(fail_file) else (200, b"ok")
        else:
            code, body = 200, name.encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-seen-request-id", self.headers.get("x-request-id", ""))
        self.send_header("x-seen-dest", self.headers.get("x-gossipmesh-dest", ""))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
    def handle_error(self, *a):
        pass

class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, *a):
        pass

S(("127.0.0.1", port), H).serve_forever()
"""


def get(ip: str, port: int, host: str, path: str = "/",
        headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def bodies(ip: str, port: int, host: str, n: int) -> Counter[bytes]:
    """``n`` GETs on one keep-alive connection: the bodies seen (non-200 answers as b"STATUS")."""
    seen: Counter[bytes] = Counter()
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read()
            seen[body if resp.status == 200 else str(resp.status).encode()] += 1
    finally:
        conn.close()
    return seen


class Backend:
    def __init__(self, name: str, port: int, root: Path) -> None:
        self.name, self.port, self.root = name, port, root
        self.fail_file = root / f"{name}.fail"
        self.script = root / "backend.py"
        self.script.write_text(BACKEND)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), self.name, str(self.port), str(self.fail_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(f"backend {self.name}", self._up, timeout_s=SETTLE_S)

    def _up(self) -> bool:
        try:
            return get("127.0.0.1", self.port, "x", "/health")[0] == 200
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def set_failing(self, failing: bool) -> None:
        if failing:
            self.fail_file.touch()
        else:
            self.fail_file.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True, timeout=60
    )


def instances(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, bool]]:
    return {(r["service"], r["node"]): (r["health"], r["routable"]) for r in rows}


WANT = {("web", "a1"), ("web", "a2"), ("solo", "a3")}


class Mesh:
    def __init__(self, engine: str, procs: Procs, backends: dict[str, Backend]) -> None:
        self.engine = engine
        self.backends = backends
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)  # outbound on `proxy`, inbound on `proxy + 1`, on each IP
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        self.agents: dict[str, AgentProc] = {}
        for (name, service, backend), ip in zip(LAYOUT, IPS, strict=True):
            toml = procs.root / f"{name}.toml"
            toml.write_text(
                f"[[service]]\nname = {service!r}\nport = {backends[backend].port}\n"
                'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n'
            )
            args = ["--cluster", f"parity-{engine}", "--config", str(toml),
                    "--outbound", f"{ip}:{proxy}", "--inbound", f"{ip}:{proxy + 1}",
                    # HAProxy and nginx carry the hop in plaintext (docs/SECURITY.md): the
                    # engines are compared on it, every agent in migration mode.
                    "--inbound-plaintext"]  # fmt: skip
            if name != "a3":
                args += ["--dataplane", engine]
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)

    def app_bodies(self, host: str, n: int, via: str = "a1") -> Counter[bytes]:
        return bodies(self.agents[via].ip, self.out_port, host, n)

    def app_get(self, host: str, path: str = "/", via: str = "a1",
                headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        return get(self.agents[via].ip, self.out_port, host, path, headers)

    def healthy(self) -> bool:
        for agent in self.agents.values():
            members = agent.members()
            if set(members.values()) != {"alive"} or len(members) != len(IPS):
                return False
            seen = instances(agent.client.services())
            if set(seen) != WANT or any(v != ("passing", True) for v in seen.values()):
                return False
        # The data plane applies a table up to a coalescing window after the catalog has it.
        return all(self.serves("web", via) and self.serves("solo", via) for via in self.agents)

    def serves(self, host: str, via: str) -> bool:
        # Three in a row: an nginx reload lets an old worker take a connection for a moment.
        try:
            return all(self.app_get(host, via=via)[0] == 200 for _ in range(3))
        except OSError:
            return False

    def heal(self) -> None:
        for backend in self.backends.values():
            backend.set_failing(False)
            if not backend.running:
                backend.start()
        for agent in self.agents.values():
            if not agent.running:
                agent.start()
        wait_until("every agent routing to all 3 instances", self.healthy, SETTLE_S, 0.2)

    def config(self, *args: str) -> None:
        out = cli("config", *args, "--agent", self.agents["a2"].admin)
        assert out.returncode == 0, out.stderr

    def health(self, name: str) -> dict[str, Any]:
        return self.agents[name].client.health()


@pytest.fixture(scope="module", params=ENGINES)
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    engine: str = request.param
    if engine != "native" and shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed (.ci/run installs it)")
    procs = Procs(tmp_path_factory.mktemp(engine))
    ports: set[int] = set()
    while len(ports) < len(LAYOUT):
        ports.add(free_port_on(["127.0.0.1"]))
    backends: dict[str, Backend] = {}
    try:
        for (_, _, name), port in zip(LAYOUT, sorted(ports), strict=True):
            backends[name] = Backend(f"{name}", port, procs.root)
        m = Mesh(engine, procs, backends)
        for agent in m.agents.values():
            agent.start()
        yield m
    finally:
        procs.close()
        for b in backends.values():
            b.stop()


@pytest.fixture
def steady(mesh: Mesh) -> Mesh:
    mesh.heal()
    return mesh


def write_route(mesh: Mesh, tmp_path: Path, name: str, body: dict[str, Any]) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body))
    mesh.config("set", f"route/{name}", "-f", str(path))


def test_host_names_the_service_across_engines(steady: Mesh) -> None:
    mesh = steady
    status, body, headers = mesh.app_get("solo")  # ENGINE outbound -> native inbound
    assert (status, body) == (200, b"w3")
    assert headers.get("x-seen-request-id")  # stamped on the way
    assert headers.get("x-seen-dest") == ""  # the inbound side strips the mesh fields
    seen = mesh.app_bodies("web", 40)  # one local, one through a2
    assert set(seen) == {b"w1", b"w2"}, seen
    seen = mesh.app_bodies("web", 40, via="a3")  # native -> ENGINE
    assert set(seen) == {b"w1", b"w2"}, seen
    # The app cannot pick an instance: its own x-gossipmesh-dest is dropped at the outbound.
    forged = {"x-gossipmesh-dest": f"127.0.0.1:{mesh.backends['w2'].port}"}
    assert mesh.app_get("solo", headers=forged)[:2] == (200, b"w3")


def test_inbound_forwards_only_to_local_instances(steady: Mesh) -> None:
    mesh = steady
    a2 = mesh.agents["a2"]
    w2 = f"127.0.0.1:{mesh.backends['w2'].port}"
    assert get(a2.ip, mesh.out_port + 1, "web", headers={"x-gossipmesh-dest": w2})[:2] == (
        200,
        b"w2",
    )
    # w3 runs on this host too, but it is a3's: a2's inbound listener refuses it.
    w3 = f"127.0.0.1:{mesh.backends['w3'].port}"
    status, _, headers = get(a2.ip, mesh.out_port + 1, "solo", headers={"x-gossipmesh-dest": w3})
    assert status == 403 and headers.get("x-gossipmesh-error") == "forbidden_destination"


def test_routes_by_host_path_and_header(steady: Mesh, tmp_path: Path) -> None:
    mesh = steady
    assert mesh.app_get("shop.example", "/cart")[0] == 404
    write_route(mesh, tmp_path, "shop", {"hosts": ["shop.example"], "path": {"prefix": "/cart"},
                                         "destinations": [{"service": "solo"}]})  # fmt: skip
    write_route(mesh, tmp_path, "canary", {"hosts": ["web"], "headers": [{"name": "x-canary",
                "exact": "on"}], "destinations": [{"service": "solo"}]})  # fmt: skip
    try:
        wait_until("route/shop at a1", lambda: mesh.app_get("shop.example", "/cart/1")[:2]
                   == (200, b"w3"), SETTLE_S)  # fmt: skip
        wait_until("route/canary at a1", lambda: mesh.app_get("web", headers={"x-canary": "on"})[:2]
                   == (200, b"w3"), SETTLE_S)  # fmt: skip
        status, _, headers = mesh.app_get("shop.example", "/other")
        assert status == 404 and headers.get("x-gossipmesh-error") == "no_route"
        plain = Counter(mesh.app_get("web", headers={"x-canary": "off"})[1] for _ in range(20))
        assert set(plain) <= {b"w1", b"w2"}, plain
    finally:
        mesh.config("delete", "route/shop")
        mesh.config("delete", "route/canary")


def test_split_is_within_tolerance(steady: Mesh, tmp_path: Path) -> None:
    mesh = steady
    write_route(mesh, tmp_path, "split", {"hosts": ["split.example"], "destinations": [
        {"service": "web", "weight": 3}, {"service": "solo", "weight": 1}]})  # fmt: skip
    try:
        wait_until("route/split at a1", lambda: mesh.app_get("split.example")[0] == 200, SETTLE_S)
        seen = mesh.app_bodies("split.example", 400)
        share = seen[b"w3"] / 400
        assert 0.17 <= share <= 0.33, seen  # 25 % expected; 4 sigma is about 0.087
        assert seen[b"w1"] + seen[b"w2"] + seen[b"w3"] == 400, seen
    finally:
        mesh.config("delete", "route/split")


def test_unknown_service_is_404_and_a_service_without_endpoints_is_503(steady: Mesh) -> None:
    mesh = steady
    status, body, headers = mesh.app_get("nowhere.example")
    assert status == 404 and headers.get("x-gossipmesh-error") == "no_route", body
    mesh.backends["w3"].set_failing(True)

    def solo_503() -> bool:
        # Three in a row: while nginx reloads, an old worker may still take a new connection with
        # the previous configuration for a moment after a new worker has answered (seen in CI).
        return all(mesh.app_get("solo")[0] == 503 for _ in range(3))

    wait_until("solo answers 503 at a1", solo_503, SETTLE_S)
    status, body, headers = mesh.app_get("solo")
    assert status == 503, (status, body, headers)
    assert headers.get("x-gossipmesh-error") == "no_healthy_endpoint", (status, body, headers)
    assert b"no healthy endpoint" in body


def test_a_dead_endpoint_fails_over_without_errors(steady: Mesh) -> None:
    mesh = steady
    mesh.backends["w2"].stop()  # the app dies; a2 and its proxy stay up
    statuses: Counter[int] = Counter()

    def w2_gone() -> bool:
        for _ in range(5):
            status, body, _ = mesh.app_get("web")
            statuses[status] += 1
            assert body != b"w2" or status == 200
        return instances(mesh.agents["a1"].client.services()).get(("web", "a2")) == (
            "critical",
            False,
        )

    wait_until("a1 sees w2 critical", w2_gone, SETTLE_S, 0.05)
    assert set(statuses) == {200}, statuses  # the retries hid the dead endpoint
    after = Counter(mesh.app_get("web")[:2] for _ in range(20))
    assert after == {(200, b"w1"): 20}, after


def test_a_killed_agent_takes_its_proxy_along(steady: Mesh) -> None:
    mesh = steady
    if mesh.engine == "native":
        pytest.skip("the native proxy lives inside the agent process")
    plane = mesh.health("a2")["dataplane"]
    pid = plane["pid"]
    assert plane["engine"] == mesh.engine and plane["running"] and pid
    mesh.agents["a2"].signal(signal.SIGKILL)
    mesh.agents["a2"].wait_exit(SETTLE_S)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie until its reaper (init) gets to it
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    wait_until(f"{mesh.engine} (pid {pid}) gone with its agent", gone, SETTLE_S)
    seen = Counter(mesh.app_get("web")[0] for _ in range(20))
    assert seen == {200: 20}, seen  # a1 retries a2's endpoint until SWIM says a2 is dead


def test_status_and_metrics_name_the_data_plane(steady: Mesh) -> None:
    mesh = steady
    for _ in range(10):
        assert mesh.app_get("web")[0] == 200
    health = mesh.health("a1")
    out = cli("status", "--agent", mesh.agents["a1"].admin)
    assert out.returncode == 0, out.stderr
    a1 = mesh.agents["a1"]
    text = get(a1.ip, a1.port + 1, "admin", "/metrics")[1].decode()
    if mesh.engine == "native":
        assert "dataplane" not in health and "dataplane:" not in out.stdout
        assert "gossipmesh_proxy_requests_total{" in text
        return
    plane = health["dataplane"]
    assert plane["engine"] == mesh.engine and plane["running"] and plane["unsupported"]
    assert health["status"] == "ok", health["reasons"]
    assert f"dataplane: {mesh.engine}" in out.stdout and "not supported" in out.stdout
    if mesh.engine == "haproxy":
        assert 'service="web"' in text and "gossipmesh_proxy_requests_total{" in text
    else:
        assert 'gossipmesh_dataplane_requests_total{engine="nginx"}' in text


def test_a_missing_binary_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH: no haproxy, no nginx
    out = subprocess.run(
        [sys.executable, "-m", "gossipmesh", "agent", "--name", "x", "--bind", "127.0.0.9:0",
         "--admin", "127.0.0.9:0", "--dataplane", "haproxy", "--outbound", "127.0.0.9:0",
         "--inbound", "127.0.0.9:0", "--inbound-plaintext"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no haproxy binary on PATH" in lines[0], out.stderr
