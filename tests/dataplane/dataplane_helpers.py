"""Helpers for driving an external data plane directly (no agent): backends in threads, a
bounded load loop that counts every answer, a recording log, tables from endpoint lists."""

from __future__ import annotations

import http.client
import http.server
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from gossipmesh.config.schema import RouteConfig, ServiceConfig, parse_route
from gossipmesh.proxy.table import Endpoint, RouteTable, build_route_table


def needs(binary: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(binary) is None, reason=f"{binary} is not installed (.ci/run installs it)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # head and body leave in one write (no Nagle / delayed-ACK stall)
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = self.server.name.encode()
        self.send_response(self.server.status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    name = ""
    status = 200
    seen: list[dict[str, str]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # health checks connect and reset: not worth a traceback


@contextmanager
def backend(name: str, host: str = "127.0.0.1") -> Iterator[_Server]:
    """An HTTP server answering ``name`` (status ``server.status``), recording request heads."""
    srv = _Server((host, 0), _Handler)
    srv.name, srv.seen = name, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def port_of(srv: _Server) -> int:
    return int(srv.server_address[1])


def get(port: int, host: str, path: str = "/", headers: Mapping[str, str] | None = None,
        ip: str = "127.0.0.1") -> tuple[int, str, dict[str, str]]:  # fmt: skip
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@dataclass
class Load:
    """Keep-alive GETs on ``connections`` threads until ``stop``; every answer counted."""

    port: int
    host: str
    connections: int = 4
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                body = resp.read().decode()
                self.statuses[resp.status] += 1
                self.bodies[body] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    @contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=self._loop) for _ in range(self.connections)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def warn(self, event: str, **fields: Any) -> None:
        self.events.append(("warn", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.events.append(("error", event, fields))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for _, e, f in self.events if e == event]


def table(
    endpoints: Mapping[str, Sequence[Endpoint]],
    routes: Mapping[str, dict[str, Any]] | None = None,
    services: Mapping[str, ServiceConfig] | None = None,
    version: int = 0,
) -> tuple[RouteTable, tuple[RouteConfig, ...]]:
    parsed = {name: parse_route(name, body) for name, body in (routes or {}).items()}
    return build_route_table(services or {}, parsed, endpoints, version), tuple(parsed.values())
