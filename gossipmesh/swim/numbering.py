"""Process-wide numbers for member names and snapshots, so member tables can be arrays of ints.

Theory of operation
-------------------
A member table (``membership.py``) stores, per member it knows, which snapshot it holds and
where the member stands in its insertion and probe orders. Keeping those as Python objects costs
a dict entry per (table, member) pair (~26 bytes); a process that runs many cores (the simulator
runs 10,000) pays that 10^8 times. Instead a ``Numbering`` gives each name, and each snapshot,
one small int for the whole process, and a table keeps only 2- or 4-byte ints in ``array``s.

A number stays taken while some table holds it: ``acquire`` counts a holder (numbering the
item if it is new), ``release`` uncounts one and frees the number, and forgets the item, when
the last holder lets go; freed numbers are handed out again first, so numbers stay below the
count of items held at once. A table releases everything it holds when it is collected. Items
are keyed by value (names) or by identity (snapshots, which ``member.py`` interns: equal
snapshots are the same object).

The counts are plain ints, not locked: every core of a process must be driven from one thread
(the agent's trio task and the simulator's loop are; a core is sans-IO and never spawns one).

The numbers are storage only: nothing iterates in number order and no decision reads one, so
which number an item gets (which depends on every other table in the process) never changes what
a core does. Number 0 is never handed out: tables use it for "none".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from gossipmesh.swim.member import Member

T = TypeVar("T")


class Numbering(Generic[T]):
    """Numbers for items, counted by holder; see the module docstring."""

    __slots__ = ("_free", "_key", "_keys", "items", "numbers", "refs")

    def __init__(self, key: Callable[[T], Hashable]) -> None:
        self._key = key
        self.numbers: dict[Hashable, int] = {}  # key(item) -> its number
        self.items: list[T | None] = [None]  # number -> item (None: free; 0 is never used)
        self.refs: list[int] = [0]  # number -> how many holders
        self._keys: list[Hashable] = [None]  # number -> key(item)
        self._free: list[int] = []

    def __len__(self) -> int:
        """One past the highest number ever handed out (a size for arrays indexed by number)."""
        return len(self.items)

    def acquire(self, item: T) -> int:
        """``item``'s number, counting one more holder of it."""
        k = self._key(item)
        n = self.numbers.get(k)
        if n is None:
            if self._free:
                n = self._free.pop()
                self.items[n] = item
                self._keys[n] = k
            else:
                n = len(self.items)
                self.items.append(item)
                self.refs.append(0)
                self._keys.append(k)
            self.numbers[k] = n
        self.refs[n] += 1
        return n

    def release(self, n: int) -> None:
        """One holder of number ``n`` let go; the last one frees it."""
        refs = self.refs
        refs[n] -= 1
        if refs[n] == 0:
            del self.numbers[self._keys[n]]
            self.items[n] = None
            self._keys[n] = None
            self._free.append(n)

    def lookup(self, item: T) -> int:
        """``item``'s number if some holder has it, else 0 (counts nothing)."""
        return self.numbers.get(self._key(item), 0)


#: Every member name any table in this process holds.
NAMES: Numbering[str] = Numbering(str)
#: Every snapshot any table in this process holds, by identity (snapshots are interned).
SNAPSHOTS: Numbering[Member] = Numbering(id)
