"""The dict-based member table the array-based one replaced (issue 19), kept as the reference
model for ``test_swim_member_table.py``: the arrays are a storage change only, so every answer,
every order and every random draw must be this table's.

This is the code of ``gossipmesh/swim/membership.py`` before that change, verbatim but for this
docstring and the class name.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from gossipmesh.ids import Millis
from gossipmesh.swim.member import Member, MemberState

_ALIVE = MemberState.ALIVE
_SUSPECT = MemberState.SUSPECT
_LIVE = (_ALIVE, _SUSPECT)
_GONE = (MemberState.DEAD, MemberState.LEFT)


class DictMemberTable:
    __slots__ = (
        "_gone",
        "_members",
        "_order",
        "_pos",
        "_rng",
        "_stale",
        "live_count",
        "local_name",
    )

    def __init__(self, local: Member, rng: random.Random) -> None:
        self.local_name = local.name
        self._rng = rng
        self._members: dict[str, Member] = {local.name: local}
        self._order: list[str] = []  # every other member's name, shuffled
        self._stale: set[str] = (
            set()
        )  # reaped since the last rebuild, still in _order; never iterated
        self._pos = 0
        # DEAD/LEFT name -> when it became so; insertion-ordered for determinism.
        self._gone: dict[str, Millis] = {}
        self.live_count = 1 if local.state in _LIVE else 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def get(self, name: str) -> Member | None:
        return self._members.get(name)

    def values(self) -> Iterable[Member]:
        return self._members.values()

    def gone_names(self) -> list[str]:
        return list(self._gone)

    def gone_since(self, name: str) -> Millis | None:
        """When a DEAD or LEFT member became so (this node's clock); None for any other."""
        return self._gone.get(name)

    def put(self, member: Member, now_ms: Millis) -> Member | None:
        """Insert or replace a member as of ``now_ms``; return the previous snapshot."""
        name = member.name
        members = self._members
        prev = members.get(name)
        members[name] = member
        st = member.state
        is_live = st is _ALIVE or st is _SUSPECT
        if prev is None:
            # A newcomer (the bulk of a join: keep this path short).
            if is_live:
                self.live_count += 1
            else:
                self._gone[name] = now_ms
            if name != self.local_name:
                if name in self._stale:
                    self._stale.discard(name)  # reaped and back before the rebuild: still listed
                else:
                    self._insert_in_order(name)
            return None
        pst = prev.state
        was_live = pst is _ALIVE or pst is _SUSPECT
        if was_live != is_live:
            self.live_count += 1 if is_live else -1
        if is_live:
            if not was_live:
                del self._gone[name]
        else:
            self._gone[name] = now_ms
        return prev

    def remove(self, name: str) -> Member | None:
        """Forget a member (reaping). Its stale name in the probe list is skipped until rebuilt."""
        prev = self._members.pop(name, None)
        if prev is not None:
            if prev.state in _LIVE:
                self.live_count -= 1
            self._gone.pop(name, None)
            if name != self.local_name:
                self._stale.add(name)
        return prev

    def _insert_in_order(self, name: str) -> None:
        order = self._order
        order.append(name)
        # Swap into a random slot so newcomers are not always probed last. (random() rather than
        # randrange(): 30x cheaper, uniform to 2^-53, and a join inserts n of these.)
        j = int(self._rng.random() * len(order))
        order[-1], order[j] = order[j], order[-1]

    def _rebuild_order(self) -> None:
        order = [n for n in self._members if n != self.local_name]
        self._rng.shuffle(order)
        self._order = order
        self._stale.clear()
        self._pos = 0

    def next_probe_target(self) -> Member | None:
        """The next ALIVE or SUSPECT member in round-robin order, or None if there is none."""
        rebuilt = False
        checked = 0
        while True:
            if self._pos >= len(self._order):
                if rebuilt:
                    return None
                self._rebuild_order()
                rebuilt = True
                if not self._order:
                    return None
            name = self._order[self._pos]
            self._pos += 1
            checked += 1
            m = self._members.get(name)
            if m is not None and m.state in _LIVE:
                return m
            if checked > 2 * len(self._members) + 2:
                return None

    def random_members(self, k: int, accept: Callable[[Member], bool]) -> list[Member]:
        """Up to ``k`` distinct random members (never the local one) for which ``accept`` holds."""
        order = self._order
        size = len(order)
        if k <= 0 or size == 0:
            return []
        members = self._members
        chosen: list[Member] = []
        seen: set[str] = set()
        rng = self._rng
        # Random probing first: cheap when most members qualify (the common case).
        for _ in range(4 * k + 8):
            name = order[int(rng.random() * size)]
            if name in seen:
                continue
            seen.add(name)
            m = members.get(name)
            if m is not None and accept(m):
                chosen.append(m)
                if len(chosen) >= k:
                    return chosen
        # Few qualify: sweep once from a random offset so we still find them if they exist.
        start = int(rng.random() * size)
        for i in range(size):
            name = order[(start + i) % size]
            if name in seen:
                continue
            seen.add(name)
            m = members.get(name)
            if m is not None and accept(m):
                chosen.append(m)
                if len(chosen) >= k:
                    break
        return chosen
