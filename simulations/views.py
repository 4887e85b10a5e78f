"""The observer ledger: what every live observer believes of every subject, kept as it changes.

Theory of operation
-------------------
The cores say what they believe only through their effects: ``MemberChanged`` (a member's state
or incarnation moved) and ``MemberReaped`` (it was forgotten). The ``Cluster`` hands both to an
``ObserverLedger``, which keeps, for every live observer, the state and incarnation it last heard
of each subject, one int ``incarnation << 2 | code`` per pair (``V_ALIVE`` .. ``V_LEFT``, or
``NO_VIEW`` when the observer holds no entry). Alongside, per subject and state, the number of
live observers that see it in that state (``n_view``), so "is every view whole?" is a sum over
subjects (``view_errors``), not a scan of N^2 pairs.

The same events, read against the hosts' ground truth (``hosts.py``: UP, DOWN, LEFT), feed the
tallies the checkers and reports read: per-subject detection times after a crash
(``SubjectRecord``), false DEAD / SUSPECT claims about live hosts (unless they are echoes of an
earlier life, within the stale window after a restart), incarnations going backwards, and what
no honest run can produce, so only an accepted forgery can (``Ledger.forged``,
``Ledger.strangers``).

An observer's views are created when it boots and dropped when it crashes or starts to leave;
from then on its last words do not count. The ledger never changes a host, only reads them.
"""

from __future__ import annotations

from array import array
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field

from gossipmesh.swim.member import Member, MemberState
from simulations.engine import Engine
from simulations.hosts import DOWN, NOT_STARTED, UP, SimNode

# Ledger state codes; the ledger stores ``incarnation << 2 | code`` in one int.
V_ALIVE = 0
V_SUSPECT = 1
V_DEAD = 2
V_LEFT = 3
NO_VIEW = -1  # the observer holds no entry for the subject
STATE_CODE = {
    MemberState.ALIVE: V_ALIVE,
    MemberState.SUSPECT: V_SUSPECT,
    MemberState.DEAD: V_DEAD,
    MemberState.LEFT: V_LEFT,
}


@dataclass(slots=True)
class SubjectRecord:
    """What happened to one subject: truth changes and what the observers made of them."""

    crashed_ms: int | None = None
    first_suspect_ms: int | None = None  # first SUSPECT (or DEAD) by any live observer
    first_dead_ms: int | None = None  # first DEAD by any live observer
    all_dead_ms: int | None = None  # no live observer sees it alive or suspect any more
    left_ms: int | None = None
    stale_until_ms: int = 0  # DEAD claims before this are echoes of an earlier life


@dataclass(slots=True)
class Ledger:
    false_dead: list[tuple[int, int, int]] = field(default_factory=list)  # (t, observer, subject)
    false_suspect: int = 0
    incarnation_regressions: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    changes: int = 0
    reaps: int = 0
    # Things no honest run can produce, so only an accepted forgery can (signed membership):
    # (t, observer, subject, what) for an incarnation above what the subject itself ever
    # signed + 1, an address that is not the subject's, or a leave it never announced ...
    forged: list[tuple[int, int, int, str]] = field(default_factory=list)
    # ... and (t, observer, name) for a member named by no host at all.
    strangers: list[tuple[int, int, str]] = field(default_factory=list)


class ObserverLedger:
    """Every live observer's view of every subject, the per-subject counts, and the tallies.

    ``nodes`` and ``by_name`` are the cluster's own list and index (shared, not copied): a host
    the cluster adds is one ``add_subject`` call away from being tracked here.
    """

    def __init__(self, engine: Engine, nodes: list[SimNode], by_name: dict[str, int]) -> None:
        self.engine = engine
        self.nodes = nodes
        self.by_name = by_name
        # views[o][s] is incarnation << 2 | state as live observer o last heard of subject s, or
        # NO_VIEW. A flat array of C shorts, not a dict or list: at 10,000 hosts there are 10^8
        # of these, and a short costs 2 bytes (a list slot 8, a dict entry ~100). An observer
        # that hears of an incarnation past 13 bits gets an array of C ints instead, and one
        # past 29 bits (only a forgery could claim one) a list (``_store``): the values, and
        # so every check that reads them, are the same whatever holds them.
        self.views: list[MutableSequence[int] | None] = []
        self.n_view: list[list[int]] = [[], [], [], []]  # per state code, per subject
        self.subjects: list[SubjectRecord] = []
        self.signed_max: list[int] = []  # per host: the highest incarnation it ever claimed
        self.ledger = Ledger()

    # -- hosts come, boot and go -------------------------------------------------------------

    def add_subject(self) -> None:
        """Track one more host (the cluster has just appended it to ``nodes``)."""
        self.views.append(None)
        for counts in self.n_view:
            counts.append(0)
        self.subjects.append(SubjectRecord())
        self.signed_max.append(0)

    def host_booted(self, idx: int, stale_until_ms: int | None) -> None:
        """Host ``idx`` (re)started: it observes from scratch. On a restart, DEAD claims about
        it before ``stale_until_ms`` are rumours of its previous life, not false positives."""
        self.views[idx] = array("h", [NO_VIEW]) * len(self.nodes)
        rec = self.subjects[idx]
        rec.crashed_ms = None
        rec.left_ms = None
        if stale_until_ms is not None:
            rec.stale_until_ms = stale_until_ms

    def host_crashed(self, idx: int, now_ms: int) -> None:
        """Host ``idx`` crashed now: detection times start over from this crash."""
        rec = self.subjects[idx]
        rec.crashed_ms = now_ms
        rec.first_suspect_ms = None
        rec.first_dead_ms = None
        rec.all_dead_ms = None

    def host_left(self, idx: int, now_ms: int) -> None:
        self.subjects[idx].left_ms = now_ms

    def drop_views(self, idx: int) -> None:
        """Observer ``idx`` stopped counting (crashed, or leaving): forget what it believed."""
        view = self.views[idx]
        if view is None:
            return
        n_view = self.n_view
        for s, code in enumerate(view):
            if code != NO_VIEW:
                n_view[code & 3][s] -= 1
        self.views[idx] = None

    # -- what the cores report ---------------------------------------------------------------

    def member_changed(self, observer: SimNode, member: Member) -> None:
        s = self.by_name.get(member.name)
        o = observer.idx
        if s is None:
            self.ledger.strangers.append((self.engine.now_ms, o, member.name))
            return
        if s == o:
            if member.incarnation > self.signed_max[o]:
                self.signed_max[o] = member.incarnation
            return
        view = self.views[o]
        if view is None:  # a leaving node's last words do not count as a view
            return
        ledger = self.ledger
        ledger.changes += 1
        code = STATE_CODE[member.state]
        inc = member.incarnation
        n_view = self.n_view
        if s >= len(view):  # a host added after this observer booted
            view.extend([NO_VIEW] * (len(self.nodes) - len(view)))
        old = view[s]
        if old != NO_VIEW:
            if inc < old >> 2:
                ledger.incarnation_regressions.append((self.engine.now_ms, o, s, old >> 2, inc))
            n_view[old & 3][s] -= 1
        try:
            view[s] = inc << 2 | code
        except OverflowError:
            self._store(o, s, inc << 2 | code)
        n_view[code][s] += 1
        subject = self.nodes[s]
        if inc > self.signed_max[s] + 1 or member.address != subject.address:
            what = f"incarnation {inc} (it signed {self.signed_max[s]}) at {member.address}"
            ledger.forged.append((self.engine.now_ms, o, s, what))
        if code == V_ALIVE:
            return
        now = self.engine.now_ms
        rec = self.subjects[s]
        if subject.state == UP:
            if now < rec.stale_until_ms or inc < subject.incarnation_at_boot:
                return
            if code == V_LEFT:
                ledger.forged.append((now, o, s, "a leave it never announced"))
                return
            if code == V_DEAD:
                ledger.false_dead.append((now, o, s))
            elif code == V_SUSPECT:
                ledger.false_suspect += 1
        elif subject.state == DOWN and rec.crashed_ms is not None:
            if rec.first_suspect_ms is None:
                rec.first_suspect_ms = now
            if code >= V_DEAD and rec.first_dead_ms is None:
                rec.first_dead_ms = now
            if rec.all_dead_ms is None and n_view[V_ALIVE][s] + n_view[V_SUSPECT][s] == 0:
                rec.all_dead_ms = now

    def all_learned(self, observers: Sequence[int], members: Sequence[Member]) -> None:
        """Each of ``observers`` (booted, no view yet) learned every one of ``members`` but
        itself, as ``member_changed`` of each would record it (``harness.warm_start``: cores
        that learned a state through ``SwimNode.answer_joins``, which reports no changes).

        Bulk where that is all ``member_changed`` would do (ALIVE members of known hosts at
        their own addresses and signed incarnations): an array copy per observer and the counts
        once. Anything else goes through ``member_changed`` itself, one pair at a time."""
        nodes, by_name, signed_max = self.nodes, self.by_name, self.signed_max
        n = len(nodes)
        row = array("h", [NO_VIEW]) * n
        subjects: list[int] = []
        plain = True
        for m in members:
            s = by_name.get(m.name)
            inc = m.incarnation
            if (
                s is None
                or m.state is not MemberState.ALIVE
                or m.address != nodes[s].address
                or inc > signed_max[s] + 1
                or inc >= 1 << 13  # past a short's room (``_store``)
                or row[s] != NO_VIEW
            ):
                plain = False
                break
            row[s] = inc << 2 | V_ALIVE
            subjects.append(s)
        views = self.views
        for o in observers:
            view = views[o]
            # Booted and still without a view: a short for every host, each NO_VIEW.
            if (
                not isinstance(view, array)
                or view.typecode != "h"
                or len(view) != n
                or view.count(NO_VIEW) != n
            ):
                plain = False
        if not plain:
            for o in observers:
                for m in members:
                    if m.name != nodes[o].name:
                        self.member_changed(nodes[o], m)
            return
        held = set(subjects)
        alive = self.n_view[V_ALIVE]
        for o in observers:
            view = views[o]
            assert view is not None
            view[:] = row  # a copy in place: the same array, all of it NO_VIEW before
            if o in held:
                view[o] = NO_VIEW  # its own record: ``member_changed`` keeps no view of itself
            self.ledger.changes += len(subjects) - (o in held)
        count = len(observers)
        for s in subjects:
            alive[s] += count
        for o in observers:
            if o in held:
                alive[o] -= 1

    def _store(self, o: int, s: int, value: int) -> None:
        """Observer ``o``'s view of ``s`` does not fit its array: widen it (shorts to ints, ints
        to a list)."""
        view = self.views[o]
        assert view is not None
        wide: MutableSequence[int] = list(view)
        if isinstance(view, array) and view.typecode == "h" and -(2**31) <= value < 2**31:
            wide = array("i", view)
        wide[s] = value
        self.views[o] = wide

    def member_reaped(self, observer: SimNode, name: str) -> None:
        s = self.by_name.get(name)
        view = self.views[observer.idx]
        if s is None or view is None:
            return
        self.ledger.reaps += 1
        old = view[s] if s < len(view) else NO_VIEW
        if old != NO_VIEW:
            view[s] = NO_VIEW
            self.n_view[old & 3][s] -= 1
            rec = self.subjects[s]
            if (
                self.nodes[s].state == DOWN
                and rec.all_dead_ms is None
                and self.n_view[V_ALIVE][s] + self.n_view[V_SUSPECT][s] == 0
            ):
                rec.all_dead_ms = self.engine.now_ms

    # -- reading it --------------------------------------------------------------------------

    def view_errors(self, observers: int) -> tuple[int, int]:
        """(wrong views, suspect views of up subjects) over all live observer/subject pairs,
        with ``observers`` live observers (the cluster's UP count).

        A view is wrong when a live observer does not see an UP subject as alive, or still sees
        a crashed or departed subject as alive or suspect. O(subjects), not O(pairs).
        """
        alive, suspect = self.n_view[V_ALIVE], self.n_view[V_SUSPECT]
        wrong = 0
        suspect_up = 0
        for s, node in enumerate(self.nodes):
            st = node.state
            if st == UP:
                wrong += observers - 1 - alive[s]
                suspect_up += suspect[s]
            elif st != NOT_STARTED:
                wrong += alive[s] + suspect[s]
        return wrong, suspect_up
