"""Packets and streams that no installed key opens: logged per peer address, and remembered.

A peer whose packets we cannot decrypt is either an attacker or, far more often, a member left
behind by a key rotation: it still seals with a key we removed, or we switched before it had the
new one. Either way an operator needs to know *which address*, without a log line per packet. So:

- every failure is already counted by reason (``dropped.decrypt``, ``dropped.version``,
  ``dropped.truncated``, ``dropped.stream_decrypt``) by the transport;
- the first failure from an address logs one ``decrypt_failed`` line with that address, and the
  next line for that address comes at the earliest ``LOG_INTERVAL_S`` later, carrying how many
  failures it stood for (``suppressed``);
- ``recent()`` says how many failures, from which addresses, happened in the last
  ``RECENT_WINDOW_S``: ``/v1/health`` reports the agent ``degraded`` while that is not zero.

Memory and log volume are bounded: at most ``MAX_ADDRESSES`` addresses are remembered (the oldest
is forgotten first) and at most ``MAX_LINES_PER_WINDOW`` lines are written per ``LOG_INTERVAL_S``
in all (then one ``decrypt_failed_log_limit`` line), so a flood of spoofed source addresses costs
a fixed amount. The clock is injected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gossipmesh.agent.log import EventLog
from gossipmesh.ids import Address

LOG_INTERVAL_S = 60.0
RECENT_WINDOW_S = 60.0
MAX_ADDRESSES = 1024
MAX_LINES_PER_WINDOW = 20


@dataclass(slots=True)
class _Peer:
    logged_s: float  # when this address last got a log line
    last_s: float  # its latest failure
    suppressed: int  # failures since its last log line
    window_start_s: float  # start of the current window of recent failures
    in_window: int  # failures since window_start_s


@dataclass(frozen=True, slots=True)
class RecentFailures:
    count: int
    addresses: tuple[str, ...]  # most recent first


class DecryptWatch:
    def __init__(self, log: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._clock = clock
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._lines_window_s = -LOG_INTERVAL_S
        self._lines = 0

    def record(self, address: Address, transport: str, reason: str) -> None:
        """One message from ``address`` (``transport`` "udp" or "tcp") did not open."""
        now_s = self._clock()
        # A stream's source port is ephemeral: one peer opens many, so key TCP by host.
        key = str(address) if transport == "udp" else f"{address.host} (tcp)"
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) >= MAX_ADDRESSES:
                self._peers.popitem(last=False)
            peer = _Peer(now_s - LOG_INTERVAL_S, now_s, 0, now_s, 0)
            self._peers[key] = peer
        self._peers.move_to_end(key)
        peer.last_s = now_s
        if now_s - peer.window_start_s >= RECENT_WINDOW_S:
            peer.window_start_s, peer.in_window = now_s, 0
        peer.in_window += 1
        peer.suppressed += 1
        if now_s - peer.logged_s >= LOG_INTERVAL_S and self._line_budget(now_s):
            self._log.warn("decrypt_failed", address=key, reason=reason,
                           suppressed=peer.suppressed - 1,
                           detail="no installed key opens its messages: another gossip key or "
                           "cluster name, a member left behind by a key rotation, or not "
                           "one of ours")  # fmt: skip
            peer.logged_s, peer.suppressed = now_s, 0

    def _line_budget(self, now_s: float) -> bool:
        if now_s - self._lines_window_s >= LOG_INTERVAL_S:
            self._lines_window_s, self._lines = now_s, 0
        self._lines += 1
        if self._lines == MAX_LINES_PER_WINDOW + 1:
            self._log.warn("decrypt_failed_log_limit", lines=MAX_LINES_PER_WINDOW,
                           detail=f"more addresses failed to decrypt; next lines within "
                           f"{LOG_INTERVAL_S:g} s (the dropped.* counters count them all)")  # fmt: skip
        return self._lines <= MAX_LINES_PER_WINDOW

    def recent(self) -> RecentFailures:
        """Failures in the last ``RECENT_WINDOW_S`` (approximately: counted per address window)."""
        now_s = self._clock()
        count, addresses = 0, []
        for key, peer in reversed(self._peers.items()):
            if now_s - peer.last_s >= RECENT_WINDOW_S:
                break  # ordered by latest failure: the rest are older still
            count += peer.in_window
            addresses.append(key)
        return RecentFailures(count, tuple(addresses))


__all__ = [
    "LOG_INTERVAL_S",
    "MAX_ADDRESSES",
    "MAX_LINES_PER_WINDOW",
    "RECENT_WINDOW_S",
    "DecryptWatch",
    "RecentFailures",
]
