"""The worker supervisor against scripted worker processes: what a hostile or dead worker costs.

A scripted worker is ``python -c SCRIPT FD INDEX``: it reads nothing and writes the frames the
test chose on its control channel, then waits for end of file. The pool is the real one; only
its sidecar is a stand-in (the pool reads the proxy's inputs from it in ``current``/``setup``,
which the test replaces with small values).
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from gossipmesh.agent.worker_channel import (
    AuditEvent,
    ChannelError,
    FrameReader,
    Ready,
    Snapshot,
    decode_command,
    encode_report,
)
from gossipmesh.agent.worker_metrics import snapshot
from gossipmesh.agent.worker_pool import AUDIT_PER_TICK, FRAMES_PER_TICK, WorkerPool, WorkerProc
from gossipmesh.proxy.metrics import ProxyMetrics

SCRIPT = r"""
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
frames = bytes.fromhex(os.environ["FRAMES"]).replace(b"PID!", os.getpid().to_bytes(4, "big"))
sock.sendall(frames)
while sock.recv(65536):
    pass
"""


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    warn = info


class ScriptedPool(WorkerPool):
    def current(self) -> dict[str, Any]:
        return {}

    def setup(self, w: WorkerProc) -> Any:
        return None  # the script never reads it


def pool_with(
    frames: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[ScriptedPool, Log, dict[str, int]]:
    log, counters = Log(), {}
    agent = SimpleNamespace(log=log, counters=counters, health_extensions=[])
    pool = ScriptedPool(SimpleNamespace(agent=agent), 2)  # type: ignore[arg-type]
    pool.argv = lambda fd, index: [sys.executable, "-c", SCRIPT, str(fd), str(index)]
    monkeypatch.setenv("FRAMES", frames.hex())
    return pool, log, counters


def ready() -> bytes:
    # msgpack ["ready", uint32 PID]: the script puts its pid in place of PID!.
    return b"\x00\x00\x00\x0c" + b"\x92\xa5ready\xce" + b"PID!"


async def test_a_hostile_frame_is_counted_and_kills_the_worker_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = encode_report(Snapshot(0, {"requests": [["x", 1]]}))
    pool, log, counters = pool_with(ready() + bad, monkeypatch)
    w = pool.workers[0]
    with trio.fail_after(30):
        reason = await pool.run_once(w)
    assert reason.startswith("bad frame: metrics field requests")
    assert counters == {"proxy_workers.bad_frames": 1}
    assert [e for e, _ in log.lines] == ["proxy_worker_up", "proxy_worker_bad_frame"]
    assert w.state == "down" and w.metrics is None and w.outbox is None
    assert w.pid is not None
    with trio.fail_after(10):
        while os.path.exists(f"/proc/{w.pid}"):
            await trio.sleep(0.02)  # stopped and reaped


async def test_a_good_snapshot_is_kept_until_a_bad_one_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = ProxyMetrics()
    m.observe("api", "", 200, "outbound", 1000)
    pool, log, counters = pool_with(ready(), monkeypatch)
    w = pool.workers[0]
    w.pid = 42
    pool.handle(w, Ready(42))
    pool.handle(w, Snapshot(0, snapshot(m, {})))
    kept = w.metrics
    assert kept is not None and kept.requests == m.requests
    with pytest.raises(ChannelError, match="second answer"):
        pool.handle(w, Snapshot(0, snapshot(m, {})))
    w.seq, w.answered = 1, trio.Event()  # the next request
    with pytest.raises(ChannelError, match="not a count"):
        pool.handle(w, Snapshot(1, {"requests": [["api", "", "", "", 200, "outbound", -5]]}))
    assert w.metrics is kept and counters == {}


async def test_audit_lines_are_capped_and_a_frame_flood_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, log, counters = pool_with(b"", monkeypatch)
    w = pool.workers[0]
    event = AuditEvent("mesh_peer_refused", {"reason": "revoked", "worker": 9, "event": "x"})
    for _ in range(AUDIT_PER_TICK + 5):
        pool.handle(w, event)
    assert len(log.lines) == AUDIT_PER_TICK
    assert log.lines[0] == ("mesh_peer_refused", {"worker": 1, "reason": "revoked"})
    assert counters == {"proxy_workers.audit_dropped": 5}
    with pytest.raises(ChannelError, match="frames in"):
        for _ in range(FRAMES_PER_TICK):
            pool.handle(w, event)


async def test_a_dead_worker_makes_health_degraded_and_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, log, counters = pool_with(b"", monkeypatch)  # exits at once: EOF before ready
    health: dict[str, Any] = {"status": "ok"}
    pool.argv = lambda fd, index: [sys.executable, "-c", "pass"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.keep, pool.workers[0])
        with trio.fail_after(30):
            while pool.workers[0].starts < 2:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    pool.health_section(health)
    assert health["status"] == "degraded"
    assert health["proxy_workers"]["up"] == 1 and health["proxy_workers"]["count"] == 2
    assert counters["proxy_workers.exits"] >= 1
    assert any(e == "proxy_worker_exit" for e, _ in log.lines)


async def test_sync_sends_each_worker_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    pool, _, _ = pool_with(b"", monkeypatch)
    pool.workers.append(WorkerProc(2))
    table, trust = object(), ("mesh", (b"root",), ())
    state: dict[str, Any] = {"table": table, "trust": trust}
    pool.current = lambda: dict(state)  # type: ignore[method-assign]
    channels = []
    for w in pool.workers:
        send, receive = trio.open_memory_channel[bytes](8)
        w.outbox, w.sent = send, {"table": table, "trust": trust}
        channels.append(receive)
    pool.sync()
    assert [c.statistics().current_buffer_used for c in channels] == [0, 0]  # nothing new
    state["trust"] = ("mesh", (b"root",), (b"f" * 32,))  # a revocation, made in place
    state["table"] = table  # the same object: not sent again
    pool.sync()
    pool.sync()
    got = [[decode_command(FrameReader(2**20).feed(c.receive_nowait())[0])] for c in channels]
    assert got == [[("trust", ["mesh", [b"root"], [b"f" * 32]])]] * 2
    assert [c.statistics().current_buffer_used for c in channels] == [0, 0]
