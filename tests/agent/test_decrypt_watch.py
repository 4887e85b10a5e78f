"""DecryptWatch: one log line per address per minute, recent failures for /v1/health, bounded."""

from __future__ import annotations

import io
import json

from gossipmesh.agent.decrypt_watch import (
    LOG_INTERVAL_S,
    MAX_ADDRESSES,
    MAX_LINES_PER_WINDOW,
    RECENT_WINDOW_S,
    DecryptWatch,
)
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.status import degraded_reasons
from gossipmesh.ids import Address


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def watch() -> tuple[DecryptWatch, Clock, io.StringIO]:
    out, clock = io.StringIO(), Clock()
    return DecryptWatch(EventLog(stream=out), clock), clock, out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_line_per_address_per_minute_with_the_address() -> None:
    w, clock, out = watch()
    a, b = Address("10.0.0.1", 7946), Address("10.0.0.2", 7946)
    for _ in range(50):
        w.record(a, "udp", "decrypt")
        clock.now_s += 0.5  # 25 s of failures
    w.record(b, "udp", "decrypt")
    assert [(e["address"], e["suppressed"]) for e in lines(out)] == [
        ("10.0.0.1:7946", 0),
        ("10.0.0.2:7946", 0),
    ]
    clock.now_s += LOG_INTERVAL_S
    w.record(a, "udp", "decrypt")
    last = lines(out)[-1]
    assert last["address"] == "10.0.0.1:7946" and last["suppressed"] == 49
    assert last["event"] == "decrypt_failed" and last["level"] == "warn"
    # TCP streams come from ephemeral ports: one peer is one host.
    w.record(Address("10.0.0.3", 40001), "tcp", "decrypt")
    w.record(Address("10.0.0.3", 40002), "tcp", "decrypt")
    assert [e["address"] for e in lines(out)].count("10.0.0.3 (tcp)") == 1


def test_recent_failures_make_the_agent_degraded_until_they_stop() -> None:
    w, clock, _ = watch()
    assert degraded_reasons([], w.recent()) == []
    for _ in range(3):
        w.record(Address("10.0.0.1", 7946), "udp", "decrypt")
    recent = w.recent()
    assert recent.count == 3 and recent.addresses == ("10.0.0.1:7946",)
    (reason,) = degraded_reasons([], recent)
    assert "3 messages failed to decrypt" in reason and "10.0.0.1:7946" in reason
    clock.now_s += RECENT_WINDOW_S
    assert w.recent().count == 0 and degraded_reasons([], w.recent()) == []


def test_a_flood_of_source_addresses_is_bounded_in_memory_and_log_lines() -> None:
    w, clock, out = watch()
    for i in range(MAX_ADDRESSES + 500):
        w.record(Address(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 7946), "udp", "decrypt")
    assert len(w.recent().addresses) == MAX_ADDRESSES
    events = [e["event"] for e in lines(out)]
    assert events == ["decrypt_failed"] * MAX_LINES_PER_WINDOW + ["decrypt_failed_log_limit"]
    # A minute later an address that was not logged gets its line, with what it stood for.
    clock.now_s += LOG_INTERVAL_S
    w.record(Address("10.0.4.0", 7946), "udp", "decrypt")
    last = lines(out)[-1]
    assert last["address"] == "10.0.4.0:7946" and last["suppressed"] == 1
