"""Per-request observability end to end: two agent processes on 127.0.0.2-3, a backend behind a2,
and this test as the app calling ``web`` through a1's outbound listener:

    app -> a1 outbound -> (mTLS) -> a2 inbound -> backend

Both agents write an access log (a1 every request, a2 through the TOML's ratio and rate keys);
``gossipmesh tap`` runs against a1 and must show the requests of both hops. Both export spans
(``--otlp-endpoint``) to an OTLP/HTTP receiver in this test, written with ``opentelemetry-proto``
(an independent decoder of what the SDK sends), which checks the parent/child links. Every process is
stopped by a fixture; every wait polls with a deadline and names what it waited for.
"""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
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
from test_mesh_sidecar import Backend

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3"]
SECRETS = {
    "Authorization": "Bearer t0p-s3cret-token",
    "Cookie": "session=c00kie-jar-value",
}


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    res = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            attrs = {}
                            for a in span.attributes:
                                v = a.value
                                attrs[a.key] = (
                                    v.int_value if v.HasField("int_value") else v.string_value
                                )
                            with receiver.lock:
                                receiver.spans.append({
                                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(), "name": span.name,
                                    "kind": span.kind, "host": res.get("host.name"),
                                    "attributes": attrs, "scope": ss.scope.name,
                                    "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano,
                                })  # fmt: skip
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mesh:
    def __init__(self, procs: Procs, backend: Backend, receiver: Receiver) -> None:
        self.root = procs.root
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        self.logs = {name: procs.root / f"{name}.access.jsonl" for name in ("a1", "a2")}
        self.receiver = receiver
        self.agents: dict[str, AgentProc] = {}
        for name, ip in zip(("a1", "a2"), IPS, strict=True):
            toml = procs.root / f"{name}.obs.toml"
            text = f'access_log = "{self.logs[name]}"\n'
            if name == "a2":
                text += "access_log_sample_ratio = 1.0\naccess_log_max_lines_per_s = 500\n"
                text += (f'[[service]]\nname = "web"\nport = {backend.port}\n'
                         'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n')  # fmt: skip
            toml.write_text(text)
            args = ["--cluster", "obs", "--config", str(toml),
                    "--outbound", f"{ip}:{proxy}", "--inbound", f"{ip}:{proxy + 1}",
                    "--otlp-endpoint", receiver.url]  # fmt: skip
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)

    def call(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(IPS[0], self.out_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": "web", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def routable(self) -> bool:
        rows = self.agents["a1"].client.services()
        return any(r["service"] == "web" and r["routable"] for r in rows)

    def lines(self, name: str) -> list[dict[str, Any]]:
        try:
            text = self.logs[name].read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[Mesh]:
    backend = Backend("w1", free_port_on(["127.0.0.1"]), procs.root)
    receiver = Receiver()
    try:
        m = Mesh(procs, backend, receiver)
        for agent in m.agents.values():
            agent.start()
        wait_until("a1 routing to web", m.routable, SETTLE_S, 0.2)
        yield m
    finally:
        backend.stop()
        receiver.close()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_access_log_line_per_hop_linked_and_without_secrets(mesh: Mesh) -> None:
    marker = f"/logged/{time.monotonic_ns()}"
    for i in range(5):
        status, body = mesh.call(f"{marker}/{i}?sid=q-secret", SECRETS)
        assert (status, body) == (200, b"w1")

    def logged() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        a = [x for x in mesh.lines("a1") if x["path"].startswith(marker)]
        b = [x for x in mesh.lines("a2") if x["path"].startswith(marker)]
        return (a, b) if len(a) == 5 and len(b) == 5 else None

    (out, inn), _ = wait_until("5 access log lines on each agent", logged, SETTLE_S)
    by_rid = {x["request_id"]: x for x in inn}
    for line in out:
        back = by_rid[line["request_id"]]
        assert line["direction"] == "outbound" and back["direction"] == "inbound"
        assert (line["node"], back["node"]) == ("a1", "a2")
        assert line["trace_id"] == back["trace_id"] and len(line["trace_id"]) == 32
        assert back["parent_span_id"] == line["span_id"]
        assert (line["service"], line["destination"], line["endpoint"]) == ("web", "web", "a2")
        assert line["status"] == back["status"] == 200 and line["error"] == ""
        # The caller a2 saw is the identity a1 proved in the mTLS handshake.
        assert back["caller"].startswith("spiffe://obs/") and "a1" in back["caller"]
        # Within one agent the stamps share a clock: the whole request outlasts its upstream part.
        # Across agents there is no such order: a2 stamps its end after its last send returns, and
        # a1 may read those bytes (and stamp) first, so a1's upstream time can be the shorter.
        assert line["duration_ms"] >= line["upstream_ms"] > 0 and back["duration_ms"] > 0
        assert line["bytes_out"] > 2 and line["retries"] == 0
    for name in ("a1", "a2"):
        text = mesh.logs[name].read_text()
        for secret in ("t0p-s3cret", "c00kie-jar", "q-secret"):
            assert secret not in text, (name, secret)


def _metric(agent: AgentProc, name: str) -> str:
    conn = http.client.HTTPConnection(agent.ip, agent.port + 1, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_access_log_counters_in_metrics(mesh: Mesh) -> None:
    assert mesh.call("/counted")[0] == 200
    wait_until(
        "a written line counted",
        lambda: 'outcome="written"' in _metric(mesh.agents["a2"], "gossipmesh_proxy_access_log"),
        SETTLE_S,
    )
    assert "gossipmesh_proxy_taps" in _metric(mesh.agents["a2"], "gossipmesh_proxy_taps")


def test_tap_from_one_agent_streams_both_hops(mesh: Mesh) -> None:
    a1 = mesh.agents["a1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossipmesh", "tap", "web", "--path", "/tapped", "--json",
         "--count", "6", "--duration", "60", "--agent", a1.admin],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SETTLE_S
        i = 0
        while proc.poll() is None and time.monotonic() < deadline:
            mesh.call(f"/tapped/{i}", SECRETS)
            mesh.call("/other")
            i += 1
            time.sleep(0.05)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event"] == "tap-start" and set(lines[0]["nodes"]) == {"a1", "a2"}
    records = [x for x in lines if "event" not in x]
    assert len(records) == 6
    assert all(x["path"].startswith("/tapped/") and x["service"] == "web" for x in records)
    assert {x["node"] for x in records} == {"a1", "a2"}  # both hops, a2's through a1's fan-out
    assert "t0p-s3cret" not in out and "c00kie" not in out


def test_tap_filters_status_and_renders_lines(mesh: Mesh) -> None:
    a1 = mesh.agents["a1"]
    # No request answers 500 here: the tap ends at its duration with no request line.
    quiet = cli("tap", "web", "--status", "5xx", "--duration", "2", "--json", "--agent", a1.admin)
    assert quiet.returncode == 0, quiet.stderr
    kinds = [json.loads(line).get("event") for line in quiet.stdout.splitlines()]
    assert kinds == ["tap-start", "tap-end"]
    bad = cli("tap", "web", "--status", "50", "--agent", a1.admin)
    assert bad.returncode == 2 and "status" in bad.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossipmesh", "tap", "web", "--method", "GET", "--local",
         "--count", "2", "--agent", a1.admin],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SETTLE_S
        while proc.poll() is None and time.monotonic() < deadline:
            mesh.call("/human")
            time.sleep(0.05)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "tapping web on a1" in out
    rows = [line for line in out.splitlines() if "/human" in line]
    assert len(rows) == 2 and all(" a1 -> GET web/human 200 web@a2 " in r for r in rows)


def _events(agent: AgentProc, event: str) -> list[dict[str, Any]]:
    out = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            out.append(record)
    return out


def test_config_writes_and_key_operations_are_logged(mesh: Mesh, tmp_path: Path) -> None:
    a1 = mesh.agents["a1"]
    body = tmp_path / "svc.json"
    body.write_text(json.dumps({"retry": {"attempts": 1}}))
    done = cli("config", "set", "service/logged", "-f", str(body), "--agent", a1.admin)
    assert done.returncode == 0, done.stderr
    written = wait_until("config_written in a1's log", lambda: _events(a1, "config_written"), 10)[0]
    # The operator's certificate rides along with the first write it signs (cert/FP).
    keys = written[-1]["keys"]
    assert "service/logged" in keys and written[-1]["count"] == len(keys)
    assert written[-1]["signers"] and "retry" not in json.dumps(written[-1])
    key = cli("keygen").stdout.strip()
    assert cli("keys", "install", key, "--agent", a1.admin).returncode == 0
    ops = wait_until("key_operation in a1's log", lambda: _events(a1, "key_operation"), 10)[0]
    assert ops[-1]["op"] == "install" and ops[-1]["nodes"] == 2 and ops[-1]["ok"] == 2
    assert key not in a1.log_path.read_text() and key not in mesh.agents["a2"].log_path.read_text()
    assert cli("keys", "remove", key, "--agent", a1.admin).returncode == 0


def test_spans_of_both_sidecars_link_parent_to_child(mesh: Mesh, tmp_path: Path) -> None:
    a1, a2 = mesh.agents["a1"], mesh.agents["a2"]
    body = tmp_path / "telemetry.json"
    body.write_text(json.dumps({"trace_sample_per_million": 1_000_000}))  # every trace
    done = cli("config", "set", "telemetry/mesh", "-f", str(body), "--agent", a1.admin)
    assert done.returncode == 0, done.stderr
    for agent in (a1, a2):  # the ratio reached both agents through the replicated document
        wait_until(f"{agent.name} sampling every trace", lambda a=agent: any(
            e["sample_ratio"] == 1.0 for e in _events(a, "span_sampling")), SETTLE_S)  # fmt: skip
    app_span = "00f067aa0ba902b7"
    trace = f"{time.monotonic_ns():032x}"
    status, _ = mesh.call("/traced", {"traceparent": f"00-{trace}-{app_span}-01"})
    assert status == 200
    unsampled = f"{time.monotonic_ns() + 1:032x}"
    assert mesh.call("/traced", {"traceparent": f"00-{unsampled}-{app_span}-00"})[0] == 200

    def both() -> list[dict[str, Any]] | None:
        spans = mesh.receiver.of_trace(trace)
        return spans if len(spans) >= 2 else None

    spans, _ = wait_until("the outbound and inbound spans of the trace", both, SETTLE_S)
    assert len(spans) == 2
    out = next(s for s in spans if s["host"] == "a1")
    inn = next(s for s in spans if s["host"] == "a2")
    assert out["parent"] == app_span  # the app's span is the outbound hop's parent
    assert inn["parent"] == out["span_id"]  # the outbound hop is the inbound hop's parent
    assert (out["name"], inn["name"]) == ("outbound web", "inbound web")
    assert out["kind"] == 3 and inn["kind"] == 2  # CLIENT, SERVER
    assert out["attributes"]["http.response.status_code"] == 200
    assert out["attributes"]["gossipmesh.endpoint"] == "a2"
    assert "a1" in inn["attributes"]["gossipmesh.caller"]
    assert out["duration_ns"] >= inn["duration_ns"] > 0
    assert out["scope"] == "gossipmesh.proxy"
    # A trace whose traceparent says "not sampled" is never exported, by either hop.
    assert mesh.receiver.of_trace(unsampled) == []
