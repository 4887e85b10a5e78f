"""gossipmesh.client against a stand-in admin API (a stdlib HTTP server in a thread): each method's
request, the answers it returns, and the errors it raises."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gossipmesh.client import (
    DEFAULT_AGENT,
    AdminClient,
    AdminError,
    AgentUnreachable,
    ClientError,
)
from gossipmesh.errors import UsageError


class Stub:
    """Records every request; answers from ``replies[(method, path)] = (status, body bytes)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []
        self.replies: dict[tuple[str, str], tuple[int, bytes]] = {}


def handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            stub.seen.append((self.command, self.path, json.loads(raw) if raw else None))
            status, body = stub.replies.get((self.command, self.path), (200, b"{}"))
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[tuple[Stub, AdminClient]]:
    state = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, AdminClient(f"127.0.0.1:{server.server_address[1]}", timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()


class FakeSigner:
    """Signs nothing: sends back one entry per item (the real one is config.signing's)."""

    def prepare_request(self, items: Any) -> dict[str, Any]:
        return {"items": dict(items)}

    def sign(self, proposal: Any, items: Any, node: str, wall_ms: int) -> dict[str, Any]:
        return {"entries": [{"key": k} for k in items]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_method_sends_its_request(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    admin.self_info()
    admin.members()
    admin.health()
    admin.services()
    admin.join(["127.0.0.2:7946"])
    admin.leave()
    admin.keys()
    admin.change_key("install", "a2V5")
    admin.config("route/")
    admin.config()
    admin.config_get("route/web")
    admin.config_put("route/web", {"destinations": [{"service": "api"}]}, FakeSigner())
    admin.config_delete("route/web", FakeSigner())
    admin.config_apply({"service/api": {}, "route/old": None}, FakeSigner())
    admin.trust()
    admin.config_history("route/web")
    admin.config_conflicts()
    admin.faults()
    admin.set_faults(["127.0.0.3:7946"])
    admin.clear_faults()
    assert state.seen == [
        ("GET", "/v1/self", None),
        ("GET", "/v1/members", None),
        ("GET", "/v1/health", None),
        ("GET", "/v1/services", None),
        ("POST", "/v1/join", {"addresses": ["127.0.0.2:7946"]}),
        ("POST", "/v1/leave", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"op": "install", "key": "a2V5"}),
        ("GET", "/v1/config?prefix=route/", None),
        ("GET", "/v1/config", None),
        ("GET", "/v1/config/route/web", None),
        ("GET", "/v1/self", None),
        (
            "POST",
            "/v1/config/prepare",
            {"items": {"route/web": {"destinations": [{"service": "api"}]}}},
        ),
        ("POST", "/v1/config/commit", {"entries": [{"key": "route/web"}]}),
        ("GET", "/v1/self", None),
        ("POST", "/v1/config/prepare", {"items": {"route/web": None}}),
        ("POST", "/v1/config/commit", {"entries": [{"key": "route/web"}]}),
        ("GET", "/v1/self", None),
        ("POST", "/v1/config/prepare", {"items": {"service/api": {}, "route/old": None}}),
        ("POST", "/v1/config/commit", {"entries": [{"key": "service/api"}, {"key": "route/old"}]}),
        ("GET", "/v1/trust", None),
        ("GET", "/v1/config-history/route/web", None),
        ("GET", "/v1/config-conflicts", None),
        ("GET", "/v1/faults", None),
        ("POST", "/v1/faults", {"drop": ["127.0.0.3:7946"]}),
        ("DELETE", "/v1/faults", None),
    ]


def test_a_stale_commit_prepares_again_a_few_times(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    state.replies[("POST", "/v1/config/commit")] = (409, b'{"error": "stale", "detail": "x"}')
    with pytest.raises(AdminError) as err:
        admin.config_put("route/web", {}, FakeSigner())
    assert err.value.status == 409
    assert sum(1 for _, path, _ in state.seen if path == "/v1/config/prepare") == 5


def test_keys_and_prefixes_are_quoted_in_the_path(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    admin.config_get("route/a b")
    admin.config("route/a&b")
    assert [path for _, path, _ in state.seen] == [
        "/v1/config/route/a%20b",
        "/v1/config?prefix=route/a%26b",
    ]


def test_answers_are_parsed_json(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    rows = [{"name": "n1", "state": "alive"}]
    state.replies[("GET", "/v1/members")] = (200, json.dumps(rows).encode())
    assert admin.members() == rows
    assert admin.request("GET", "/v1/members") == (200, rows)


def test_an_error_status_is_admin_error_with_the_agents_reason(
    stub: tuple[Stub, AdminClient],
) -> None:
    state, admin = stub
    body = {"error": "invalid", "detail": "route.destinations: required"}
    state.replies[("POST", "/v1/config/prepare")] = (400, json.dumps(body).encode())
    with pytest.raises(AdminError) as info:
        admin.config_put("route/web", {}, FakeSigner())
    assert (info.value.status, info.value.error) == (400, "invalid")
    assert str(info.value) == "invalid: route.destinations: required"
    assert isinstance(info.value, ClientError)
    state.replies[("GET", "/v1/health")] = (500, b"")
    with pytest.raises(AdminError, match="HTTP 500"):
        admin.health()


def test_partial_answers_are_returned_not_raised(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    state.replies[("POST", "/v1/join")] = (502, b'{"joined": 0, "results": {"x:1": false}}')
    assert admin.join(["x:1"]) == {"joined": 0, "results": {"x:1": False}}
    state.replies[("POST", "/v1/keys")] = (207, b'{"failed": ["n2"]}')
    assert admin.change_key("use", "a2V5") == {"failed": ["n2"]}


def test_a_non_json_answer_is_unreachable(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    state.replies[("GET", "/v1/self")] = (200, b"<html>not an agent</html>")
    with pytest.raises(AgentUnreachable, match="non-JSON"):
        admin.self_info()


def test_monitor_yields_lines_until_the_stream_ends(stub: tuple[Stub, AdminClient]) -> None:
    state, admin = stub
    state.replies[("GET", "/v1/monitor")] = (200, b'{"event": "monitor-start"}\n\n{"e": 1}\n')
    assert list(admin.monitor()) == [b'{"event": "monitor-start"}', b"", b'{"e": 1}']
    state.replies[("GET", "/v1/monitor")] = (404, b"no")
    with pytest.raises(AdminError) as info:
        list(admin.monitor())
    assert info.value.status == 404


def test_nothing_listening_is_one_line_naming_the_address() -> None:
    port = closed_port()
    admin = AdminClient(f"127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(AgentUnreachable) as info:
        admin.members()
    text = str(info.value)
    assert "\n" not in text
    assert f"127.0.0.1:{port}" in text and "connection refused" in text
    with pytest.raises(AgentUnreachable):
        list(admin.monitor())


def test_addresses() -> None:
    assert str(AdminClient().address) == DEFAULT_AGENT
    assert AdminClient("127.0.0.5").address.port == 7947  # the admin port by default
    assert (
        repr(AdminClient("127.0.0.5:80", timeout_s=2)) == "AdminClient('127.0.0.5:80', timeout_s=2)"
    )
    with pytest.raises(UsageError):
        AdminClient("host:notaport")
    # Off loopback the admin API is TLS: without the cluster's roots there is no client.
    with pytest.raises(UsageError, match="--ca-file"):
        AdminClient("10.0.0.5")
