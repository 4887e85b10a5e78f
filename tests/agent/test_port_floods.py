"""Floods of the gossip TCP port and the admin API against real agents: slow sockets, monitor
streams and oversize frames, while an operator lists keys, joins a new agent and writes config
(agent/stream_limits.py, agent/transport.py, agent/http.py; numbers in docs/LIMITS.md).

Two agents a and b form the cluster; c joins a during the flood. Each test opens its own flood
and closes it; the shared cluster is only read and written under keys the test owns.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import (
    SETTLE_S,
    AgentProc,
    Procs,
    free_port_on,
    requires_loopback_aliases,
    wait_until,
)
from config_helpers import signer

from gossipmesh.admin_token import TOKEN_FILE
from gossipmesh.agent.stream_limits import BUFFER_MAX_BYTES, FRAME_MAX_BYTES, UNVERIFIED_MAX
from gossipmesh.crypto import SEAL_OVERHEAD, generate_key

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
KEY = generate_key()
SIGNER = signer("flood")


class Field:
    def __init__(self, procs: Procs) -> None:
        port = free_port_on(IPS)
        key_file = procs.root / "gossip.key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        base = ["--encrypt-file", str(key_file), "--cluster", "flood"]
        self.a = procs.new("a", IPS[0], port, base)
        self.b = procs.new("b", IPS[1], port, [*base, "--join", f"{IPS[0]}:{port}"])
        self.c = procs.new("c", IPS[2], port, base)

    def gossip_addr(self, agent: AgentProc) -> tuple[str, int]:
        return agent.ip, agent.port

    def admin_addr(self, agent: AgentProc) -> tuple[str, int]:
        return agent.ip, agent.port + 1


@pytest.fixture(scope="module")
def field(procs: Procs) -> Field:
    f = Field(procs)
    f.a.start()
    f.b.start()
    return f


@pytest.fixture
def steady(field: Field) -> Field:
    for agent in (field.a, field.b):
        if not agent.running:
            agent.start()
    field.c.stop()
    wait_until("b alive at a", lambda: field.a.members().get("b") == "alive", SETTLE_S)
    return field


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def rss_bytes(agent: AgentProc) -> int:
    assert agent.proc is not None
    for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def slow_sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens; all closed at the end."""
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def open_slow(addr: tuple[str, int], n: int, first: bytes, into: list[socket.socket]) -> None:
    """``n`` connections that send ``first`` and then nothing."""
    for _ in range(n):
        s = socket.create_connection(addr, timeout=10)
        if first:
            s.sendall(first)
        into.append(s)


def counters(agent: AgentProc) -> dict[str, int]:
    c: dict[str, int] = agent.client.health()["counters"]
    return c


def test_operator_commands_work_during_a_flood_of_both_ports(
    steady: Field, slow_sockets: list[socket.socket], tmp_path: Path
) -> None:
    f = steady
    a = f.a
    before = counters(a)
    # Three times as many slow sockets as the gossip port keeps unverified, each with one byte of
    # a frame header; 64 slow sockets with half a request head on the admin port, and 64 clients
    # asking for /v1/monitor.
    open_slow(f.gossip_addr(a), 3 * UNVERIFIED_MAX, b"\x00", slow_sockets)
    open_slow(f.admin_addr(a), 64, b"GET /v1/members HTTP/1.1\r\nHost: x\r\n", slow_sockets)
    token = (a.data_dir / TOKEN_FILE).read_text().strip()
    monitor = (f"GET /v1/monitor HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
               ).encode()  # fmt: skip
    open_slow(f.admin_addr(a), 64, monitor, slow_sockets)
    wait_until("the gossip port evicted slow sockets",
               lambda: counters(a).get("dropped.stream_evicted", 0)
               > before.get("dropped.stream_evicted", 0), SETTLE_S)  # fmt: skip

    # Key operations through a (they fan out over the gossip port to a and b).
    proc = cli("keys", "list", "--agent", a.admin, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "a" in proc.stdout and "b" in proc.stdout

    # A new agent joins through a's gossip port.
    f.c.start(["--join", a.gossip])
    wait_until("c joined a", lambda: a.members().get("c") == "alive", SETTLE_S)

    # A signed config write through a reaches b.
    route = {"destinations": [{"service": "flooded"}]}
    a.client.config_write({"route/flood-test": route}, SIGNER)
    wait_until("b has the route", lambda: f.b.client.config("route/").get("entities", {})
               .get("route/flood-test") is not None, SETTLE_S)  # fmt: skip

    after = counters(a)
    assert after.get("admin.evicted", 0) > before.get("admin.evicted", 0)
    health = a.client.health()
    assert health["counters"].get("admin.errors", 0) == before.get("admin.errors", 0)
    text = metrics(a)
    line = 'gossipmesh_agent_limit{name="stream_frame_max_bytes"} '
    value = next(x.removeprefix(line) for x in text.splitlines() if x.startswith(line))
    assert float(value) == FRAME_MAX_BYTES + SEAL_OVERHEAD
    assert 'gossipmesh_agent_in_use{name="stream_unverified"}' in text


def metrics(agent: AgentProc) -> str:
    import http.client

    conn = http.client.HTTPConnection(agent.ip, agent.port + 1, timeout=10)
    token = (agent.data_dir / TOKEN_FILE).read_text().strip()
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    return conn.getresponse().read().decode()


def _frame_sender(addr: tuple[str, int], length: int, send: int, out: list[socket.socket]) -> None:
    try:
        s = socket.create_connection(addr, timeout=30)
        out.append(s)
        s.sendall(struct.pack(">I", length))
        chunk = b"\x00" * 65536
        sent = 0
        while sent < send:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        return  # the agent closed it: what a refused frame looks like


def flood_frames(addr: tuple[str, int], n: int, length: int, send: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    threads = [threading.Thread(target=_frame_sender, args=(addr, length, send, socks))
               for _ in range(n)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return socks


def test_32_oversize_frames_are_refused_at_their_header(steady: Field) -> None:
    a = steady.a
    before, rss0 = counters(a), rss_bytes(a)
    socks = flood_frames(steady.gossip_addr(a), 32, 16 * 1024 * 1024, 16 * 1024 * 1024)
    try:
        grew = rss_bytes(a) - rss0
        refused = counters(a).get("dropped.stream_oversize", 0)
        assert refused - before.get("dropped.stream_oversize", 0) == 32
        assert grew < FRAME_MAX_BYTES, grew  # none of the 512 MiB was buffered
    finally:
        for s in socks:
            s.close()
    assert a.members()["b"] == "alive"


def test_32_frames_at_the_cap_share_one_budget(steady: Field) -> None:
    """Frames just under the cap, all sent in full and failing to open: at most the buffer
    budget is held at once; the rest are refused at their header."""
    a = steady.a
    before, rss0 = counters(a), rss_bytes(a)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(a))
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    length = FRAME_MAX_BYTES - 64
    try:
        socks = flood_frames(steady.gossip_addr(a), 32, length, length)
    finally:
        done.set()
        watcher.join()
    for s in socks:
        s.close()

    def delta(name: str) -> int:
        return counters(a).get(name, 0) - before.get(name, 0)

    # A frame of zeros is refused once read (no seal version 0); one that found no room, at
    # once; on a loaded machine a frame still arriving at the stream deadline is cut there, or
    # breaks when the test closes its socket. Every one of the 32 is refused, none accepted.
    reasons = ("buffer_full", "version", "timeout", "broken")
    seen: dict[str, int] = {}

    def all_refused() -> bool:
        seen.update({r: delta(f"dropped.stream_{r}") for r in reasons})
        return sum(seen.values()) == 32

    try:
        wait_until("all 32 refused", all_refused, SETTLE_S)
    except AssertionError as e:
        raise AssertionError(f"{e}; refusals by reason: {seen}") from None
    assert delta("dropped.stream_buffer_full") >= 1
    # Each buffered frame is held about twice while it is opened (the read buffer and its copy).
    assert peak[0] - rss0 < 2 * BUFFER_MAX_BYTES + 16 * 1024 * 1024, peak[0] - rss0
    assert a.members()["b"] == "alive"
