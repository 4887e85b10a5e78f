"""Security events of the data plane (denied requests, refused peers) as log lines, bounded.

Every event is counted in ``/metrics`` where it happens; the log says who and why. A caller
that floods the inbound with denied requests must not flood the log: at most ``per_s`` lines a
second go out, and the next line that does says how many were left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gossipmesh.proxy.clock import NS_PER_S, Clock, MonotonicClock

log = logging.getLogger("gossipmesh.proxy")

Sink = Callable[[str, dict[str, Any]], None]  # (event, fields): the agent's structured log


def _stdlib(event: str, fields: dict[str, Any]) -> None:
    log.warning("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class Audit:
    __slots__ = ("sink", "per_s", "clock", "second", "sent", "suppressed")

    def __init__(
        self, sink: Sink | None = None, per_s: int = 10, clock: Clock | None = None
    ) -> None:
        self.sink = sink or _stdlib
        # The proxy's one clock (a test's mock clock moves the rate window).
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.per_s = per_s
        self.second = 0
        self.sent = 0
        self.suppressed = 0

    def __call__(self, event: str, **fields: Any) -> None:
        second = self.clock.now_ns() // NS_PER_S
        if second != self.second:
            self.second = second
            self.sent = 0
        if self.sent >= self.per_s:
            self.suppressed += 1
            return
        self.sent += 1
        if self.suppressed:
            fields["suppressed_before"] = self.suppressed
            self.suppressed = 0
        self.sink(event, fields)


__all__ = ["Audit", "Sink"]
