"""Issue 11's attacks on the config document, on three real agent processes (127.0.0.2-4).

The cluster has a CA (made with ``gossipmesh ca``), node certificates, a gossip key and two
operators, alice and bob. The attacker is a captured node: it holds the gossip key, so it can
send sealed datagrams and open sealed streams like any member, but it holds no operator key.
Each attack failed against the code before issue 11 (the route was replaced; one counter blocked
every later write and made the agent refuse to restart; an unsigned PUT was obeyed; any node took
any service's traffic) and must now change nothing, be counted, and leave nothing on disk.

The tests share one cluster (starting it costs seconds) but none relies on another: each writes
and checks its own keys, and the ``steady`` fixture restarts what a test stopped.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, requires_loopback_aliases
from agent_procs import wait_until as wait_for
from test_mesh_sidecar import Backend, get

from gossipmesh.client import AdminError
from gossipmesh.config.signing import ProposalSigner
from gossipmesh.crdt.document import Delta, Entry
from gossipmesh.crdt.entries import pack
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.crdt.replica import TAG, frame
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.crypto import Keyring, decode_key, generate_key
from gossipmesh.identity import load_operator
from gossipmesh.swim.messages import User, encode
from gossipmesh.wire import encode_packet

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
NAMES = ["a1", "a2", "a3"]
CLUSTER = "atk"
KEY = generate_key()
MARKER = "attacker-was-here"
ROUTE = {"destinations": [{"service": "api"}]}
EVIL = {"destinations": [{"service": MARKER}]}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMESH_OPERATOR_KEY"}
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


class Attacker:
    """A captured node: it holds the gossip key (so its packets open), and no operator key."""

    def __init__(self) -> None:
        self.ring = Keyring([decode_key(KEY)])
        self.udp_aad = b"gossipmesh/udp/" + CLUSTER.encode()
        self.stream_aad = b"gossipmesh/stream/" + CLUSTER.encode()

    def datagram(self, agent: AgentProc, payload: bytes) -> None:
        """One sealed SWIM packet carrying a config user message, as the issue's attack."""
        packet = encode_packet([encode(User(TAG + payload, relay=True))])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(self.ring.seal(packet, self.udp_aad), (agent.ip, agent.port))

    def push(self, agent: AgentProc, payload: bytes) -> bytes:
        """A ``config-push`` stream, the way a member hands over a delta too large for UDP."""
        raw = b"\x0bconfig-push" + frame("mallory", payload)
        sealed = self.ring.seal(raw, self.stream_aad)
        with socket.create_connection((agent.ip, agent.port), timeout=10) as s:
            s.sendall(struct.pack(">I", len(sealed)) + sealed)
            head = _read(s, 4)
            if not head:
                return b""
            return self.ring.open(_read(s, struct.unpack(">I", head)[0]), self.stream_aad)


def _read(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return buf


class Cluster:
    def __init__(self, procs: Procs) -> None:
        root = procs.root
        self.ca = root / "ca"
        ok(cli("ca", "init", "--dir", str(self.ca), "--cluster", CLUSTER))
        self.ops = {}
        for op in ("alice", "bob"):
            self.ops[op] = root / f"{op}.op"
            ok(cli("ca", "issue-operator", op, "--dir", str(self.ca), "--out", str(self.ops[op])))
        port, proxy = free_port_on(IPS), free_port_on(IPS)
        self.out_port = proxy
        # One backend per instance (an address:port serves one instance); the body says whose.
        self.backends = {(n, svc): Backend(n, free_port_on(["127.0.0.1"]), root)
                         for n in ("good", "evil") for svc in ("api", "pay")}  # fmt: skip
        self.attacker = Attacker()
        self.agents: list[AgentProc] = []
        for i, (name, ip) in enumerate(zip(NAMES, IPS, strict=True)):
            tls = root / f"{name}-tls"
            ok(cli("ca", "issue-node", name, "--dir", str(self.ca), "--out", str(tls)))
            toml = root / f"{name}.toml"
            toml.write_text(self._services(name))
            args = ["--encrypt", KEY, "--cluster", CLUSTER, "--tls-dir", str(tls), "--config",
                    str(toml), "--config-sync-interval-ms", "1000", "--outbound", f"{ip}:{proxy}",
                    "--inbound", f"{ip}:{proxy + 1}"]  # fmt: skip
            if i:
                args += ["--join", f"{IPS[0]}:{port}"]
            self.agents.append(procs.new(name, ip, port, args, proxy=True))

    def _services(self, name: str) -> str:
        """a2 serves ``api`` and ``pay`` honestly; a3, the captured node, claims both, one with
        a weight of 10000, and its backend answers ``evil``."""
        check = 'check = { http = "/health", interval = "200ms", timeout = "150ms" }\n'
        if name == "a2":
            return "".join(f"[[service]]\nname = {s!r}\nport = {self.backends['good', s].port}\n"
                           f"{check}" for s in ("api", "pay"))  # fmt: skip
        if name == "a3":
            api, pay = self.backends["evil", "api"].port, self.backends["evil", "pay"].port
            return (
                f"[[service]]\nname = 'api'\nport = {api}\n{check}"
                f"[[service]]\nname = 'pay'\nport = {pay}\nweight = 10000\n{check}"
            )
        return ""

    @property
    def a1(self) -> AgentProc:
        return self.agents[0]

    def signer(self, op: str = "alice") -> ProposalSigner:
        return ProposalSigner.for_operator(load_operator(self.ops[op]))

    def all_alive(self) -> bool:
        return all(set(a.members().values()) == {"alive"} and len(a.members()) == 3
                   for a in self.agents)  # fmt: skip

    def value_everywhere(self, key: str, value: Any) -> bool:
        return all(a.client.config(key)["entities"].get(key) == value for a in self.agents)

    def refused(self, agent: AgentProc) -> Counter[str]:
        counters = agent.client.health()["counters"]
        return Counter({k: v for k, v in counters.items() if k.startswith("config.refused")})

    def on_disk(self, agent: AgentProc, marker: bytes) -> bool:
        return any(marker in p.read_bytes() for p in agent.data_dir.glob("replica.db*"))


@pytest.fixture(scope="module")
def cluster(procs: Procs) -> Iterator[Cluster]:
    c = Cluster(procs)
    for agent in c.agents:
        agent.start()
    yield c
    for b in c.backends.values():
        b.proc.kill()


@pytest.fixture
def steady(cluster: Cluster) -> Cluster:
    for agent in cluster.agents:
        if not agent.running:
            agent.start()
    wait_for("3 agents alive everywhere", cluster.all_alive, SETTLE_S)
    return cluster


def write(cluster: Cluster, key: str, value: Any, via: AgentProc, op: str = "alice") -> None:
    via.client.config_put(key, value, cluster.signer(op))


def forged(route: Entry, **change: Any) -> bytes:
    return encode_delta(Delta((Entry(**{**route_fields(route), **change}),)))


def route_fields(e: Entry) -> dict[str, Any]:
    return {"key": e.key, "writer": e.writer, "counter": e.counter, "hlc": e.hlc,
            "context": e.context, "value": e.value, "signer": e.signer,
            "signature": e.signature}  # fmt: skip


def current(agent: AgentProc, key: str) -> Entry:
    """The signed entry the agent holds for ``key`` (what a captured node would replay)."""
    from gossipmesh.config.signing import WireEntry

    proposal = agent.client.config_prepare({"items": {key: None}})
    w = WireEntry.from_json(proposal["siblings"][key][0], "sibling")
    return Entry(w.key, w.writer, w.counter, Timestamp(w.wall_ms, w.logical), w.context, w.value,
                 w.signer, w.signature)  # fmt: skip


# ---- the attacks --------------------------------------------------------------------------------


def test_a_forged_delta_under_another_writer_replaces_no_route(steady: Cluster) -> None:
    c = steady
    write(c, "route/web", ROUTE, c.a1)
    wait_for("route/web everywhere", lambda: c.value_everywhere("route/web", ROUTE), SETTLE_S)
    mine = current(c.agents[1], "route/web")
    now = int(time.time() * 1000)
    attacks = [
        # The issue's attack: a1's writer id, a higher counter, a context covering the real one.
        forged(
            mine,
            counter=mine.counter + 1000,
            hlc=Timestamp(now, 0),
            context=((mine.writer, mine.counter),),
            value=pack(EVIL),
            signature=bytes(64),
        ),
        # The real signature, replayed over the attacker's value.
        forged(mine, counter=mine.counter + 1, value=pack(EVIL)),
        # Another writer id, the same trick.
        forged(mine, writer="a2@ffffffff", counter=2**53 - 1, value=pack(EVIL)),
    ]
    before = c.refused(c.agents[1])
    for payload in attacks:
        c.attacker.datagram(c.agents[2], payload)
        assert c.attacker.push(c.agents[1], payload) == b"ok"  # merged: i.e. refused and counted
    wait_for("the forgeries counted", lambda: (c.refused(c.agents[1]) - before)
             ["config.refused.bad_signature"] >= 3, SETTLE_S)  # fmt: skip
    time.sleep(2.5)  # two anti-entropy periods: nothing may creep in later either
    assert c.value_everywhere("route/web", ROUTE)
    for agent in c.agents:
        assert not c.on_disk(agent, MARKER.encode())
    c.agents[1].stop()  # what was refused was never persisted: a restart shows the same
    c.agents[1].start()
    assert c.agents[1].client.config("route/web")["entities"]["route/web"] == ROUTE


def test_counters_near_2_63_block_no_writer_and_no_restart(steady: Cluster) -> None:
    c = steady
    write(c, "route/huge", ROUTE, c.a1)
    wait_for("route/huge everywhere", lambda: c.value_everywhere("route/huge", ROUTE), SETTLE_S)
    mine = current(c.a1, "route/huge")
    entry = [mine.key, mine.writer, 2**63 - 1, int(time.time() * 1000), 0,
             [[mine.writer, 2**62]], pack(EVIL), mine.signer, mine.signature, False]  # fmt: skip
    # The pre-issue-11 form too: an entry and a delta context that "covers" 2**62 writes.
    old_entry = [mine.key, mine.writer, 2**63 - 1, 0, 0, [], None, False]
    old_context = [[[mine.writer, 2**62]], []]
    old_style = msgpack.packb([1, 4, [[old_entry], old_context]], use_bin_type=True)
    before = c.refused(c.a1)
    for payload in (msgpack.packb([2, 4, [entry]], use_bin_type=True), old_style):
        c.attacker.push(c.a1, payload)
        c.attacker.datagram(c.agents[2], payload)
    wait_for("refused as malformed", lambda: (c.refused(c.a1) - before)["config.refused"] >= 2,
             SETTLE_S)  # fmt: skip
    # Later writes through that agent still reach everyone ...
    v2 = {"destinations": [{"service": "api-v2"}]}
    write(c, "route/huge", v2, c.a1)
    wait_for("the next write everywhere", lambda: c.value_everywhere("route/huge", v2), SETTLE_S)
    # ... and every agent restarts.
    for agent in c.agents:
        agent.stop()
        agent.start()
    wait_for("3 alive after restarts", c.all_alive, SETTLE_S)
    assert c.value_everywhere("route/huge", v2)


def test_unsigned_wrongly_signed_and_revoked_writes_are_refused(steady: Cluster) -> None:
    c, a1 = steady, steady.a1
    write(c, "route/guarded", ROUTE, a1)
    before = c.refused(a1)
    status, body = a1.client.request("PUT", "/v1/config/route/guarded", EVIL)
    assert status == 403 and body["error"] == "unsigned"
    file = c.ops["alice"].parent / "evil.json"
    file.write_text(json.dumps(EVIL))
    done = cli("config", "set", "route/guarded", "-f", str(file), "--agent", a1.admin)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--operator-key" in done.stderr
    junk = file.parent / "junk.op"
    junk.write_text("not a key")
    done = cli("config", "set", "route/guarded", "-f", str(file), "--agent", a1.admin,
               "--operator-key", str(junk))  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "junk.op" in done.stderr
    # A commit whose signature does not verify.
    signer = c.signer()
    items = {"route/guarded": EVIL}
    proposal = a1.client.config_prepare(signer.prepare_request(items))
    body = signer.sign(proposal, items, "a1", int(time.time() * 1000))
    sig = bytearray(base64.b64decode(body["entries"][0]["signature"]))
    sig[7] ^= 1
    body["entries"][0]["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(AdminError) as err:
        a1.client.config_commit(body)
    assert (err.value.status, err.value.error) == (403, "bad_signature")
    # An operator of another CA: its CLI cannot even vouch for the key's current versions ...
    other = c.ops["alice"].parent / "other-ca"
    ok(cli("ca", "init", "--dir", str(other), "--cluster", CLUSTER))
    ok(cli("ca", "issue-operator", "eve", "--dir", str(other), "--out", str(other / "eve.op")))
    done = cli("config", "set", "route/guarded", "-f", str(file), "--agent", a1.admin,
               "--operator-key", str(other / "eve.op"))  # fmt: skip
    assert done.returncode == 1 and "does not chain to your roots" in done.stderr, done.stderr
    # ... and a new key, with nothing to vouch for, is refused by the agent.
    done = cli("config", "set", "route/eves", "-f", str(file), "--agent", a1.admin,
               "--operator-key", str(other / "eve.op"))  # fmt: skip
    assert done.returncode == 2 and "untrusted_chain" in done.stderr, done.stderr
    # Bob is revoked (retired: what he wrote before stays); his next write is refused.
    write(c, "route/bobs", ROUTE, a1, op="bob")
    ok(cli("ca", "revoke", "--operator", "bob", "--mode", "retired", "--dir", str(c.ca),
           "--agent", a1.admin, "--reason", "left the team"))  # fmt: skip
    done = cli("config", "set", "route/guarded", "-f", str(file), "--agent", a1.admin,
               "--operator-key", str(c.ops["bob"]))  # fmt: skip
    assert done.returncode == 2 and "void_revoked" in done.stderr, done.stderr
    wait_for("bob's revocation everywhere", lambda: all(
        c.refused(a)["config.refused"] >= 0 and len(a.client.trust()["revoked_now"]) == 1
        for a in c.agents), SETTLE_S)  # fmt: skip
    assert c.value_everywhere("route/bobs", ROUTE)  # retired: his earlier write still counts
    assert c.value_everywhere("route/guarded", ROUTE)
    refused = c.refused(a1) - before
    for reason in ("unsigned", "bad_signature", "untrusted_chain", "void_revoked"):
        assert refused[f"config.refused.{reason}"] >= 1, (reason, refused)
    assert not c.on_disk(a1, MARKER.encode())


def test_services_outside_the_allowed_nodes_or_weight_take_no_traffic(steady: Cluster) -> None:
    c = steady
    write(c, "service/api", {"nodes": ["a1", "a2"]}, c.a1)
    write(c, "service/pay", {"nodes": ["a*"], "weight_max": 100}, c.a1)

    def refused_rows() -> dict[tuple[str, str], str]:
        return {(r["service"], r["node"]): r["refused"] for r in c.a1.client.services()
                if r.get("refused")}  # fmt: skip

    def settled() -> bool:
        rows = {(r["service"], r["node"]): r for r in c.a1.client.services()}
        good = [rows.get((s, "a2")) for s in ("api", "pay")]
        return all(r is not None and r["routable"] for r in good) and len(refused_rows()) == 2

    wait_for("a3's claims refused, a2's routable", settled, SETTLE_S)
    assert refused_rows() == {
        ("api", "a3"): "node a3 is not in service/api nodes",
        ("pay", "a3"): "weight 10000 is above service/pay weight_max 100",
    }
    answers = Counter(get(c.a1.ip, c.out_port, "/", host)[1] for host in ("api", "pay") * 20)
    assert answers == Counter({b"good": 40})
    health = c.a1.client.health()["counters"]
    assert health["catalog.refused_instances"] == 2
