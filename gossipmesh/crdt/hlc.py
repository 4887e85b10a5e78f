"""Hybrid logical clock with a drift bound.

Theory of operation
-------------------
A timestamp is ``(wall_ms, logical)``: the largest wall-clock millisecond this node has heard of,
plus a counter that orders events inside one millisecond. ``now(wall_ms)`` ticks for a local
event; ``observe(remote, wall_ms)`` folds in a timestamp heard from a peer so that anything we
write afterwards sorts after it (Kulkarni et al., "Logical Physical Clocks", 2014). Timestamps
stay close to real time, so "newest write wins" among concurrent writes means what an operator
expects.

The weakness of a plain HLC is that one node with a clock an hour fast drags every clock that
hears from it an hour fast, and its writes win every conflict for that hour. So ``observe``
refuses a remote timestamp more than ``max_drift_ms`` ahead of our wall clock: it returns
``DriftExceeded`` (the caller counts it and marks the write as suspect so that it does not win a
conflict) and leaves our clock where it was. The wall clock is passed in; this module never reads
one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_MAX_DRIFT_MS = 500
# The logical part stays below 2**32: past it the clock borrows a millisecond instead, so no
# timestamp heard from a peer can push ours out of the range every replica accepts.
MAX_LOGICAL = 2**32 - 1


class Timestamp(NamedTuple):
    """An HLC reading. A NamedTuple rather than a dataclass: it is compared and hashed on every
    merge, and tuple ordering is exactly the HLC order (wall time, then the logical counter)."""

    wall_ms: int
    logical: int


ZERO = Timestamp(0, 0)


@dataclass(frozen=True, slots=True)
class Observed:
    """The remote timestamp was within the drift bound and has been folded into the clock."""

    clock: Timestamp


@dataclass(frozen=True, slots=True)
class DriftExceeded:
    """The remote timestamp is ``ahead_ms`` past our wall clock, more than the bound allows. The
    clock did not move."""

    remote: Timestamp
    ahead_ms: int


class HybridClock:
    """One node's hybrid logical clock. Owned by a single task; not thread-safe by design."""

    __slots__ = ("_last", "max_drift_ms")

    def __init__(self, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS, last: Timestamp = ZERO) -> None:
        if max_drift_ms < 0:
            raise ValueError("max_drift_ms must be >= 0")
        self.max_drift_ms = max_drift_ms
        self._last = last

    @property
    def last(self) -> Timestamp:
        return self._last

    def now(self, wall_ms: int) -> Timestamp:
        """A timestamp for a local event, strictly greater than every one issued or observed."""
        last = self._last
        if wall_ms > last.wall_ms:
            ts = Timestamp(wall_ms, 0)
        elif last.logical >= MAX_LOGICAL:
            ts = Timestamp(last.wall_ms + 1, 0)
        else:
            # Our wall clock has not moved past what we have seen (same millisecond, or it stepped
            # back): keep the larger physical part and count.
            ts = Timestamp(last.wall_ms, last.logical + 1)
        self._last = ts
        return ts

    def is_too_far_ahead(self, remote: Timestamp, wall_ms: int) -> bool:
        return remote.wall_ms - wall_ms > self.max_drift_ms

    def observe(self, remote: Timestamp, wall_ms: int) -> Observed | DriftExceeded:
        """Fold a peer's timestamp in, unless it is further ahead of ``wall_ms`` than allowed."""
        ahead_ms = remote.wall_ms - wall_ms
        if ahead_ms > self.max_drift_ms:
            return DriftExceeded(remote, ahead_ms)
        if remote > self._last:
            self._last = remote
        return Observed(self._last)

    def restore(self, floor: Timestamp) -> None:
        """After a restart: never issue a timestamp at or below one already persisted."""
        if floor > self._last:
            self._last = floor
