"""A small mesh with a canary, for the traffic views (``/v1/stats``, ``stat``, ``top``, ``/ui/``).

Three agent processes on 127.0.0.2-4: a1 runs no service (the app calls through its outbound
listener), a2 runs ``web`` tagged ``v1`` and a3 ``web`` tagged ``v2``; the route ``web-canary``
sends 80 % to v1 and 20 % to v2; the policy ``web-admin`` denies ``/admin``. Backends answer their name, so the test knows exactly which
subset served each request. Every process is stopped by the owner of ``Procs`` / ``close``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, wait_until

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
ROUTE = {
    "hosts": ["web"],
    "destinations": [
        {"service": "web", "weight": 80, "tags": ["v1"]},
        {"service": "web", "weight": 20, "tags": ["v2"]},
    ],
}
POLICY = {"action": "deny", "to": "web", "paths": ["/admin"]}  # denied at a2's and a3's inbound
BACKEND = r"""
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = name.encode()
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True, timeout=60
    )


class CanaryMesh:
    def __init__(self, procs: Procs) -> None:
        root = procs.root
        (root / "backend.py").write_text(BACKEND)
        self.backends: list[subprocess.Popen[bytes]] = []
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        self.agents: dict[str, AgentProc] = {}
        for name, ip, tag in (("a1", IPS[0], None), ("a2", IPS[1], "v1"), ("a3", IPS[2], "v2")):
            toml = root / f"{name}.toml"
            if tag is None:
                toml.write_text("")
            else:
                port = free_port_on(["127.0.0.1"])
                self.backends.append(
                    subprocess.Popen(
                        [sys.executable, str(root / "backend.py"), tag, str(port)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                )
                toml.write_text(
                    f'[[service]]\nname = "web"\nport = {port}\ntags = ["{tag}"]\n'
                    'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n'
                )
            args = ["--cluster", "canary", "--config", str(toml),
                    "--outbound", f"{ip}:{proxy}", "--inbound", f"{ip}:{proxy + 1}"]  # fmt: skip
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)
        self.sent: dict[tuple[str, int, bytes], int] = {}  # (Host, status, body) -> requests
        self.route_file = root / "route.json"
        self.route_file.write_text(json.dumps(ROUTE))
        self.policy_file = root / "policy.json"
        self.policy_file.write_text(json.dumps(POLICY))

    def start(self) -> CanaryMesh:
        for agent in self.agents.values():
            agent.start()
        wait_until("three alive members everywhere", self._joined, SETTLE_S, 0.2)
        out = cli("config", "set", "route/web-canary", "-f", str(self.route_file),
                  "--agent", self.agents["a1"].admin)  # fmt: skip
        assert out.returncode == 0, out.stderr
        out = cli("config", "set", "policy/web-admin", "-f", str(self.policy_file),
                  "--agent", self.agents["a2"].admin)  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_until("a1 routes web to both subsets", self._both_subsets, SETTLE_S, 0.1)
        return self

    def _joined(self) -> bool:
        return all(
            a.members() == {"a1": "alive", "a2": "alive", "a3": "alive"}
            for a in self.agents.values()
            if a.running
        )

    def _both_subsets(self) -> bool:
        seen = {self.get("/")[1] for _ in range(40)}
        return seen == {b"v1", b"v2"}

    def get(self, path: str, host: str = "web") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(IPS[0], self.out_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
            key = (host, status, body)
            self.sent[key] = self.sent.get(key, 0) + 1
            return status, body
        finally:
            conn.close()

    def close(self) -> None:
        for b in self.backends:
            if b.poll() is None:
                b.kill()
                b.wait(timeout=10)


def traffic(mesh: CanaryMesh, n: int) -> dict[bytes, int]:
    """``n`` requests to web through a1; how many each subset answered."""
    seen: dict[bytes, int] = {}
    for _ in range(n):
        status, body = mesh.get("/")
        assert status == 200, (status, body)
        seen[body] = seen.get(body, 0) + 1
    return seen


__all__ = ["IPS", "POLICY", "ROUTE", "CanaryMesh", "Path", "cli", "traffic"]
