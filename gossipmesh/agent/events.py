"""Member events: one membership change as listeners, subscribers and the log see it.

The agent's owner task turns each ``MemberChanged``/``MemberReaped`` effect of the SWIM core into
a ``MemberEvent`` and publishes it through ``MemberEvents``, which

- logs it (``warn`` for ``suspect`` and ``failed``, ``info`` otherwise);
- calls each listener synchronously, in the owner task: a listener must not block, and one that
  raises is logged and counted (``member_listener.errors``), never allowed to stop the owner;
- offers it to each subscriber's bounded channel: a subscriber that lags loses events, counted
  (``dropped.subscriber_lag``), so a slow reader never holds the owner up or grows memory.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio

from gossipmesh.agent.log import EventLog
from gossipmesh.ids import Address
from gossipmesh.swim.member import Member

SUBSCRIBER_BUFFER = 256


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One membership change as listeners, monitors and logs see it."""

    kind: str  # join | alive | suspect | failed | left | update | refute | reap
    name: str
    address: Address | None
    state: str | None
    previous: str | None
    incarnation: int | None
    meta: bytes
    ts_ms: int  # wall clock, milliseconds since the epoch (for humans and logs)
    # The member's node certificate (DER) its signed claims came with; b"" for a reap. Not in
    # the JSON: listeners (node records) verify with it.
    cert: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "ts_ms": self.ts_ms,
            "event": self.kind,
            "member": self.name,
            "address": str(self.address) if self.address else None,
            "state": self.state,
            "previous": self.previous,
            "incarnation": self.incarnation,
            "meta": base64.b64encode(self.meta).decode(),
        }


MemberListener = Callable[[MemberEvent], None]


def member_json(m: Member) -> dict[str, Any]:
    return {
        "name": m.name,
        "address": str(m.address),
        "state": m.state.value,
        "incarnation": m.incarnation,
        "meta": base64.b64encode(m.meta).decode(),
    }


def wall_ms() -> int:
    """Wall-clock milliseconds since the epoch, for event timestamps (never for timing)."""
    return int(time.time() * 1000)


class MemberEvents:
    """Publishes member events to the log, listeners and subscribers (see the module docstring)."""

    def __init__(self, log: EventLog, counters: Counter[str]) -> None:
        self._log = log
        self._counters = counters
        self._listeners: list[MemberListener] = []
        self._subscribers: set[trio.MemorySendChannel[MemberEvent]] = set()

    def add_listener(self, fn: MemberListener) -> None:
        self._listeners.append(fn)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, buffer: int = SUBSCRIBER_BUFFER
    ) -> AsyncIterator[trio.MemoryReceiveChannel[MemberEvent]]:
        send, recv = trio.open_memory_channel[MemberEvent](buffer)
        self._subscribers.add(send)
        try:
            yield recv
        finally:
            self._subscribers.discard(send)
            send.close()

    def publish(self, event: MemberEvent) -> None:
        level = "warn" if event.kind in ("failed", "suspect") else "info"
        self._log.log(
            level,
            f"member_{event.kind}",
            member=event.name,
            state=event.state,
            previous=event.previous,
            address=str(event.address) if event.address else None,
            incarnation=event.incarnation,
        )
        for fn in self._listeners:
            try:
                fn(event)
            except Exception as exc:
                self._counters["member_listener.errors"] += 1
                self._log.error("member_listener_error", error=repr(exc))
        for sub in list(self._subscribers):
            try:
                sub.send_nowait(event)
            except trio.WouldBlock:
                self._counters["dropped.subscriber_lag"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(sub)

    def close(self) -> None:
        """The agent stops: end every subscriber's stream."""
        for sub in list(self._subscribers):
            sub.close()
