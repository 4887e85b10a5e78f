"""The demo's sample services: ``web`` -> ``api`` -> ``db``, each call through the local sidecar.

Theory of operation
-------------------
One small process per instance (``python -m gossipmesh.demo.apps --role api --version v2 ...``),
bound to its agent's loopback address, so killing a node's processes really takes its instances
away. Each is a stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 keep-alive: the agents' proxies
pool connections to it, so a handful of threads carry all the traffic, and nothing outside the
standard library is needed in a process that exists only to answer.

The apps know nothing of the mesh except one address, their node's outbound listener: ``web``
calls ``api`` by sending ``Host: api`` there, ``api`` calls ``db`` the same way. Which ``api``
instance answers (and so which version) is the mesh's decision: the route's weighted destinations,
health, retries and ejections. Every answer is a small JSON object naming the instance that
served it and, for ``web``, the ``api`` version and instance behind it; that is how the load
driver observes the canary split from outside.

Paths: ``GET /health`` (200, for the agents' checks); ``db``: ``GET /db/query``; ``api``:
``GET /api/items``, ``GET /api/slow`` (sleeps ``SLOW_S`` first; the demo's path route pins it
to v1) and ``GET /api/admin`` (the demo's deny policy keeps callers out); ``web``: ``GET /``
(calls ``/api/items``), ``GET /slow`` (calls ``/api/slow``) and ``GET /admin`` (calls
``/api/admin``). An upstream failure becomes ``502`` with the upstream's status in the body, so
the caller's sidecar can retry it on another endpoint (``retry.on_status``); a sidecar's 403
naming a policy (``x-gossipmesh-policy``) stays a 403, with the policy in the body.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLES = ("web", "api", "db")
SLOW_S = 0.03  # long enough to show in p99, short against every timeout the demo configures
UPSTREAM_TIMEOUT_S = 5.0  # above the sidecar's own request timeout: the mesh answers first
# Each role's one upstream and the path it calls for each of its own paths.
UPSTREAM = {"web": "api", "api": "db"}
CALLS = {
    "web": {"/": "/api/items", "/slow": "/api/slow", "/admin": "/api/admin"},
    "api": {"/api/items": "/db/query", "/api/slow": "/db/query", "/api/admin": "/db/query"},
}
POLICY_HEADER = "x-gossipmesh-policy"  # names the policy on a sidecar's 403


class _Upstream(threading.local):
    """One keep-alive connection to the local sidecar per server thread (http.client is not
    thread-safe, and a fresh connection per call would cost a handshake per request)."""

    conn: http.client.HTTPConnection | None = None


class App:
    def __init__(self, role: str, instance: str, version: str, sidecar: tuple[str, int]) -> None:
        self.role = role
        self.instance = instance
        self.version = version
        self.sidecar = sidecar
        self._local = _Upstream()

    def call(self, path: str, request_id: str) -> tuple[int, dict[str, Any]]:
        """GET ``path`` on this role's upstream through the sidecar; one reconnect on a stale
        pooled connection, never more (retrying is the mesh's job)."""
        service = UPSTREAM[self.role]
        headers = {"Host": service}
        if request_id:
            headers["x-request-id"] = request_id  # keep one id across the whole chain
        for attempt in (1, 2):
            conn = self._local.conn
            if conn is None:
                conn = http.client.HTTPConnection(*self.sidecar, timeout=UPSTREAM_TIMEOUT_S)
                self._local.conn = conn
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    return 0, {"error": f"sidecar unreachable: {type(exc).__name__}"}
                continue
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"raw": raw[:200].decode(errors="replace")}
            if not isinstance(body, dict):
                body = {"raw": body}
            policy = resp.getheader(POLICY_HEADER)
            if resp.status == 403 and policy:
                body["policy"] = policy[:100]
            return resp.status, body
        raise AssertionError("unreachable")

    def handle(self, path: str, request_id: str) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        if path == "/health":
            return 200, {"ok": True, "instance": self.instance}
        if self.role == "db":
            if path.startswith("/db/"):
                return 200, {"db": self.instance}
            return 404, {"error": "not found"}
        upstream_path = CALLS[self.role].get(path)
        if upstream_path is None:
            return 404, {"error": "not found"}
        if path == "/api/slow":
            time.sleep(SLOW_S)
        status, body = self.call(upstream_path, request_id)
        if status == 403 and "policy" in body:
            # A policy's answer, final: a 502 would make the caller's sidecar retry it.
            return 403, {
                "error": f"{UPSTREAM[self.role]} denied by policy",
                "policy": body["policy"],
                self.role: self.instance,
            }
        if status != 200:
            return 502, {
                "error": f"{UPSTREAM[self.role]} failed",
                "upstream_status": status,
                "upstream": body,
                self.role: self.instance,
            }
        if self.role == "api":
            return 200, {"api": self.instance, "version": self.version, "db": body.get("db")}
        return 200, {
            "web": self.instance,
            "api": body.get("api"),
            "version": body.get("version"),
            "db": body.get("db"),
        }


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the proxies pool their connections to us
        # Head and body leave in two writes; with Nagle on, the second waits for the peer's
        # delayed ACK (40 ms on Linux) on every answer.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status, body = app.handle(self.path, self.headers.get("x-request-id", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-demo-instance", app.instance)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the agents count and time every request; per-request lines are noise

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipmesh.demo.apps", description=__doc__)
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--instance", required=True, help="name reported in every answer")
    p.add_argument("--version", default="", help="api version tag (v1, v2)")
    p.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    p.add_argument("--sidecar", required=True, help="the node's outbound listener HOST:PORT")
    p.add_argument("--run-dir", default="", help="the demo's temp dir (names the process)")
    args = p.parse_args(argv)
    app = App(args.role, args.instance, args.version, _hostport(args.sidecar))
    try:
        server = _Server(_hostport(args.listen), make_handler(app))
    except OSError as exc:
        print(f"gossipmesh demo app {args.instance}: cannot listen on {args.listen}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    # SIGTERM is how the demo stops us: leave serve_forever and exit 0.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
