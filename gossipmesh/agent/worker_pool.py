"""``--proxy-workers N``: the agent's proxy in N processes, the agent supervising N-1 of them.

Theory of operation
-------------------
One Python process carries about one core of proxy work (BENCHMARKS.md, issue 19). With N > 1
the agent's own ``Proxy`` (worker 0) binds its listeners with SO_REUSEPORT; then ``WorkerPool``
starts N-1 worker processes (agent/proxy_worker.py), each a fresh interpreter with its own trio
loop and ``Proxy(reuse_port=True)`` on the addresses worker 0 bound (ports resolved, so port 0
works too). The kernel spreads new connections across the N listening sockets of each address.

Each worker has one control channel (agent/worker_channel.py), a socketpair made here. The
agent sends: a ``WorkerSetup`` at start, then whatever changed among the route table and the
policies (as the inputs of the last rebuild), the workload credentials, the trust store's contents and the catalog's "node hosts
service" facts (``sync``: after every rebuild and renewal, and every ``TICK_S`` for trust
changes the agent makes in place); and metrics requests every ``TICK_S`` and at each scrape.
Workers answer with snapshots (agent/worker_metrics.py) and audit lines. That direction is
untrusted: a frame that breaks the channel's rules is counted (``proxy_workers.bad_frames``),
logged in one line and the worker is killed and restarted; agent state is never touched by it.

Supervision: a worker that exits, breaks the channel or is not serving within ``READY_S`` is
stopped (SIGTERM, then SIGKILL after ``STOP_S``), its exit logged and counted
(``proxy_workers.exits``), and started again after a backoff (``BACKOFF_MIN_S`` doubling to
``BACKOFF_MAX_S``, reset once a worker stayed up ``STABLE_S``). ``/v1/health`` lists every
worker and says ``degraded`` while one is not serving. When the agent stops, every worker is
stopped the same way; when the agent is SIGKILLed, the workers die with it (see proxy_worker.py).

What is per process and not combined: every process appends its own lines to the access log
(``--access-log FILE``: one ``O_APPEND`` write of whole lines per batch, so lines do not
interleave; the rate limit is per process and the log's counters in ``/metrics`` are worker
0's), taps and spans see only the requests the agent's own proxy (worker 0) served (request
records do not cross the channel), and the descriptor and limit gauges are worker 0's. Counters, ``/v1/stats`` windows and the ejection
view of ``/v1/services`` cover every worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.agent.launch import INTERPRETER_OPTIONS
from gossipmesh.agent.worker_channel import (
    CREDENTIALS,
    HOSTS,
    MAX_REPORT_BYTES,
    METRICS,
    SETUP,
    TABLE,
    TRUST,
    AuditEvent,
    ChannelError,
    FrameReader,
    Ready,
    Snapshot,
    WorkerSetup,
    decode_report,
    encode_command,
)
from gossipmesh.agent.worker_metrics import EndpointStates, restore
from gossipmesh.dataplane.process import Child

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar
    from gossipmesh.proxy.metrics import ProxyMetrics

TICK_S = 1.0
READY_S = 30.0
STOP_S = 2.0
METRICS_TIMEOUT_S = 1.0
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
STABLE_S = 10.0
AUDIT_PER_TICK = 50  # audit lines a worker may have written per TICK_S; the rest are counted
# Frames a worker may send per TICK_S: a flood of them is a broken worker (killed, restarted),
# not a cost the agent keeps paying.
FRAMES_PER_TICK = 1000
OUTBOX = 64
READ_BYTES = 256 * 1024
_RESERVED = frozenset({"event", "level", "worker", "self"})  # the log call's own arguments


class WorkerProc:
    """One supervised worker process and what the agent knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = "starting"  # "starting" | "up" | "down"
        self.pid: int | None = None
        self.starts = 0
        self.last_exit = ""
        self.outbox: trio.MemorySendChannel[bytes] | None = None
        self.sent: dict[str, Any] = {}  # the inputs last sent, to send only changes
        self.metrics: ProxyMetrics | None = None
        self.states: EndpointStates = {}
        self.seq = 0
        self.answered = trio.Event()
        self.audit_budget = AUDIT_PER_TICK
        self.frames = 0  # since the last tick

    def send(self, data: bytes) -> None:
        """Queue one framed command (``encode_command``) without waiting."""
        if self.outbox is None:
            return
        try:
            self.outbox.send_nowait(data)
        except trio.WouldBlock:
            # The worker does not read its commands: it is wedged. Its channel is cut, which
            # ends it (end of file) and the supervisor starts a fresh one with the current state.
            self.outbox.close()
        except trio.ClosedResourceError:
            pass  # cut already: the supervisor is replacing this worker


class WorkerPool:
    """Workers 1..count-1 of the sidecar's proxy (worker 0 is the agent's own)."""

    def __init__(self, sidecar: Sidecar, count: int) -> None:
        self.sidecar = sidecar
        self.count = count
        self.log = sidecar.agent.log
        self.counters = sidecar.agent.counters
        self.workers = [WorkerProc(i) for i in range(1, count)]
        self.argv: Callable[[int, int], list[str]] = lambda fd, index: [
            sys.executable, *INTERPRETER_OPTIONS, "-m", "gossipmesh.agent.proxy_worker", str(fd),
            str(index),
        ]  # fmt: skip
        sidecar.agent.health_extensions.append(self.health_section)

    # -- what the workers must know ----------------------------------------------------------

    def current(self) -> dict[str, Any]:
        s = self.sidecar
        assert s.proxy is not None and s.workloads is not None
        assert s.table_inputs is not None  # the pool starts after the first rebuild
        trust = s.agent.identity.trust
        return {
            TABLE: s.table_inputs,
            CREDENTIALS: s.workloads.current.credentials,
            TRUST: (trust.trust_domain, trust.roots, tuple(sorted(trust.revoked))),
            HOSTS: {n: sorted(v) for n, v in s.authority.hosts.items()},
        }

    def sync(self) -> None:
        """Send each serving worker what changed since it last heard (cheap when nothing did:
        identity checks for the frozen inputs, equality for trust and hosts)."""
        now = self.current()
        frames: dict[str, bytes] = {}  # each change encoded (pickled) once for every worker
        for w in self.workers:
            if w.outbox is None:
                continue
            for kind, value in now.items():
                old = w.sent.get(kind)
                same = old is value if kind in (TABLE, CREDENTIALS) else old == value
                if not same:
                    w.sent[kind] = value
                    if kind not in frames:
                        frames[kind] = encode_command(kind, value)
                    w.send(frames[kind])

    def setup(self, w: WorkerProc) -> WorkerSetup:
        s = self.sidecar
        assert s.addresses is not None
        local: dict[str, list[tuple[str, int]]] = {}
        for svc in s.settings.services:
            local.setdefault(svc.name, []).append((svc.address, svc.port))
        now = w.sent = self.current()
        return WorkerSetup(
            w.index, s.addresses.outbound, s.addresses.inbound, dict(s.addresses.tcp),
            dict(s.addresses.services), local, s.settings.inbound_plaintext,
            s.rng.getrandbits(64), now[TABLE], now[CREDENTIALS], now[TRUST],
            now[HOSTS], s.name, s.settings.access_log, s.settings.access_log_sample_ratio,
            s.settings.access_log_max_lines_per_s,
        )  # fmt: skip

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED
                  ) -> None:  # fmt: skip
        """Start every worker, wait (bounded) for them to serve, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            for w in self.workers:
                nursery.start_soon(self.keep, w)
            with trio.move_on_after(READY_S):
                while any(w.state != "up" for w in self.workers):
                    await trio.sleep(0.05)
            task_status.started(self)
            while True:
                await trio.sleep(TICK_S)
                self.sync()
                await self.refresh()

    async def keep(self, w: WorkerProc) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            started = trio.current_time()
            reason = await self.run_once(w)
            if trio.current_time() - started >= STABLE_S:
                backoff = BACKOFF_MIN_S
            self.counters["proxy_workers.exits"] = self.counters.get("proxy_workers.exits", 0) + 1
            self.log.warn("proxy_worker_exit", worker=w.index, pid=w.pid, reason=reason,
                          restart_in_s=backoff)  # fmt: skip
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def run_once(self, w: WorkerProc) -> str:
        """One life of worker ``w``: why it ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Its own session: a terminal's Ctrl-C goes to the agent alone, which stops its workers.
        child = Child(self.argv(theirs.fileno(), w.index), None, (theirs.fileno(),), True)
        try:
            child.start()
        except OSError as exc:
            ours.close()
            return f"cannot start: {exc}"
        finally:
            theirs.close()
        w.starts += 1
        w.pid, w.state, w.metrics, w.states = child.pid, "starting", None, {}
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        send, receive = trio.open_memory_channel[bytes](OUTBOX)
        w.outbox = send
        reason = "the control channel closed"
        try:
            send.send_nowait(encode_command(SETUP, self.setup(w)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.write, stream, receive)
                nursery.start_soon(self.deadline, w)
                try:
                    await self.read(w, stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass  # the worker died or cut the channel: an exit like any other
                except Exception as exc:  # noqa: BLE001 - a worker's bytes never end the agent
                    reason = f"bad frame: {exc if isinstance(exc, ChannelError) else repr(exc)}"
                    self.counters["proxy_workers.bad_frames"] = (
                        self.counters.get("proxy_workers.bad_frames", 0) + 1
                    )
                    self.log.warn("proxy_worker_bad_frame", worker=w.index, reason=reason[11:])
                nursery.cancel_scope.cancel()
        finally:
            w.outbox, w.state, w.metrics, w.states = None, "down", None, {}
            with trio.CancelScope(shield=True):
                await child.stop(STOP_S)
                await stream.aclose()
            code = child.proc.returncode if child.proc is not None else None
            w.last_exit = f"{reason} (exit {code})"
        return w.last_exit

    async def deadline(self, w: WorkerProc) -> None:
        await trio.sleep(READY_S)
        if w.state != "up" and w.outbox is not None:
            self.log.warn("proxy_worker_not_ready", worker=w.index, after_s=READY_S)
            w.outbox.close()  # ends ``write``, then the worker sees end of file

    async def write(self, stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[bytes]
                    ) -> None:  # fmt: skip
        try:
            async for data in receive:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # the channel is gone: the worker sees that by itself
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.send_eof()  # the worker reads end of file and exits

    async def read(self, w: WorkerProc, stream: trio.SocketStream) -> None:
        """Reports until end of file; ``ChannelError`` on the first bad one."""
        reader = FrameReader(MAX_REPORT_BYTES)
        while data := await stream.receive_some(READ_BYTES):
            for body in reader.feed(data):
                self.handle(w, decode_report(body))

    def handle(self, w: WorkerProc, report: Ready | Snapshot | AuditEvent) -> None:
        w.frames += 1
        if w.frames > FRAMES_PER_TICK:
            raise ChannelError(f"more than {FRAMES_PER_TICK} frames in {TICK_S:g} s")
        if isinstance(report, Ready):
            if report.pid != w.pid:
                raise ChannelError("ready from another pid")
            w.state = "up"
            self.log.info("proxy_worker_up", worker=w.index, pid=w.pid, starts=w.starts)
        elif isinstance(report, Snapshot):
            if report.seq != w.seq:
                return  # a late answer to an earlier request
            if w.answered.is_set():
                raise ChannelError("a second answer to one metrics request")
            w.metrics, w.states = restore(report.data, str(w.index))
            w.answered.set()
        elif w.audit_budget > 0:
            w.audit_budget -= 1
            fields = {k: v for k, v in report.fields.items() if k not in _RESERVED}
            self.log.warn(report.event, worker=w.index, **fields)
        else:
            self.counters["proxy_workers.audit_dropped"] = (
                self.counters.get("proxy_workers.audit_dropped", 0) + 1
            )

    async def refresh(self) -> None:
        """Ask every serving worker for its counters; wait at most ``METRICS_TIMEOUT_S``."""
        asked = []
        for w in self.workers:
            w.audit_budget, w.frames = AUDIT_PER_TICK, 0
            if w.state == "up" and w.outbox is not None:
                w.seq += 1
                w.answered = trio.Event()
                w.send(encode_command(METRICS, w.seq))
                asked.append(w)
        with trio.move_on_after(METRICS_TIMEOUT_S):
            for w in asked:
                await w.answered.wait()

    # -- what the agent shows ----------------------------------------------------------------

    def metrics(self) -> list[ProxyMetrics]:
        """The latest counters of every serving worker."""
        return [w.metrics for w in self.workers if w.metrics is not None]

    def endpoint_states(self) -> list[EndpointStates]:
        return [w.states for w in self.workers if w.metrics is not None]

    def health_section(self, health: dict[str, Any]) -> None:
        rows = [{"worker": 0, "pid": os.getpid(), "state": "up", "starts": 1, "last_exit": ""}]
        rows += [{"worker": w.index, "pid": w.pid, "state": w.state, "starts": w.starts,
                  "last_exit": w.last_exit} for w in self.workers]  # fmt: skip
        up = sum(1 for r in rows if r["state"] == "up")
        health["proxy_workers"] = {"count": self.count, "up": up, "workers": rows}
        for w in self.workers:
            if w.state != "up":
                health.setdefault("reasons", []).append(
                    f"proxy worker {w.index} is not serving ({w.state}; {w.last_exit or 'starting'})"
                )
                if health.get("status") == "ok":
                    health["status"] = "degraded"


__all__ = ["WorkerPool", "WorkerProc"]
