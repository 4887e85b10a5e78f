"""Health checks: the pure threshold machine, the loop on a mock clock, probes on real sockets."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing

from gossipmesh.agent.health import (
    MAX_PROBE_MS,
    CheckState,
    HealthChecker,
    ProbeResult,
    Status,
    instance_key,
    parse_status_line,
    probe,
    record_health,
)
from gossipmesh.config.schema import HealthCheck, LocalService

# ---------------------------------------------------------------------------------------------
# CheckState (pure)


def feed(state: CheckState, results: str) -> list[tuple[Status, bool]]:
    """Feed ``"++-"`` (pass, pass, fail); return (status, changed) after each."""
    return [(state.status, changed) for changed in (state.record(r == "+") for r in results)]


def test_starts_unknown_and_first_success_passes_with_threshold_one() -> None:
    state = CheckState(healthy_threshold=1, unhealthy_threshold=2)
    assert state.status == "unknown"
    assert feed(state, "++") == [("passing", True), ("passing", False)]


def test_failures_flip_only_at_the_threshold_and_a_success_resets_the_count() -> None:
    state = CheckState(healthy_threshold=1, unhealthy_threshold=3)
    state.record(True)
    assert feed(state, "--+---") == [
        ("passing", False),
        ("passing", False),
        ("passing", False),  # the count restarts here
        ("passing", False),
        ("passing", False),
        ("critical", True),
    ]
    assert feed(state, "-") == [("critical", False)]


def test_recovery_needs_healthy_threshold_successes_in_a_row() -> None:
    state = CheckState(healthy_threshold=3, unhealthy_threshold=1)
    assert feed(state, "-") == [("critical", True)]
    assert feed(state, "++-+++") == [
        ("critical", False),
        ("critical", False),
        ("critical", False),
        ("critical", False),
        ("critical", False),
        ("passing", True),
    ]


def test_unknown_stays_until_a_threshold_is_reached() -> None:
    state = CheckState(healthy_threshold=2, unhealthy_threshold=2)
    assert feed(state, "-+-+") == [("unknown", False)] * 4
    assert feed(state, "-") == [("unknown", False)]
    assert feed(state, "-") == [("critical", True)]


def test_counters_are_capped() -> None:
    state = CheckState(healthy_threshold=2, unhealthy_threshold=3)
    for _ in range(1000):
        state.record(True)
    assert state.successes == 2
    for _ in range(1000):
        state.record(False)
    assert (state.failures, state.successes) == (3, 0)


def test_thresholds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        CheckState(0, 1)
    with pytest.raises(ValueError):
        CheckState(1, 0)


def test_for_check_and_vocabulary() -> None:
    state = CheckState.for_check(HealthCheck("tcp", healthy_threshold=4, unhealthy_threshold=5))
    assert (state.healthy_threshold, state.unhealthy_threshold) == (4, 5)
    assert [record_health(s) for s in ("passing", "critical", "unknown")] == [
        "passing",
        "critical",
        "unknown",
    ]
    svc = LocalService("api", 8080, "127.0.0.1")
    assert instance_key(svc) == "api@127.0.0.1:8080"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"HTTP/1.1 200 OK", 200),
        (b"HTTP/1.0 302 Found", 302),
        (b"HTTP/1.1 204", 204),
        (b"HTTP/2 200", None),
        (b"SSH-2.0-OpenSSH", None),
        (b"HTTP/1.1 2000 OK", None),
        (b"HTTP/1.1 abc OK", None),
        (b"", None),
    ],
)
def test_parse_status_line(line: bytes, code: int | None) -> None:
    assert parse_status_line(line) == code


# ---------------------------------------------------------------------------------------------
# The loop, with an injected probe on the mock clock


def svc_with(check: HealthCheck | None, port: int = 8080, name: str = "api") -> LocalService:
    return LocalService(name, port, "127.0.0.1", check=check)


@dataclass
class Script:
    """A fake probe that answers from a list of outcomes ("+", "-", or "hang") and logs times."""

    outcomes: list[str]
    times_s: list[float] = field(default_factory=list)

    async def __call__(self, service: LocalService, check: HealthCheck) -> ProbeResult:
        self.times_s.append(trio.current_time())
        outcome = self.outcomes.pop(0) if self.outcomes else "+"
        if outcome == "hang":
            await trio.sleep_forever()
        return ProbeResult(outcome == "+", outcome)


async def test_loop_reports_flips_only_and_honours_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    check = HealthCheck("tcp", interval_ms=1000, timeout_ms=500, unhealthy_threshold=2)
    script = Script(["+", "+", "-", "+", "-", "-", "-", "+"])
    changes: list[tuple[str, str]] = []
    checker = HealthChecker([svc_with(check)], lambda k, s: changes.append((k, s)), probe_fn=script)
    assert checker.statuses() == {"api@127.0.0.1:8080": "unknown"}
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        await trio.sleep(8.5 * 1.1)  # enough for 8 probes even with maximal jitter
        nursery.cancel_scope.cancel()
    key = "api@127.0.0.1:8080"
    assert changes == [(key, "passing"), (key, "critical"), (key, "passing")]
    assert checker.statuses() == {key: "passing"}
    gaps = [b - a for a, b in zip(script.times_s, script.times_s[1:], strict=False)]
    assert len(gaps) >= 7
    # Never more often than configured, and the jitter is small.
    assert all(1.0 <= g <= 1.1 + 1e-9 for g in gaps), gaps
    assert len(set(gaps)) > 1  # jittered, not lockstep


async def test_a_hanging_probe_times_out_as_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    check = HealthCheck("tcp", interval_ms=1000, timeout_ms=300, unhealthy_threshold=2)
    script = Script(["+"] + ["hang"] * 10)
    changes: list[str] = []
    checker = HealthChecker([svc_with(check)], lambda k, s: changes.append(s), probe_fn=script)
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        await trio.sleep(3.5)
        nursery.cancel_scope.cancel()
    assert changes == ["passing", "critical"]
    assert checker.last_result["api@127.0.0.1:8080"].reason == "timeout after 300 ms"


async def test_timeout_is_capped_whatever_the_config(
    autojump_clock: trio.testing.MockClock,
) -> None:
    check = HealthCheck("tcp", interval_ms=60_000, timeout_ms=60_000)
    start_s = trio.current_time()
    result = await probe(svc_with(check), check, Script(["hang"]))
    assert not result.ok
    assert trio.current_time() - start_s == pytest.approx(MAX_PROBE_MS / 1000)


async def test_services_without_a_check_pass_and_run_stays_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    changes: list[str] = []
    checker = HealthChecker(
        [svc_with(None, 1, "a"), svc_with(HealthCheck("tcp"), 2, "b")],
        lambda k, s: changes.append(k),
        probe_fn=Script(["-", "-"] * 50),
    )
    assert checker.statuses() == {"a@127.0.0.1:1": "passing", "b@127.0.0.1:2": "unknown"}
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert changes == ["b@127.0.0.1:2"]
    assert checker.statuses() == {"a@127.0.0.1:1": "passing", "b@127.0.0.1:2": "critical"}

    only_unchecked = HealthChecker([svc_with(None)], lambda k, s: None)
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(only_unchecked.run)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught


async def test_same_seed_same_schedule(autojump_clock: trio.testing.MockClock) -> None:
    async def schedule(seed: int) -> list[float]:
        script = Script([])
        check = HealthCheck("tcp", interval_ms=500, timeout_ms=100)
        checker = HealthChecker(
            [svc_with(check)], lambda k, s: None, random.Random(seed), probe_fn=script
        )
        start_s = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(checker.run)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        # Rounded: the two runs start at different absolute clock values, so float sums differ
        # in the last bits.
        return [round(t - start_s, 6) for t in script.times_s]

    first = await schedule(1)
    assert first == await schedule(1)
    assert first != await schedule(2)


# ---------------------------------------------------------------------------------------------
# Real probes on loopback


@dataclass
class Backend:
    """A tiny HTTP server on 127.0.0.1 whose answer can be switched: a status code or "hang"."""

    port: int = 0
    mode: int | str = 200
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data)
            if self.mode == "hang":
                await trio.sleep_forever()
            if self.mode == "garbage":
                await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
                return
            await stream.send_all(
                f"HTTP/1.1 {self.mode} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    """A port nothing listens on: bind, read the port, close."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


HTTP = HealthCheck("http", "/health", interval_ms=50, timeout_ms=200)


async def test_http_probe_statuses(backend: Backend) -> None:
    svc = svc_with(HTTP, backend.port)
    with trio.fail_after(5):
        for mode, ok in [(200, True), (204, True), (302, True), (404, False), (500, False)]:
            backend.mode = mode
            result = await probe(svc, HTTP)
            assert (result.ok, result.reason) == (ok, f"http {mode}")
        backend.mode = "garbage"
        assert not (await probe(svc, HTTP)).ok
    head = backend.requests[0].split(b"\r\n")
    assert head[0] == b"GET /health HTTP/1.1"
    assert f"Host: 127.0.0.1:{backend.port}".encode() in head
    assert b"Connection: close" in head

    # A non-ASCII path (the schema allows it) is percent-encoded, not a crash.
    odd = HealthCheck("http", "/sant\u00e9?x=%41", interval_ms=50, timeout_ms=200)
    backend.mode = 200
    with trio.fail_after(5):
        assert (await probe(svc_with(odd, backend.port), odd)).ok
    assert backend.requests[-1].startswith(b"GET /sant%C3%A9?x=%41 HTTP/1.1\r\n")


async def test_http_probe_that_hangs_times_out(backend: Backend) -> None:
    backend.mode = "hang"
    check = HealthCheck("http", "/health", interval_ms=1000, timeout_ms=100)
    with trio.fail_after(5):
        start_s = trio.current_time()
        result = await probe(svc_with(check, backend.port), check)
        elapsed_s = trio.current_time() - start_s
    assert (result.ok, result.reason) == (False, "timeout after 100 ms")
    assert 0.1 <= elapsed_s < 2


async def test_tcp_probe_open_and_closed_port(backend: Backend) -> None:
    check = HealthCheck("tcp", interval_ms=50, timeout_ms=200)
    with trio.fail_after(5):
        assert (await probe(svc_with(check, backend.port), check)).ok
        refused = await probe(svc_with(check, closed_port()), check)
    assert not refused.ok
    assert refused.reason.startswith("connect")


async def test_checker_follows_a_backend_that_breaks_and_recovers(backend: Backend) -> None:
    check = HealthCheck(
        "http", "/health", interval_ms=50, timeout_ms=40, healthy_threshold=2, unhealthy_threshold=2
    )
    tcp_check = HealthCheck("tcp", interval_ms=50, timeout_ms=40, unhealthy_threshold=1)
    send, receive = trio.open_memory_channel[tuple[str, str]](100)
    checker = HealthChecker(
        [svc_with(check, backend.port, "api"), svc_with(tcp_check, closed_port(), "db")],
        lambda key, status: send.send_nowait((key, status)),
        random.Random(3),
    )
    api = f"api@127.0.0.1:{backend.port}"

    async def next_change_for(key: str) -> str:
        async for k, status in receive:
            if k == key:
                return status
        raise AssertionError("channel closed")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(checker.run)
            assert await next_change_for(api) == "passing"
            backend.mode = 500
            assert await next_change_for(api) == "critical"
            backend.mode = "hang"  # timeouts keep it failing: no flip back
            with trio.move_on_after(0.3):
                pytest.fail(f"flipped to {await next_change_for(api)} while timing out")
            backend.mode = 200
            assert await next_change_for(api) == "passing"
            nursery.cancel_scope.cancel()
    statuses = checker.statuses()
    assert statuses[api] == "passing"
    assert [s for k, s in statuses.items() if k.startswith("db@")] == ["critical"]
