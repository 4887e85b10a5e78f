"""gRPC through two real agents (mTLS between them, ALPN h2), with real grpcio clients and
servers: app -> a1 outbound -> a1's or a2's inbound -> a grpcio server.

``echo`` runs on both agents (g1 behind a1, g2 behind a2); the grpcio servers live in this test
process. Every call names the service as its authority, on one channel (one HTTP/2 connection
to a1), so the split between g1 and g2 is per request.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, requires_loopback_aliases
from agent_procs import wait_until as wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from grpc_helpers import GrpcServer, bidi, channel, client_stream, server_stream, unary  # noqa: E402

pytestmark = [requires_loopback_aliases, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

IPS = ["127.0.0.2", "127.0.0.3"]


class Mesh:
    def __init__(self, procs: Procs) -> None:
        self.servers = {"g1": GrpcServer("g1").start(), "g2": GrpcServer("g2").start()}
        gossip = free_port_on(IPS)
        proxy = free_port_on(IPS)
        while proxy in (gossip, gossip + 1) or proxy + 1 == gossip:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        self.access_log = procs.root / "a1.access.jsonl"
        self.agents: dict[str, AgentProc] = {}
        for (name, server), ip in zip((("a1", "g1"), ("a2", "g2")), IPS, strict=True):
            toml = procs.root / f"{name}.toml"
            toml.write_text(
                (f'access_log = "{self.access_log}"\n' if name == "a1" else "")
                + f'[[service]]\nname = "echo"\nport = {self.servers[server].port}\n'
                'check = { grpc = "", interval = "200ms", timeout = "150ms" }\n'
            )
            args = ["--cluster", "grpc", "--config", str(toml),
                    "--outbound", f"{ip}:{proxy}", "--inbound", f"{ip}:{proxy + 1}"]  # fmt: skip
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{gossip}"]
            self.agents[name] = procs.new(name, ip, gossip, args, proxy=True)

    @property
    def outbound(self) -> tuple[str, int]:
        return (IPS[0], self.out_port)

    def routable(self) -> bool:
        rows = self.agents["a1"].client.services()
        return sum(1 for r in rows if r["service"] == "echo" and r["routable"]) == 2

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[Mesh]:
    m = Mesh(procs)
    try:
        for agent in m.agents.values():
            agent.start()
        wait_for("a1 routing echo to both instances", m.routable, SETTLE_S, 0.2)
        yield m
    finally:
        m.stop()


def test_the_four_call_shapes_through_two_agents(mesh: Mesh) -> None:
    ch = channel(mesh.outbound, "echo")
    try:
        assert unary(ch, "Unary", b"hi").split(b":")[1] == b"hi"
        assert [m.split(b":")[1] for m in server_stream(ch, 4)] == [b"0", b"1", b"2", b"3"]
        assert client_stream(ch, [b"a", b"bb"]).split(b":")[1] == b"3"
        assert [m.split(b":")[1] for m in bidi(ch, [b"x", b"y"])] == [b"x", b"y"]
        # Per request, on one channel: both instances answer (one through a1's own inbound,
        # one through a2's, each over mTLS with ALPN h2).
        seen = Counter(unary(ch, "Unary", b"").split(b":")[0] for _ in range(100))
    finally:
        ch.close()
    assert set(seen) == {b"g1", b"g2"}, seen
    assert 25 <= seen[b"g1"] <= 75


def test_large_messages_through_two_agents(mesh: Mesh) -> None:
    ch = channel(mesh.outbound, "echo")
    try:
        big = 4 << 20
        assert len(unary(ch, "Big", b"%d" % big)) == big
        assert client_stream(ch, [b"y" * big]).split(b":")[1] == b"%d" % big
    finally:
        ch.close()


def test_a_server_killed_mid_stream_then_calls_go_elsewhere(mesh: Mesh) -> None:
    ch = channel(mesh.outbound, "echo")
    stream = ch.unary_stream("/test.Echo/ServerStream")
    it = stream(b"1000/20", timeout=30)
    first = next(it)
    victim = first.split(b":")[0].decode()
    survivor = "g2" if victim == "g1" else "g1"
    mesh.servers[victim].stop(None)
    with pytest.raises(grpc.RpcError) as info:
        for _ in it:
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    try:
        answers = [unary(ch, "Unary", b"") for _ in range(10)]
    finally:
        ch.close()
    assert answers == [survivor.encode() + b":"] * 10


def _requests_metric(agent: AgentProc) -> list[str]:
    conn = http.client.HTTPConnection(agent.ip, agent.port + 1, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return [
        line for line in text.splitlines() if line.startswith("gossipmesh_proxy_requests_total")
    ]


def test_grpc_calls_are_logged_and_labelled_like_http1(mesh: Mesh) -> None:
    """An HTTP/2 request reaches the access log and the per-destination, per-endpoint metrics
    through the same accounting as an HTTP/1 one."""

    marker = f"grpc-logged-{time.monotonic_ns()}"
    ch = channel(mesh.outbound, "echo")
    fn = ch.unary_unary("/test.Echo/Unary")
    try:
        answered = Counter(
            fn(b"", timeout=10, metadata=(("x-request-id", f"{marker}-{i}"),)).split(b":")[0]
            for i in range(20)
        )
    finally:
        ch.close()
    start = time.monotonic()
    last: list[dict[str, object]] = []
    while time.monotonic() - start < SETTLE_S:
        text = mesh.access_log.read_text() if mesh.access_log.exists() else ""
        lines = [json.loads(x) for x in text.splitlines() if marker in x]
        last = [x for x in lines if x["direction"] == "outbound"]
        if len(last) >= 20:
            break
        time.sleep(0.1)
    assert len(last) == 20, last
    assert all(x["status"] == 200 and x["destination"] == "echo" for x in last), last
    assert {x["endpoint"] for x in last} <= {"a1", "a2"}
    assert all(x["path"] == "/test.Echo/Unary" for x in last)
    assert all(len(str(x["trace_id"])) == 32 and len(str(x["span_id"])) == 16 for x in last)
    assert all(int(x["bytes_out"]) > 0 and x["error"] == "" for x in last)  # type: ignore[call-overload]
    by_node = Counter(str(x["endpoint"]) for x in last)
    assert by_node == Counter({"a1": answered[b"g1"], "a2": answered[b"g2"]}), (by_node, answered)
    metrics = _requests_metric(mesh.agents["a1"])
    for node in by_node:
        assert any(
            'service="echo"' in m
            and 'destination="echo"' in m
            and f'node="{node}"' in m
            and 'direction="outbound"' in m
            for m in metrics
        ), (node, metrics)
