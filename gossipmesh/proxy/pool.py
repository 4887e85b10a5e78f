"""Upstream keep-alive pool: the decisions, without the sockets (httpcore's shape).

Theory of operation
-------------------
A pool key is where a connection goes: the peer agent's inbound listener, or a local instance.
Only *idle* connections live here; a connection in use belongs to the request using it and comes
back through ``checkin`` when the response ended cleanly with keep-alive on both sides.

Every method is a pure decision over the idle lists plus ``now_ns`` (clock.py) and returns the connections
the caller must close, so the I/O shell closes exactly what the decision evicted and nothing else:

- ``checkout``: most-recently-used first (LIFO). The warmest connection is the one least likely to
  have been closed by the peer's own idle timer, and LIFO lets the cold tail expire. Expired ones
  met on the way are handed back for closing.
- ``checkin``: keep it, unless the key already holds ``max_idle_per_key``; then the oldest goes.
- ``sweep``: everything idle past its expiry (run from a periodic timer so idle sockets to
  endpoints that stopped receiving traffic are not kept forever).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C")


class PoolDecisions(Generic[C]):
    __slots__ = ("max_idle_per_key", "_idle")

    def __init__(self, max_idle_per_key: int = 64) -> None:
        self.max_idle_per_key = max_idle_per_key
        # key -> deque of (connection, expires_at_ns); right end is the most recently used.
        self._idle: dict[Hashable, deque[tuple[C, int]]] = {}

    def checkout(self, key: Hashable, now_ns: int) -> tuple[C | None, list[C]]:
        q = self._idle.get(key)
        if not q:
            return None, []
        close: list[C] = []
        while q:
            conn, expires = q.pop()
            if expires > now_ns:
                return conn, close
            close.append(conn)
        return None, close

    def checkin(self, key: Hashable, conn: C, now_ns: int, idle_ns: int) -> list[C]:
        q = self._idle.get(key)
        if q is None:
            q = self._idle[key] = deque()
        q.append((conn, now_ns + idle_ns))
        close: list[C] = []
        while len(q) > self.max_idle_per_key:
            close.append(q.popleft()[0])
        return close

    def sweep(self, now_ns: int) -> list[C]:
        close: list[C] = []
        for key in list(self._idle):
            q = self._idle[key]
            keep = deque(item for item in q if item[1] > now_ns)
            close.extend(conn for conn, exp in q if exp <= now_ns)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return close

    def discard(self, key: Hashable, conn: C) -> bool:
        """Forget an idle connection the peer closed; True if it was pooled."""
        q = self._idle.get(key)
        if not q:
            return False
        for item in q:
            if item[0] is conn:
                q.remove(item)
                return True
        return False

    def drain(self) -> list[C]:
        close = [conn for q in self._idle.values() for conn, _ in q]
        self._idle.clear()
        return close

    def idle_count(self, key: Hashable | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(q) for q in self._idle.values())
