"""The member table and the shuffled round-robin probe order.

Theory of operation
-------------------
The table holds, per member, a frozen ``Member`` snapshot that is replaced (not mutated) on every
change, so handing one to a caller is free and safe. When a member went DEAD or LEFT is the one
piece of local bookkeeping kept beside them (``gone_since``): it drives gossip-to-the-dead,
reconnection and reaping, and keeping it out of the snapshot lets every node that agrees about a
member share one snapshot (see ``member.py``).

Storage: names and snapshots are numbered once per process (``numbering.py``), and the table is
three arrays of small ints, not a dict: ``_sid[g]`` is the number of the snapshot held for the
member named ``g`` (0: none), ``_ins`` lists the held names' numbers in the order a dict keyed by
name would iterate them (insertion order; a re-added name goes last; the local member first),
and ``_order`` is the probe order below. Two bytes a number while numbers fit (``H``), four
after (``i``, widened in place). A process running 10,000 cores (the simulator) then pays ~6
bytes per (table, member) pair instead of ~34 for a dict entry and a list slot, and the one core
of an agent pays the same small amount. The numbers are storage only: every order a caller can
see, and every random draw, is what a dict keyed by name would give.

Probing walks a shuffled list of names round-robin (SWIM §4.3): every member is probed once per
round, which bounds the worst-case detection time, while the shuffle keeps the order
unpredictable. A new member is appended and swapped with a random position, so it is probed
within the current round at a random time rather than always last (memberlist does the same).
At the end of a round the list is rebuilt from the table (dropping reaped names) and reshuffled;
that O(n) work happens once per n probes. Dead and left members stay in the list until reaped,
skipped by the prober but still reachable by ``random_members`` for gossip-to-the-dead. A reaped
name stays in the list until the rebuild too; ``_stale`` remembers those few names so a member
that returns before then is not listed twice (and the table keeps their numbers until then).

``copy_to`` fills fresh tables with all of one table's members at once, as ``put`` of each in
turn would (the same orders and draws), counting holders once for all of them (the simulator
seeding 10,000 tables: ``push_pull.StateSync.answer_joins``).

``random_members`` samples random positions of that list (O(k) for k targets when most members
pass the filter), falling back to one linear sweep from a random offset when most do not.

Counts needed per packet (live members, for the retransmit limit and suspicion bounds) are kept
up to date on each change instead of being recounted. Iteration orders are insertion orders
(never ``set`` orders, which vary with hash seeds) so a seeded run is reproducible.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterable, Sequence

from gossipmesh.errors import UsageError
from gossipmesh.ids import Millis
from gossipmesh.swim.member import Member, MemberState
from gossipmesh.swim.numbering import NAMES, SNAPSHOTS

_ALIVE = MemberState.ALIVE
_SUSPECT = MemberState.SUSPECT
_LIVE = (_ALIVE, _SUSPECT)
_GONE = (MemberState.DEAD, MemberState.LEFT)

# The registries' own containers (the same objects for the life of the process), read directly
# on the hot paths: ``put`` runs once per member and table while a cluster forms.
_NAME_NO = NAMES.numbers  # name -> number
_SNAPSHOT = SNAPSHOTS.items  # number -> snapshot; [0] is None, the "no snapshot" of ``_sid``
_SNAPSHOT_NO = SNAPSHOTS.numbers  # id(snapshot) -> number
_SNAPSHOT_REFS = SNAPSHOTS.refs
_NAME_REFS = NAMES.refs
_NARROW, _WIDE = "H", "i"  # array typecodes: numbers up to _NARROW_MAX, then any
_NARROW_MAX = 0xFFFF


class MemberTable:
    __slots__ = (
        "_gone",
        "_ins",
        "_order",
        "_pos",
        "_rng",
        "_sid",
        "_stale",
        "live_count",
        "local_name",
    )

    def __init__(self, local: Member, rng: random.Random) -> None:
        self.local_name = local.name
        self._rng = rng
        self._sid = array(_NARROW)  # name number -> snapshot number (0: not held)
        self._ins = array(_NARROW)  # held name numbers in insertion order, the local one first
        self._order = array(_NARROW)  # every other member's name number, shuffled
        # Name numbers reaped since the last rebuild, still in _order; never iterated.
        self._stale: set[int] = set()
        self._pos = 0
        # DEAD/LEFT name -> when it became so; insertion-ordered for determinism.
        self._gone: dict[str, Millis] = {}
        self.live_count = 1 if local.state in _LIVE else 0
        g = NAMES.acquire(local.name)
        self._hold(g, SNAPSHOTS.acquire(local))
        if g > _NARROW_MAX:
            self._widen()
        self._ins.append(g)

    def __del__(self) -> None:
        # Give this table's numbers back (``numbering.py``); at interpreter exit the module's
        # globals may be gone already, and then nothing needs them.
        try:
            sid = self._sid
            for g in self._ins:
                SNAPSHOTS.release(sid[g])
                NAMES.release(g)
            for g in self._stale:
                NAMES.release(g)
        except (AttributeError, TypeError):
            pass

    def __len__(self) -> int:
        return len(self._ins)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def get(self, name: str) -> Member | None:
        g = _NAME_NO.get(name)
        if g is None:
            return None
        sid = self._sid
        return _SNAPSHOT[sid[g]] if g < len(sid) else None

    def values(self) -> Iterable[Member]:
        sid = self._sid
        return [_SNAPSHOT[sid[g]] for g in self._ins]  # type: ignore[misc]

    def gone_names(self) -> list[str]:
        return list(self._gone)

    def gone_since(self, name: str) -> Millis | None:
        """When a DEAD or LEFT member became so (this node's clock); None for any other."""
        return self._gone.get(name)

    def _hold(self, g: int, s: int) -> None:
        """Hold snapshot number ``s`` for name number ``g`` (growing or widening ``_sid``)."""
        sid = self._sid
        if g >= len(sid):
            # Room for every name the process has numbered: one growth per table, not one a
            # member while a table fills.
            sid.frombytes(bytes((max(len(NAMES), g + 1) - len(sid)) * sid.itemsize))
        if s > _NARROW_MAX and sid.typecode == _NARROW:
            sid = self._sid = array(_WIDE, sid)
        sid[g] = s

    def put(self, member: Member, now_ms: Millis) -> Member | None:
        """Insert or replace a member as of ``now_ms``; return the previous snapshot."""
        name = member.name
        g = _NAME_NO.get(name)
        sid = self._sid
        old = sid[g] if g is not None and g < len(sid) else 0
        s = _SNAPSHOT_NO.get(id(member))
        if s is None:
            s = SNAPSHOTS.acquire(member)
        else:
            _SNAPSHOT_REFS[s] += 1  # SNAPSHOTS.acquire's work, inlined
        st = member.state
        is_live = st is _ALIVE or st is _SUSPECT
        if not old:
            # A newcomer (the bulk of a join: keep this path short).
            if g is not None and g in self._stale:
                # Reaped and back before the rebuild: still listed, its number still held.
                self._stale.discard(g)
                listed = True
            else:
                if g is None:
                    g = NAMES.acquire(name)
                else:
                    _NAME_REFS[g] += 1  # NAMES.acquire's work, inlined
                listed = name == self.local_name
            if g < len(sid) and s <= _NARROW_MAX:
                sid[g] = s
            else:
                self._hold(g, s)
            if g > _NARROW_MAX and self._ins.typecode == _NARROW:
                self._widen()
            self._ins.append(g)
            if is_live:
                self.live_count += 1
            else:
                self._gone[name] = now_ms
            if not listed:
                # Listed in the probe order, swapped into a random slot so newcomers are not
                # always probed last. (random() rather than randrange(): 30x cheaper, uniform
                # to 2^-53, and a join inserts n of these.)
                order = self._order
                order.append(g)
                j = int(self._rng.random() * len(order))
                order[-1], order[j] = order[j], order[-1]
            return None
        assert g is not None
        if s > _NARROW_MAX and sid.typecode == _NARROW:
            self._hold(g, s)  # widens _sid first
        else:
            sid[g] = s
        prev: Member = _SNAPSHOT[old]  # type: ignore[assignment]
        SNAPSHOTS.release(old)
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

    def copy_to(self, fresh: Sequence[MemberTable]) -> list[int]:
        """Put every member of this table into each table of ``fresh``, exactly as ``put`` of
        each in our insertion order would (a table's own member, if we hold it, is skipped:
        it keeps its own snapshot); return how many each table took.

        The outcome, orders and random draws included, is ``put``'s: a fresh table's insertion
        order becomes its local name, then ours without it; its probe order is the same
        inside-out shuffle ``put`` builds a newcomer at a time, one ``random()`` per member
        from that table's own generator, in our order. What this saves is ``put``'s per-member
        bookkeeping, done here once for all the tables (the process-wide counts of holders:
        ``numbering.py``). Every table of ``fresh`` must hold only its local member and every
        member here must be live (no DEAD or LEFT bookkeeping to copy): else a ``UsageError``,
        raised before anything changed.
        """
        if self.live_count != len(self._ins):
            raise UsageError("copy_to copies live members only")
        for t in fresh:
            if len(t._ins) != 1 or t._order or t._stale or t._gone:
                raise UsageError("copy_to needs fresh tables (holding only their local member)")
        ins = self._ins
        sid = self._sid
        wide = ins.typecode == _WIDE
        listed = ins.tolist()
        skipped: list[int] = []  # the name numbers of fresh tables' own members we hold
        taken: list[int] = []
        for t in fresh:
            me = t._ins[0]
            own = t._sid[me]
            order = listed[:]  # our names as ints shared by every table: no new int objects
            try:
                k = ins.index(me)
            except ValueError:
                rest = ins[:]
            else:
                rest = ins[:k] + ins[k + 1 :]
                del order[k]
                skipped.append(me)
            # A new array of exactly the size needed (``+=`` would leave 6 % slack: 3 MB at
            # 5,000 hosts).
            if wide or t._ins.typecode == _WIDE:
                t._ins = array(_WIDE, t._ins) + array(_WIDE, rest)
            else:
                t._ins = t._ins + rest
            copied = array(sid.typecode, sid)  # the snapshot numbers: ours, but for its own
            if me >= len(copied):
                copied.frombytes(bytes((me + 1 - len(copied)) * copied.itemsize))
            t._sid = copied
            t._hold(me, own)
            # ``put``'s probe order, appended and swapped a newcomer at a time.
            draw = t._rng.random
            for i in range(len(order)):
                j = int(draw() * (i + 1))
                order[i], order[j] = order[j], order[i]
            t._order = array(t._ins.typecode, order)
            t.live_count += len(rest)
            taken.append(len(rest))
        # Every fresh table now holds each of our names and snapshots but its own.
        copies = len(fresh)
        if copies:
            for g in ins:
                _NAME_REFS[g] += copies
                _SNAPSHOT_REFS[sid[g]] += copies
            for g in skipped:
                _NAME_REFS[g] -= 1
                _SNAPSHOT_REFS[sid[g]] -= 1
        return taken

    def remove(self, name: str) -> Member | None:
        """Forget a member (reaping). Its stale name in the probe list is skipped until rebuilt."""
        g = _NAME_NO.get(name)
        sid = self._sid
        if g is None or g >= len(sid) or not sid[g]:
            return None
        s = sid[g]
        prev: Member = _SNAPSHOT[s]  # type: ignore[assignment]
        sid[g] = 0
        SNAPSHOTS.release(s)
        ins = self._ins
        del ins[ins.index(g)]
        if prev.state in _LIVE:
            self.live_count -= 1
        self._gone.pop(name, None)
        if name != self.local_name:
            self._stale.add(g)  # still in _order: the number stays held until the rebuild
        else:
            NAMES.release(g)
        return prev

    def _widen(self) -> None:
        self._ins = array(_WIDE, self._ins)
        self._order = array(_WIDE, self._order)

    def _rebuild_order(self) -> None:
        ins = self._ins
        local = _NAME_NO.get(self.local_name, 0)  # 0: no name (the local one was removed)
        if ins and ins[0] == local:
            order = ins[1:]
        else:
            order = array(ins.typecode, [g for g in ins if g != local])
        self._rng.shuffle(order)
        self._order = order
        for g in self._stale:
            NAMES.release(g)
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
            g = self._order[self._pos]
            self._pos += 1
            checked += 1
            m = _SNAPSHOT[self._sid[g]]
            if m is not None and m.state in _LIVE:
                return m
            if checked > 2 * len(self._ins) + 2:
                return None

    def random_members(self, k: int, accept: Callable[[Member], bool]) -> list[Member]:
        """Up to ``k`` distinct random members (never the local one) for which ``accept`` holds."""
        order = self._order
        size = len(order)
        if k <= 0 or size == 0:
            return []
        sid = self._sid
        chosen: list[Member] = []
        seen: set[int] = set()
        rng = self._rng
        # Random probing first: cheap when most members qualify (the common case).
        for _ in range(4 * k + 8):
            g = order[int(rng.random() * size)]
            if g in seen:
                continue
            seen.add(g)
            m = _SNAPSHOT[sid[g]]
            if m is not None and accept(m):
                chosen.append(m)
                if len(chosen) >= k:
                    return chosen
        # Few qualify: sweep once from a random offset so we still find them if they exist.
        start = int(rng.random() * size)
        for i in range(size):
            g = order[(start + i) % size]
            if g in seen:
                continue
            seen.add(g)
            m = _SNAPSHOT[sid[g]]
            if m is not None and accept(m):
                chosen.append(m)
                if len(chosen) >= k:
                    break
        return chosen
