"""A heap of pending core timers. The owner task sleeps until the earliest one, fires what is due.

The core never cancels a timer (each carries the token and incarnation it was set for and is
re-checked on firing), so the heap only ever grows by SetTimer and shrinks by firing. A sequence
number keeps equal deadlines in the order they were set and avoids comparing timer objects.
"""

from __future__ import annotations

import heapq
import itertools

from gossipmesh.ids import Millis

# The core arms a few timers per probe round and per suspect; a bound far above that catches a
# runaway loop without limiting a real cluster.
MAX_PENDING_TIMERS = 100_000


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[Millis, int, object]] = []
        self._seq = itertools.count()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, timer: object, at_ms: Millis) -> None:
        if len(self._heap) >= MAX_PENDING_TIMERS:
            self.dropped += 1
            return
        heapq.heappush(self._heap, (at_ms, next(self._seq), timer))

    def next_deadline(self) -> Millis | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: Millis) -> list[object]:
        due = []
        while self._heap and self._heap[0][0] <= now_ms:
            due.append(heapq.heappop(self._heap)[2])
        return due
