"""mTLS and authorization on real agents with a real CA, through the CLI an operator uses.

    app -> a1 outbound (node a1, service web) -> a2 inbound (node a2, service api) -> backend

Workload certificates live 10 s here (``--workload-lifetime-ms``), so every agent renews them
every 5 s while the tests run. ``mesh`` is shared; every test that writes a policy removes it.
The revocation test has a mesh of its own (a revocation is for good).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, requires_loopback_aliases
from agent_procs import wait_until as wait_for

from gossipmesh.crypto import generate_key

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3"]
CLUSTER = "zt"
LIFETIME_MS = 10_000

BACKEND = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        body = ("api " + self.command + " " + self.path).encode()
        self.send_response(200 if self.path != "/health" else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = reply
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMESH_OPERATOR_KEY"}
    done = subprocess.run([sys.executable, "-m", "gossipmesh", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    if check:
        assert done.returncode == 0, f"gossipmesh {' '.join(args)}: {done.stderr}"
    return done


def request(ip: str, port: int, method: str = "GET", path: str = "/",
            host: str = "api") -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request(method, path, body=b"x" if method == "POST" else None, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def metric(text: str, name: str, *labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Mesh:
    def __init__(
        self, procs: Procs, backend_port: int, extra: dict[str, list[str]] | None = None
    ) -> None:
        self.root = procs.root
        self.ca = self.root / "ca"
        cli("ca", "init", "--dir", str(self.ca), "--cluster", CLUSTER)
        self.op = self.root / "op.key"
        cli("ca", "issue-operator", "ops", "--dir", str(self.ca), "--out", str(self.op))
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        key = generate_key()
        self.agents: dict[str, AgentProc] = {}
        for (name, service), ip in zip((("a1", "web"), ("a2", "api")), IPS, strict=True):
            tls = self.root / f"{name}-tls"
            cli("ca", "issue-node", name, "--dir", str(self.ca), "--out", str(tls))
            toml = self.root / f"{name}.toml"
            port = backend_port if service == "api" else backend_port + 1000
            toml.write_text(f"[[service]]\nname = {service!r}\nport = {port}\n")
            args = ["--cluster", CLUSTER, "--encrypt", key, "--tls-dir", str(tls),
                    "--config", str(toml), "--config-sync-interval-ms", "500",
                    "--outbound", f"{ip}:{proxy}", "--inbound", f"{ip}:{proxy + 1}",
                    "--workload-lifetime-ms", str(LIFETIME_MS)]  # fmt: skip
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            args += (extra or {}).get(name, [])
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)

    @property
    def a1(self) -> AgentProc:
        return self.agents["a1"]

    @property
    def a2(self) -> AgentProc:
        return self.agents["a2"]

    @property
    def inbound(self) -> tuple[str, int]:
        return (self.a2.ip, self.out_port + 1)

    def call(self, method: str = "GET", path: str = "/") -> tuple[int, bytes, dict[str, str]]:
        return request(self.a1.ip, self.out_port, method, path)

    def serves(self) -> bool:
        try:
            return self.call()[0] == 200
        except OSError:
            return False

    def config(self, *args: str) -> str:
        out = cli("config", *args, "--agent", self.a1.admin, "--operator-key", str(self.op))
        return out.stdout

    def set(self, key: str, body: dict[str, Any]) -> str:
        file = self.root / "body.json"
        file.write_text(json.dumps(body))
        return self.config("set", key, "-f", str(file))

    def metrics(self, agent: AgentProc) -> str:
        status, body, _ = request(agent.ip, agent.port + 1, path="/metrics", host="admin")
        assert status == 200
        return body.decode()


def start_mesh(procs: Procs, extra: dict[str, list[str]] | None = None) -> Mesh:
    """Backend, CA and both agents (``extra``: more flags per agent name), a1 reaching api."""
    port = free_port_on(["127.0.0.1"])
    script = procs.root / "backend.py"
    script.write_text(BACKEND)
    backend = subprocess.Popen([sys.executable, str(script), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    procs.backends.append(backend)  # type: ignore[attr-defined]
    m = Mesh(procs, port, extra)
    for agent in m.agents.values():
        agent.start()
    wait_for("a1 reaches api on a2 over mTLS", m.serves, SETTLE_S, 0.2)
    return m


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[Mesh]:
    procs.backends = []  # type: ignore[attr-defined]
    try:
        yield start_mesh(procs)
    finally:
        for b in procs.backends:  # type: ignore[attr-defined]
            b.kill()
            b.wait()


def tls_probe(addr: tuple[str, int], data: bytes) -> bytes:
    """A TLS client without a certificate: what the inbound answers (b"" if nothing)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(addr, timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="api") as s,
        ):
            s.sendall(data)
            return s.recv(65536)
    except (ssl.SSLError, OSError):
        return b""


def plain_probe(addr: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def test_a_non_member_gets_no_app_response_from_an_inbound(mesh: Mesh) -> None:
    assert mesh.call()[:2] == (200, b"api GET /")  # a member's request crosses the hop
    req = b"GET / HTTP/1.1\r\nHost: api\r\nx-gossipmesh-dest: 127.0.0.1:1\r\n\r\n"
    plain = plain_probe(mesh.inbound, req)
    assert b"HTTP/" not in plain and b"api GET" not in plain
    assert plain == b"" or plain[:1] == b"\x15"  # nothing, or a TLS alert record
    assert tls_probe(mesh.inbound, req) == b""  # TLS without a client certificate
    text = mesh.metrics(mesh.a2)
    assert metric(text, "gossipmesh_proxy_tls_handshakes_total", 'outcome="ok"') >= 1
    assert metric(text, "gossipmesh_proxy_tls_handshakes_total", 'outcome="tls_error"') >= 1
    assert "gossipmesh_proxy_inbound_plaintext 0.0" in text


def test_policies_by_caller_method_and_path_apply_live(mesh: Mesh) -> None:
    try:
        out = mesh.set("policy/no-post", {"to": "api", "action": "deny", "from": ["web"],
                                          "methods": ["POST"]})  # fmt: skip
        assert "written" in out and "warning" not in out
        wait_for("POST denied", lambda: mesh.call("POST")[0] == 403, SETTLE_S)
        status, body, headers = mesh.call("POST", "/orders")
        assert status == 403 and headers["x-gossipmesh-policy"] == "no-post"
        assert headers["x-gossipmesh-error"] == "forbidden_by_policy"
        assert b"policy/no-post" in body and f"spiffe://{CLUSTER}/svc/web".encode() in body
        assert mesh.call("GET")[0] == 200  # other methods still pass
        mesh.set("policy/admin", {"to": "api", "action": "deny", "paths": ["/admin"]})
        wait_for("/admin denied", lambda: mesh.call(path="/admin/x")[0] == 403, SETTLE_S)
        assert mesh.call(path="/%61dmin")[0] == 403  # matched after normalisation
        assert mesh.call(path="/administrator")[0] == 200
        # Default deny on the service; an allow for the caller's node identity lets it in.
        mesh.set("service/api", {"default_policy": "deny"})
        mesh.config("delete", "policy/no-post")
        mesh.config("delete", "policy/admin")
        wait_for("default deny", lambda: mesh.call()[2].get("x-gossipmesh-policy") == "default",
                 SETTLE_S)  # fmt: skip
        mesh.set("policy/from-a1", {"to": "api", "from": [f"spiffe://{CLUSTER}/node/a1"]})
        wait_for("allowed again", lambda: mesh.call()[0] == 200, SETTLE_S)
        text = mesh.metrics(mesh.a2)
        assert metric(text, "gossipmesh_proxy_denied_total", 'policy="no-post"') >= 1
        assert metric(text, "gossipmesh_proxy_denied_total", 'policy="default"') >= 1
        assert "request_denied" in mesh.a2.log_path.read_text()
        # A policy naming a service nothing runs is written, with a warning.
        out = mesh.set("policy/typo", {"to": "apii", "from": ["webb"]})
        assert "written" in out and "warning" in out and "'apii' is unknown" in out
        assert "'webb' is unknown" in out
    finally:
        for key in ("policy/no-post", "policy/admin", "policy/from-a1", "policy/typo",
                    "service/api"):  # fmt: skip
            cli("config", "delete", key, "--agent", mesh.a1.admin, "--operator-key",
                str(mesh.op), check=False)  # fmt: skip
        wait_for("policies gone", lambda: mesh.call()[0] == 200, SETTLE_S)


def test_renewal_under_steady_traffic_fails_no_request(mesh: Mesh) -> None:
    def renewals() -> int:
        logs = (a.log_path.read_text() for a in mesh.agents.values())
        return sum(
            text.count('"event":"workload_certificates","reason":"renewal"') for text in logs
        )

    before = renewals()
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection(mesh.a1.ip, mesh.out_port, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/steady", headers={"Host": "api"})
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # Both agents renew every 5 s: wait for at least two renewals on each side.
        wait_for("four renewals", lambda: renewals() - before >= 4, SETTLE_S, 0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert statuses[200] > 100 and set(statuses) == {200}, statuses


@pytest.fixture
def own_mesh(tmp_path: Path) -> Iterator[Mesh]:
    procs = Procs(tmp_path)
    procs.backends = []  # type: ignore[attr-defined]
    try:
        yield start_mesh(procs)
    finally:
        procs.close()
        for b in procs.backends:  # type: ignore[attr-defined]
            b.kill()
            b.wait()


def test_a_revoked_node_loses_its_connections_and_is_refused(own_mesh: Mesh) -> None:
    mesh = own_mesh
    conn = http.client.HTTPConnection(mesh.a1.ip, mesh.out_port, timeout=10)
    conn.request("GET", "/", headers={"Host": "api"})
    assert conn.getresponse().read() == b"api GET /"  # a live, pooled hop a1 -> a2
    cli("ca", "revoke", "--node", "a1", "--mode", "compromised", "--dir", str(mesh.ca),
        "--agent", mesh.a1.admin)  # written at a1: a2 learns it by replication  # fmt: skip

    def closed() -> bool:
        return metric(mesh.metrics(mesh.a2), "gossipmesh_proxy_tls_closed_total",
                      'reason="revoked"') >= 1  # fmt: skip

    _, took_s = wait_for("a2 closed a1's live hop", closed, SETTLE_S)
    print(f"a2 closed the revoked node's connection {took_s:.2f} s after the CLI returned")
    status, body, _ = mesh.call()
    assert status in (502, 503), body
    text = mesh.metrics(mesh.a2)
    assert metric(text, "gossipmesh_proxy_tls_rejected_total", 'reason="revoked"') >= 1
    conn.close()
