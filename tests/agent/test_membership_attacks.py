"""Issue 11's membership attacks, replayed by a captured node against three real agents.

Three agent processes on 127.0.0.2-4 with a real CA (each its own node certificate) and a gossip
key; ``web`` runs behind a1 and a2, ``solo`` behind a3, each backend a small HTTP server. The
attacker (``captured_node.py``) holds the gossip key and the credentials of node ``m``, issued by
the same CA, and crafts datagrams and streams with the real codec. Before signed membership each
of these worked with one packet (issue 11): a forged ``Alive(b)`` plus a record for ``b`` naming
the attacker's proxy took 40-50 % of ``web`` traffic, even after ``b`` restarted; one
``Suspect(c, 2**62)`` left ``c`` dead for good and unable to restart; 20,000 invented members
stopped failure detection for over a minute. Every rejection must show in ``/v1/health`` and
``/metrics``.

The tests share one mesh; the ``steady`` fixture restarts what a test killed and waits until the
three agents route to all three instances again, so each test passes alone and in any order.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
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
from captured_node import CapturedNode, proxy_meta
from test_mesh_sidecar import Backend, get, instances

from gossipmesh.agent.runtime import suspicion_bound_s
from gossipmesh.crdt.records import RecordBody, ServiceInstance
from gossipmesh.crypto import Keyring, decode_key, generate_key
from gossipmesh.identity import CaCredentials, NodeCredentials, fingerprint, save_node
from gossipmesh.ids import Address
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.member import MemberState, Proof
from gossipmesh.swim.messages import Ping
from gossipmesh.swim.state_codec import MemberRecord, PushPull

pytestmark = requires_loopback_aliases

CLUSTER = "attack"
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
ATTACKER_IP = "127.0.0.9"
LAYOUT = [("a1", "web", "w1"), ("a2", "web", "w2"), ("a3", "solo", "w3")]
WANT = {("web", "a1"), ("web", "a2"), ("solo", "a3")}


class Decoy(http.server.BaseHTTPRequestHandler):
    """The attacker's "proxy": answers anything with ``attacker``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"attacker"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Field:
    """The mesh, its CA, and the captured node."""

    def __init__(self, procs: Procs, backends: dict[str, Backend]) -> None:
        self.backends = backends
        self.port = free_port_on([*IPS, ATTACKER_IP])
        proxy = free_port_on(IPS)
        while proxy in (self.port, self.port + 1) or proxy + 1 == self.port:
            proxy = free_port_on(IPS)
        self.out_port = proxy
        key = generate_key()
        now = int(time.time() * 1000)
        ca = CaCredentials.generate(CLUSTER, now_ms=now)
        self.agents: dict[str, AgentProc] = {}
        self.certs: dict[str, bytes] = {}  # certificates are public: anyone may relay them
        for (name, service, backend), ip in zip(LAYOUT, IPS, strict=True):
            tls = procs.root / f"{name}-tls"
            tls.mkdir()
            creds = NodeCredentials.issue(ca, name, now_ms=now)
            save_node(tls, creds)
            self.certs[name] = creds.cert_der
            toml = procs.root / f"{name}.toml"
            toml.write_text(
                f"[[service]]\nname = {service!r}\nport = {backends[backend].port}\n"
                'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n'
            )
            args = ["--cluster", CLUSTER, "--encrypt", key, "--tls-dir", str(tls),
                    "--config", str(toml), "--outbound", f"{ip}:{proxy}",
                    "--inbound", f"{ip}:{proxy + 1}"]  # fmt: skip
            if name != "a1":
                args += ["--join", f"{IPS[0]}:{self.port}"]
            self.agents[name] = procs.new(name, ip, self.port, args, proxy=True)
        self.m = CapturedNode(
            CLUSTER,
            Keyring([decode_key(key)]),
            NodeCredentials.issue(ca, "m", now_ms=now),
            Address(ATTACKER_IP, self.port),
        )
        self.decoy = http.server.ThreadingHTTPServer((ATTACKER_IP, self.port + 1), Decoy)
        threading.Thread(target=self.decoy.serve_forever, daemon=True).start()

    def gossip(self, name: str) -> Address:
        return Address(self.agents[name].ip, self.port)

    def healthy(self) -> bool:
        """All three agents alive everywhere (m aside) and routing to all three instances."""
        for agent in self.agents.values():
            views = {n: s for n, s in agent.members().items() if n != "m"}
            if views != dict.fromkeys(self.agents, "alive"):
                return False
            seen = instances(agent.client.services())
            if set(seen) != WANT or any(v != ("passing", True) for v in seen.values()):
                return False
        return True

    def heal(self) -> None:
        for agent in self.agents.values():
            if not agent.running:
                agent.start()
        wait_until("every agent routing to all 3 instances", self.healthy, SETTLE_S, 0.2)

    def web_answers(self, n: int = 40) -> Counter[bytes]:
        """Who answers ``n`` requests for ``web`` sent into a1's outbound listener."""
        return Counter(get(IPS[0], self.out_port, "/", "web")[1] for _ in range(n))

    def core(self, name: str) -> dict[str, int]:
        return dict(self.agents[name].client.health()["core"])

    def counters(self, name: str) -> dict[str, int]:
        return dict(self.agents[name].client.health()["counters"])

    def metrics(self, name: str) -> str:
        agent = self.agents[name]
        status, body, _ = get(agent.ip, agent.port + 1, "/metrics", host="admin")
        assert status == 200
        return body.decode()


@pytest.fixture(scope="module")
def field(procs: Procs) -> Iterator[Field]:
    ports: set[int] = set()
    while len(ports) < len(LAYOUT):
        ports.add(free_port_on(["127.0.0.1"]))
    backends: dict[str, Backend] = {}
    f: Field | None = None
    try:
        for (_, _, name), port in zip(LAYOUT, sorted(ports), strict=True):
            backends[name] = Backend(name, port, procs.root)
        f = Field(procs, backends)
        for agent in f.agents.values():
            agent.start()
        yield f
    finally:
        if f is not None:
            f.m.close()
            f.decoy.shutdown()
        for b in backends.values():
            b.stop()


@pytest.fixture
def steady(field: Field) -> Field:
    field.heal()
    return field


def test_a_forged_alive_and_record_of_another_node_move_no_traffic(steady: Field) -> None:
    f, m = steady, steady.m
    a2 = f.agents["a2"].client.members()
    inc = next(x["incarnation"] for x in a2 if x["name"] == "a2")
    decoy = Address(ATTACKER_IP, f.port + 1)
    body = RecordBody((ServiceInstance("web", ATTACKER_IP, f.port + 1, (), 10_000, "passing"),),
                      decoy.as_tuple())  # fmt: skip
    meta = proxy_meta(decoy, 2**62)
    # Alive(a2) at the attacker's address: under m's certificate, and under a2's (m's signature).
    under_own = m.forged_alive("a2", inc + 5, m.address, meta)
    under_a2s = m.forged_alive("a2", inc + 6, m.address, meta, cert=f.certs["a2"])
    # a2's record pointing web at the decoy: naming m's certificate, and naming a2's.
    record = m.forged_record("a2", 2**62, body)  # above any wall-clock version of a2
    record_a2s = m.forged_record("a2", 2**62 + 1, body, signer=fingerprint(f.certs["a2"]))
    for name in ("a1", "a2", "a3"):
        m.send(f.gossip(name), under_own, m.record_gossip(record))
        m.send(f.gossip(name), under_a2s, m.record_gossip(record_a2s))
        m.push_records(f.gossip(name), record, record_a2s)
    time.sleep(1.0)  # several gossip rounds: long enough for anything accepted to spread
    for name in ("a1", "a3"):
        view = {x["name"]: x for x in f.agents[name].client.members()}
        assert view["a2"]["address"] == f"{IPS[1]}:{f.port}", view["a2"]
        assert view["a2"]["incarnation"] < inc + 5
    answers = f.web_answers()
    assert answers[b"attacker"] == 0, answers
    assert set(answers) <= {b"w1", b"w2"}
    core, counters = f.core("a1"), f.counters("a1")
    assert core.get("reject.cert.wrong_name", 0) >= 1, core
    assert core.get("reject.bad_signature", 0) >= 1, core
    records = {k: v for k, v in counters.items() if k.startswith(("records", "stream", "dropped"))}
    assert counters.get("records.bad_signature", 0) >= 1, records
    assert counters.get("records.unknown_owner", 0) >= 1, records
    assert 'gossipmesh_agent_membership_rejected_total{reason="cert.wrong_name"}' in f.metrics("a1")
    # The record never stuck: after a2 restarts, still no traffic to the attacker.
    f.agents["a2"].stop()
    f.agents["a2"].start()
    f.heal()
    answers = f.web_answers()
    assert answers[b"attacker"] == 0 and answers[b"w2"] > 0, answers


def test_suspect_at_2_62_leaves_its_subject_alive_and_able_to_restart(steady: Field) -> None:
    f, m = steady, steady.m
    for name in ("a1", "a2", "a3"):
        m.send(f.gossip(name), m.own_alive(1))  # m is a member: its word is checked, not unknown
    wait_until("m known to a1", lambda: "m" in f.agents["a1"].members(), SETTLE_S)
    for name in ("a1", "a2"):
        m.send(f.gossip(name), m.suspect("a3", 2**62), m.dead("a3", 2**62 - 1))
    # The unsigned buddy ping to a3 itself: believed up to one above a3's incarnation.
    m.send(f.gossip("a3"), Ping(1, "a3", suspect_incarnation=2**62, source="m"))
    time.sleep(1.0)
    for name in ("a1", "a2"):
        assert f.agents[name].members()["a3"] == "alive"
        assert f.core(name).get("reject.incarnation_bound", 0) >= 2
    incarnation = f.agents["a3"].client.health()["incarnation"]
    assert incarnation < 2**61
    for name in ("a1", "a2", "a3"):
        m.send(f.gossip(name), m.own_leave(1))  # m goes, so the mesh's view is whole again
    f.agents["a3"].stop()
    f.agents["a3"].start()  # a3 restarts: its data dir holds a sane incarnation
    f.heal()


def invented(name: str, cert: bytes, i: int) -> MemberRecord:
    addr = Address(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 7946)
    return MemberRecord(name, addr, 0, MemberState.ALIVE, b"", Proof(cert, 0, b"\x07" * 64))


def test_20000_invented_members_are_never_added_and_a_kill_is_still_detected(
    steady: Field,
) -> None:
    f, m = steady, steady.m
    own = m.auth.certificate
    # One push-pull of 20,000 invented members under the captured node's certificate, and one
    # of 20,000 with junk certificates; gossip floods of invented alives from one source.
    m.push_pull(f.gossip("a1"), PushPull(False, tuple(invented(f"x{i}", own, i)
                                                      for i in range(20_000))))  # fmt: skip
    junk = [invented(f"y{i}", b"\x30\x82" + i.to_bytes(3, "big") * 20, i) for i in range(20_000)]
    m.push_pull(f.gossip("a2"), PushPull(False, tuple(junk)))
    for i in range(0, 4_000, 2):
        target = f.gossip(("a1", "a2")[i % 4 // 2])
        m.send(target, m.forged_alive(f"z{i}", 0, m.address, b""),
               m.forged_alive(f"z{i + 1}", 0, m.address, b"", cert=b"\x30" * 100))  # fmt: skip
    f.agents["a3"].stop()  # SIGKILL
    killed = time.monotonic()
    bound_s = suspicion_bound_s(SwimConfig.preset("local"), 3)

    def dead_at_both() -> bool:
        return all(f.agents[n].members().get("a3") == "dead" for n in ("a1", "a2"))

    _, took_s = wait_until("a3 dead at a1 and a2", dead_at_both, bound_s + 5, 0.05)
    took_s = time.monotonic() - killed
    for name in ("a1", "a2"):
        assert set(f.agents[name].members()) <= {"a1", "a2", "a3", "m"}
        assert f.core(name).get("reject", 0) >= 1
    assert f.core("a1").get("push_pull.abandoned", 0) >= 1
    assert f.core("a2").get("push_pull.abandoned", 0) >= 1
    assert took_s <= bound_s, (took_s, bound_s)


def test_every_rejection_shows_in_health_and_metrics(steady: Field) -> None:
    f, m = steady, steady.m
    m.send(f.gossip("a1"), m.forged_alive("a3", 9, m.address, b""))
    wait_until("a rejection at a1", lambda: f.core("a1").get("reject.cert.wrong_name"), SETTLE_S)
    health = f.agents["a1"].client.health()
    assert health["core"]["reject"] >= 1
    assert "gossipmesh_agent_membership_rejected_total" in f.metrics("a1")
