"""Active health checks of this agent's local service instances.

Theory of operation
-------------------
Each ``[[service]]`` table of the agent file may carry a ``check`` (``http = "/path"`` or
``tcp = true``). The agent probes its *own* instances only: every agent checks what it hosts and
publishes the outcome in its signed node record, so a service is probed once per interval no
matter how large the mesh is, and over loopback rather than across the network.

The decision is a pure state machine, ``CheckState``: it counts consecutive successes and
failures and flips its status only when a count reaches its threshold (``healthy_threshold``
successes to become ``passing``, ``unhealthy_threshold`` failures to become ``critical``). One lost
probe therefore does not drop an instance out of every proxy's table, and one lucky probe does not
put a broken instance back in. The initial status is ``unknown``: an instance that has not yet
proven itself gets no traffic (the catalog routes only ``passing``), which is what a restarting
backend that accepts connections before it can serve needs.

``HealthChecker`` is the thin trio shell around it: one loop per checked instance in one nursery.
A loop probes, feeds the result to its ``CheckState`` and calls ``on_change(key, status)`` when
the status flips, then sleeps until the next probe. Probes are spaced by ``interval_ms`` measured
from the *start* of the previous probe (a slow probe does not stretch the period) plus a small
jitter drawn from an injected ``random.Random``, so instances configured alike do not probe in
lockstep and tests can fix the seed. Each probe runs under ``trio.move_on_after``: a probe that
times out is a failure. Whatever the configuration says, no probe may take longer than
``MAX_PROBE_MS`` (a hung backend must never wedge the loop), and the HTTP status line may not be
longer than ``MAX_STATUS_LINE_BYTES``.

The HTTP probe is a raw ``GET`` with ``Connection: close`` over ``trio.open_tcp_stream``; only the
status line is read (2xx and 3xx pass, as in Consul). No HTTP client library is needed for that.

Instances without a check are ``passing`` from the start, as Consul treats a service with no
check: the operator asked for no verification, so membership alone decides.

One health vocabulary everywhere: ``passing``, ``warning``, ``critical``, ``unknown`` (Consul's),
in the ``health_change`` log line, node records, ``/v1/services``, ``gossipmesh services`` and the
``gossipmesh_agent_instances`` metric. Records already used it, and operators coming from Consul
read it without a glossary; a checker never says ``warning`` (it has no such result).
"""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import trio

from gossipmesh.config.schema import HealthCheck, LocalService
from gossipmesh.crdt.records import Health

Status = Literal["passing", "critical", "unknown"]

# Upper bound on one probe (connect + request + status line), whatever timeout_ms says.
MAX_PROBE_MS = 5000
# A status line is ``HTTP/1.1 200 OK``; anything much longer is not an HTTP server.
MAX_STATUS_LINE_BYTES = 4096
# Each interval is lengthened by a uniform draw from [0, JITTER_FRACTION * interval], capped, so
# probes spread out without ever coming more often than configured.
JITTER_FRACTION = 0.1
MAX_JITTER_MS = 1000
RECV_CHUNK_BYTES = 1024
# The schema allows any non-space path; percent-encode only what is not printable ASCII so the
# request line stays valid and the operator's own escapes pass through untouched.
_PATH_SAFE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))


def instance_key(service: LocalService) -> str:
    """The key an instance is known by in statuses and callbacks: ``name@address:port``."""
    return f"{service.name}@{service.address}:{service.port}"


def record_health(status: Status) -> Health:
    """The node-record health for a check status (the same words: see the module doc)."""
    return status


# ---------------------------------------------------------------------------------------------
# The pure state machine


class CheckState:
    """Consecutive-result counter with thresholds. Pure; no clock, no I/O.

    ``record(ok)`` returns True exactly when the status changed.
    """

    __slots__ = ("healthy_threshold", "unhealthy_threshold", "status", "successes", "failures")

    def __init__(self, healthy_threshold: int = 1, unhealthy_threshold: int = 2) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.status: Status = "unknown"
        self.successes = 0  # consecutive, capped at healthy_threshold
        self.failures = 0  # consecutive, capped at unhealthy_threshold

    @classmethod
    def for_check(cls, check: HealthCheck) -> CheckState:
        return cls(check.healthy_threshold, check.unhealthy_threshold)

    def record(self, ok: bool) -> bool:
        before = self.status
        if ok:
            self.failures = 0
            # Capped: the count only matters up to the threshold, and stays bounded forever.
            self.successes = min(self.successes + 1, self.healthy_threshold)
            if self.successes >= self.healthy_threshold:
                self.status = "passing"
        else:
            self.successes = 0
            self.failures = min(self.failures + 1, self.unhealthy_threshold)
            if self.failures >= self.unhealthy_threshold:
                self.status = "critical"
        return self.status != before

    def __repr__(self) -> str:
        return (
            f"CheckState({self.status}, successes={self.successes}/{self.healthy_threshold}, "
            f"failures={self.failures}/{self.unhealthy_threshold})"
        )


# ---------------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    reason: str  # short, for logs and `gossipmesh services`: "http 200", "timeout", "refused"


Probe = Callable[[LocalService, HealthCheck], Awaitable[ProbeResult]]


def _host_header(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def parse_status_line(line: bytes) -> int | None:
    """``b"HTTP/1.1 204 No Content"`` → 204; None if it is not an HTTP/1.x status line."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return int(code)


async def _read_status_line(stream: trio.abc.ReceiveStream) -> bytes:
    buf = bytearray()
    while b"\r\n" not in buf:
        if len(buf) > MAX_STATUS_LINE_BYTES:
            raise ValueError("status line too long")
        chunk = await stream.receive_some(RECV_CHUNK_BYTES)
        if not chunk:
            raise ValueError("connection closed before the status line")
        buf += chunk
    return bytes(buf[: buf.index(b"\r\n")])


async def probe_io(service: LocalService, check: HealthCheck) -> ProbeResult:
    """One probe without a deadline: ``probe`` imposes it. Every failure is a result, not an
    exception, so a broken backend can never take the checker down."""
    try:
        stream = await trio.open_tcp_stream(service.address, service.port)
    except OSError as e:
        return ProbeResult(False, f"connect: {e.strerror or type(e).__name__}")
    async with stream:
        if check.kind == "tcp":
            return ProbeResult(True, "tcp connect")
        if check.kind == "grpc":
            # The h2 library only for gRPC checks (issue 19: 2.5 MiB an HTTP agent never uses).
            from gossipmesh.agent.grpc_health import grpc_probe

            authority = _host_header(service.address, service.port)
            ok, reason = await grpc_probe(stream, authority, check.grpc_service)
            return ProbeResult(ok, reason)
        request = (
            f"GET {urllib.parse.quote(check.http_path or '/', safe=_PATH_SAFE_CHARS)} HTTP/1.1\r\n"
            f"Host: {_host_header(service.address, service.port)}\r\n"
            "User-Agent: gossipmesh-health\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            await stream.send_all(request)
            line = await _read_status_line(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as e:
            return ProbeResult(False, f"http: {e}")
        code = parse_status_line(line)
        if code is None:
            return ProbeResult(False, "http: not an HTTP/1.x response")
        return ProbeResult(200 <= code < 400, f"http {code}")


async def probe(
    service: LocalService, check: HealthCheck, probe_fn: Probe = probe_io
) -> ProbeResult:
    """Run one check against ``service`` under its timeout (at most ``MAX_PROBE_MS``); a probe
    that does not finish in time is a failure."""
    timeout_ms = min(check.timeout_ms, MAX_PROBE_MS)
    with trio.move_on_after(timeout_ms / 1000):
        return await probe_fn(service, check)
    return ProbeResult(False, f"timeout after {timeout_ms} ms")


# ---------------------------------------------------------------------------------------------
# The trio shell


class HealthChecker:
    """Runs every local check; reports status flips through ``on_change(key, status)``.

    ``on_change`` is called from the checker's tasks, synchronously, only on a flip; read
    ``statuses()`` for the current view (including the initial one). ``probe_fn`` replaces the
    network I/O of one probe (tests); the timeout is still applied around it.
    """

    def __init__(
        self,
        services: Iterable[LocalService],
        on_change: Callable[[str, Status], None],
        rng: random.Random | None = None,
        *,
        probe_fn: Probe = probe_io,
    ) -> None:
        self._services = tuple(services)
        self._on_change = on_change
        # Seeded by default so two runs of the same agent config jitter alike.
        self._rng = rng if rng is not None else random.Random(0)
        self._probe = probe_fn
        self._states: dict[str, CheckState] = {}
        self._no_check: set[str] = set()
        self.last_result: dict[str, ProbeResult] = {}
        for svc in self._services:
            key = instance_key(svc)
            # The schema refuses two tables on one address and port, so keys are unique.
            assert key not in self._states and key not in self._no_check, key
            if svc.check is None:
                self._no_check.add(key)
            else:
                self._states[key] = CheckState.for_check(svc.check)

    def statuses(self) -> dict[str, Status]:
        out: dict[str, Status] = {key: "passing" for key in self._no_check}
        out.update((key, state.status) for key, state in self._states.items())
        return dict(sorted(out.items()))

    def _jitter_s(self, interval_ms: int) -> float:
        return min(interval_ms * JITTER_FRACTION, MAX_JITTER_MS) * self._rng.random() / 1000

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe until cancelled. ``started()`` once every loop is running."""
        async with trio.open_nursery() as nursery:
            for svc in sorted(self._services, key=instance_key):
                if svc.check is not None:
                    # Draw the first offset here, in sorted order, so it does not depend on the
                    # order trio happens to schedule the loops in.
                    first_delay_s = self._jitter_s(svc.check.interval_ms)
                    nursery.start_soon(self._loop, svc, svc.check, first_delay_s)
            task_status.started()
            # With no checks the nursery would exit at once; stay up so callers can treat
            # run() uniformly as "runs until cancelled".
            await trio.sleep_forever()

    async def _loop(self, svc: LocalService, check: HealthCheck, first_delay_s: float) -> None:
        key = instance_key(svc)
        state = self._states[key]
        await trio.sleep(first_delay_s)
        while True:
            started_s = trio.current_time()
            # The deadline is applied here, around any probe_fn, so an injected probe that hangs
            # is cut off exactly like a real one.
            result = await probe(svc, check, self._probe)
            self.last_result[key] = result
            if state.record(result.ok):
                self._on_change(key, state.status)
            await trio.sleep_until(
                started_s + check.interval_ms / 1000 + self._jitter_s(check.interval_ms)
            )
