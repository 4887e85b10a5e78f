"""``StateSync``: push-pull, the full state exchange -- on join, periodically, and to reconnect.

Theory of operation
-------------------
A push-pull sends our whole member table to one peer over a stream and merges the peer's table
from its answer; the runtime carries the bytes (``StartPushPull``, then ``handle_push_pull_reply``
or ``push_pull_failed``). Three things start one:

- joining: one exchange per seed; the reply is merged *quietly* (learned, not re-gossiped: it is
  the seed's view, which the cluster already knows, and re-gossiping all of it from every
  newcomer would make a mass join cost O(n^2) broadcasts). Refutations about ourselves are
  still gossiped.
- the periodic timer: with one random alive member, every ``push_pull_interval_ms``, scaled up
  in big clusters as memberlist does (``push_pull_scale_ms``);
- reconnecting (Serf): with a random member we hold DEAD (not LEFT) for at most
  ``reconnect_timeout_ms``, with probability dead/live, so that two halves of a healed partition
  find each other again: the member hears it is dead and refutes.

Merging goes through ``rumours.py`` like any other news, except that a remote SUSPECT or DEAD
becomes our SUSPECT: one member's mistaken view must not kill a member here, and the accused
still gets its chance to refute; a DEAD or LEFT record of a member we do not know is not taken
at all (it would bring the long-gone back, see ``_alive_part``). At most
``push_pull_concurrency_max`` outgoing exchanges are pending; one the runtime never reported
expires after twice the push-pull timeout.

Every record carries its proof (``member.Proof``): the subject's own signed alive claim, and the
signed accusation behind a suspect, dead or left state. A merge makes two passes over the
records: first the alive claims (a member is added only on its own signed word; a newer claim
updates it), then the accusations, checked against the accusers the first pass may just have
taught us; a remote suspicion or death we believe becomes our own suspicion, signed by us. The
record about ourselves is merged at once, so a refutation it calls for is in our answer.

Merging costs a signature check per new claim, so a big state (a join into 10,000 members) is
merged a chunk at a time (``merge_chunk_verifications`` checks or ``merge_chunk_records``
records), the rest on a ``MERGE`` timer due at once: the runtime handles other input between
chunks and its event loop never stalls for long. An exchange whose claims are rejected
``push_pull_reject_max`` times is abandoned: valid claims of members we do not know cost real
work only as many times as the cluster has members, forged ones would cost it without end. Records
are decoded as the merge reaches them (``state_codec.RecordList``): a malformed record is one
rejection (``reject.bad_record``), not the loss of the whole state.

One shortcut, for a process that runs many cores (the simulator): ``answer_joins`` gives cores
that just started the outcome of joining through this one -- the same table, orders, random
draws, counters and timer tokens as ``join`` + ``handle_reply`` of our ``payload`` + their MERGE
timers -- without the per-record decoding and signature checks, which for a fresh table cannot
change that outcome once we checked the same claims against the same trust store. It takes
cores, never bytes: nothing from the network reaches it, and the agent never calls it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address, Millis
from gossipmesh.swim.authority import AccusationKind
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, SetTimer, StartPushPull
from gossipmesh.swim.member import Member, Proof, interned_member
from gossipmesh.swim.messages import Dead, Suspect
from gossipmesh.swim.rumours import Rumours
from gossipmesh.swim.state import ALIVE, DEAD, LEFT, SUSPECT, NodeState, is_alive, is_live
from gossipmesh.swim.state_codec import (
    MemberRecord,
    PushPull,
    RecordList,
    decode_push_pull,
    encode_push_pull,
)
from gossipmesh.swim.timers import Timer, TimerKind

# A member that sent us claims we could not check (certificates by reference) is asked for its
# state at most this often; at most FETCHES_REMEMBERED members are remembered for it.
FETCH_INTERVAL_MS = 10_000
FETCHES_REMEMBERED = 256

# memberlist's pushPullScaleThreshold: above this many members the push-pull interval grows.
PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale_ms(interval_ms: int, n: int) -> int:
    """memberlist's pushPullScale: one extra interval per doubling of n above 32 members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_ms
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval_ms


class _Merge:
    """A received state being merged: its records, how far we got, and what it cost."""

    __slots__ = ("accused", "pos", "quiet", "records", "rejected")

    def __init__(self, records: RecordList, quiet: bool) -> None:
        self.records = records
        self.quiet = quiet
        # 0..n-1: the alive claim of records[pos]; n..: the accusation of records[accused[pos-n]]
        self.pos = 0
        self.accused: list[MemberRecord] = []  # records with an accusation, found by pass one
        self.rejected = 0


class StateSync:
    """Push-pull for one node (see the module docstring)."""

    def __init__(self, state: NodeState, rumours: Rumours) -> None:
        self.state = state
        self.rumours = rumours
        self._table = state.table
        self._pending: dict[Address, Millis] = {}  # outgoing periodic/reconnect, started at
        self._joins: dict[Address, None] = {}  # seeds asked for a join exchange, not yet answered
        self._merges: deque[_Merge] = deque()  # states waiting to be merged, oldest first
        self._merge_token = 0  # the live MERGE timer's token (0: none armed)
        self._fetched: dict[Address, Millis] = {}  # who we last asked for its state, when

    @property
    def merging(self) -> int:
        """Records still to be merged (pending states), for runtimes and tests."""
        return sum(len(m.records) - min(m.pos, len(m.records)) for m in self._merges)

    def join(self, seeds: Sequence[Address]) -> list[Effect]:
        """Ask each seed for a full state exchange; the runtime retries if all fail."""
        st = self.state
        out: list[Effect] = []
        for seed in seeds:
            if seed != st.address:
                self._joins[seed] = None
                out.append(StartPushPull(seed, True))
                st.count("push_pull.started")
        return out

    def periodic(self, now_ms: Millis, out: list[Effect]) -> None:
        """The push-pull timer fired: exchange with one random alive member."""
        targets = self._table.random_members(1, is_alive)
        if targets:
            self._start(targets[0].address, now_ms, out)

    def reconnect(self, now_ms: Millis, out: list[Effect]) -> None:
        """The reconnect timer fired: maybe exchange with a member we hold dead."""
        st = self.state
        horizon = now_ms - st.config.reconnect_timeout_ms
        candidates = []
        for name in self._table.gone_names():
            m = self._table.get(name)
            since = self._table.gone_since(name)
            if m is not None and m.state is DEAD and since is not None and since >= horizon:
                candidates.append(m)
        if not candidates:
            return
        # Serf: attempt with probability failed/alive, so a mostly healthy cluster does not
        # hammer a few dead members from every node at once.
        prob = len(candidates) / max(1, self._table.live_count)
        rng = st.rng
        if rng.random() > prob:
            return
        target = candidates[rng.randrange(len(candidates))]
        st.count("reconnect.attempts")
        self._start(target.address, now_ms, out)

    def fetch(self, to: Address, now_ms: Millis, out: list[Effect]) -> None:
        """A member at ``to`` holds certificates we lack: exchange states with it, unless we
        asked it within ``FETCH_INTERVAL_MS`` (bounded, so a flood of unresolvable references
        costs at most one exchange per sender per interval, within the usual concurrency)."""
        fetched = self._fetched
        last = fetched.get(to)
        if last is not None and now_ms - last < FETCH_INTERVAL_MS:
            return
        if last is None and len(fetched) >= FETCHES_REMEMBERED:
            del fetched[next(iter(fetched))]
        fetched[to] = now_ms
        self.state.count("push_pull.fetch")
        self._start(to, now_ms, out)

    def _start(self, to: Address, now_ms: Millis, out: list[Effect]) -> None:
        st = self.state
        pending = self._pending
        if pending:
            # The runtime reports every outcome; this only guards against a lost callback.
            expiry = now_ms - 2 * st.config.push_pull_timeout_ms
            for addr in [a for a, t in pending.items() if t < expiry]:
                del pending[addr]
        if to in pending or len(pending) >= st.config.push_pull_concurrency_max:
            st.count("push_pull.skipped")
            return
        pending[to] = now_ms
        st.count("push_pull.started")
        out.append(StartPushPull(to, False))

    def payload(self, join: bool) -> bytes:
        """Our full member table, encoded as a stream payload (frame it with wire.encode_frame)."""
        return encode_push_pull(PushPull(join, tuple(self._table.values())))

    def handle_request(
        self, src: Address, data: bytes, now_ms: Millis
    ) -> tuple[bytes, list[Effect]]:
        """Merge a peer's state and answer with ours; ``b""`` for a bad request."""
        out: list[Effect] = []
        if not self._merge(data, False, now_ms, out):
            return b"", out
        self.state.count("push_pull.served")
        # Built after the record about us was merged, so a refutation it called for is in it.
        return self.payload(False), out

    def handle_reply(self, src: Address, data: bytes, now_ms: Millis) -> list[Effect]:
        self._pending.pop(src, None)
        out: list[Effect] = []
        # A join reply is merged quietly (see the module docstring); ``queue_self_alive``
        # ignores quiet, so refutations about ourselves are still gossiped.
        self._merge(data, self._joins.pop(src, 0) is None, now_ms, out)
        return out

    def answer_joins(self, fresh: Sequence[StateSync]) -> None:
        """Each of ``fresh`` (states of just-started nodes of this process) ends as if it had
        joined through us: ``join`` with us as its one seed, our ``payload`` as the reply, and
        every MERGE timer of that quiet merge fired at once. See ``SwimNode.answer_joins``."""
        st = self.state
        table = self._table
        members = list(table.values())
        if any(m.state is not ALIVE for m in members):
            raise UsageError("answer_joins answers with ALIVE members only")
        for f in fresh:
            fs = f.state
            if f._merges or f._joins or f._pending or fs.quiet:
                raise UsageError("answer_joins needs fresh nodes (no exchange under way)")
            ours = table.get(fs.name)
            # Our record of it must be old news to it, as its own record is in a real merge
            # (news would be refuted: not what a fresh node joining its own cluster meets).
            if ours is not None and (
                ours.incarnation > fs.incarnation
                or (
                    ours.incarnation == fs.incarnation
                    and (ours.address != fs.address or ours.meta != fs.meta)
                )
            ):
                raise UsageError(f"our record of {fs.name} would be news to it")
        cfg = st.config
        # Raises (changing nothing) if a table is not fresh.
        taken = table.copy_to([f._table for f in fresh])
        position = {m.name: i for i, m in enumerate(members)}
        for f, added in zip(fresh, taken, strict=True):
            fs = f.state
            fs.count("push_pull.started")  # join
            fs.count("push_pull.merged")  # handle_reply
            fs.verifications += added  # one signature check per member taken
            mine = position.get(fs.name, -1)
            for _ in range(merge_timers(len(members), mine, cfg)):
                fs.next_token()

    def failed(self, to: Address) -> list[Effect]:
        self._pending.pop(to, None)
        self._joins.pop(to, None)
        self.state.count("push_pull.failed")
        return []

    def _merge(self, data: bytes, quiet: bool, now_ms: Millis, out: list[Effect]) -> bool:
        """Decode a peer's state, merge what it says about us now, queue the rest."""
        st = self.state
        try:
            pp = decode_push_pull(data, st.config.push_pull_max_bytes)
        except DecodeError as exc:
            st.count("drop.push_pull." + exc.reason)
            return False
        st.count("push_pull.merged")
        records = pp.records
        mine = records.index_of(st.name)
        if mine is not None:
            try:
                r = records.get(mine)
            except DecodeError:
                st.reject("bad_record")
            else:
                st.quiet = quiet
                try:
                    self._alive_part(r, now_ms, out)
                    self._accusation_part(r, now_ms, out)
                finally:
                    st.quiet = False
        merges = self._merges
        if len(merges) >= st.config.merge_pending_max:
            merges.popleft()  # a newer state says at least as much about the same members
            st.count("push_pull.merge_dropped")
        merges.append(_Merge(records, quiet))
        self._merge_chunk(now_ms, out)
        return True

    def on_merge_timer(self, timer: Timer, now_ms: Millis, out: list[Effect]) -> None:
        if timer.token != self._merge_token:
            self.state.count("timers.stale")
            return
        self._merge_token = 0
        self._merge_chunk(now_ms, out)

    def _merge_chunk(self, now_ms: Millis, out: list[Effect]) -> None:
        """Merge records until this turn's budget is spent; arm a MERGE timer for the rest."""
        st = self.state
        cfg = st.config
        me = st.name
        spent_from = st.verifications
        looked = 0
        merges = self._merges
        while merges:
            m = merges[0]
            records = m.records
            n = len(records)
            accused = m.accused
            st.quiet = m.quiet
            try:
                while m.pos < n + len(accused):
                    if (
                        looked >= cfg.merge_chunk_records
                        or st.verifications - spent_from >= cfg.merge_chunk_verifications
                    ):
                        if not self._merge_token:
                            self._merge_token = st.next_token()
                            out.append(SetTimer(Timer(TimerKind.MERGE, self._merge_token), now_ms))
                        return
                    i = m.pos
                    m.pos += 1
                    looked += 1
                    rejected = st.rejections
                    if i >= n:
                        self._accusation_part(accused[i - n], now_ms, out)
                    else:
                        try:
                            r = records.get(i)
                        except DecodeError:
                            st.reject("bad_record")
                        else:
                            if r.name == me:
                                continue  # merged when the state arrived
                            self._alive_part(r, now_ms, out)
                            if r.state is not ALIVE:
                                accused.append(r)
                    if st.rejections != rejected:
                        m.rejected += st.rejections - rejected
                        if m.rejected >= cfg.push_pull_reject_max:
                            st.count("push_pull.abandoned")
                            break
            finally:
                st.quiet = False
            merges.popleft()

    def _alive_part(self, r: MemberRecord, now_ms: Millis, out: list[Effect]) -> None:
        """The subject's own signed claim in a record: adds or updates it if it is news."""
        if r.state is ALIVE:
            self.rumours.on_alive(r, now_ms, out)
            return
        p = r.proof
        assert p is not None  # decoded records always carry one
        cur = self._table.get(r.name)
        if r.name != self.state.name and (
            # A stranger who left or died: nothing to learn. Taking a dead stranger's claim
            # (then our own suspicion of it, as below) brought a long-gone member back to life
            # at every node that never knew it -- one restarted or joined after it went --
            # whenever a push-pull from a node holding it DEAD reached it, hours later; with
            # nobody else to confirm, the suspicion ran its whole Lifeguard maximum, probing a
            # dead address (swarm seeds 520 and 2404: a member that left, held DEAD by the
            # few who had killed it first, lingered suspect 140 s after the heal). memberlist
            # also adds a member only on an alive record. A falsely killed stranger is learnt
            # from its refutation, as any member we do not know.
            (cur is None and r.state is not SUSPECT)
            or (cur is not None and p.alive_incarnation <= cur.incarnation)  # old news
            # Dead or left here and there: the claim is the subject's word from *before* the
            # death the record reports, not a sign of life (``_gone_again`` in the second pass).
            or (cur is not None and r.state is not SUSPECT and not is_live(cur))
        ):
            return
        claim = interned_member(
            r.name, r.address, p.alive_incarnation, ALIVE, r.meta,
            Proof(p.cert, p.alive_incarnation, p.alive_signature),
        )  # fmt: skip
        self.rumours.on_alive(claim, now_ms, out)

    def _accusation_part(self, r: MemberRecord, now_ms: Millis, out: list[Effect]) -> None:
        """The accusation in a SUSPECT, DEAD or LEFT record, if we believe it."""
        state = r.state
        if state is ALIVE:
            return
        p = r.proof
        assert p is not None
        st = self.state
        rumours = self.rumours
        name, inc = r.name, r.incarnation
        if name != st.name and state is not SUSPECT:
            cur = self._table.get(name)
            if cur is not None and not is_live(cur) and p.alive_incarnation > cur.incarnation:
                self._gone_again(r, cur, now_ms, out)
                return
        if state is LEFT:
            rumours.on_dead(Dead(name, inc, name, True, p.accusation), now_ms, out)
            return
        if name == st.name:  # an accusation of us, checked and refuted as if gossiped
            if not st.leaving and inc >= st.incarnation and p.accuser not in self._table:
                # Its accuser's own record is further on in this state (a join into a cluster
                # we do not know yet): refute as we would a buddy ping, at most one above us.
                st.count("refutes.unchecked")
                rumours.refute(min(inc, st.incarnation + 1), now_ms, out)
                return
            if state is SUSPECT:
                rumours.on_suspect(Suspect(name, inc, p.accuser, p.accusation), now_ms, out)
            else:
                rumours.on_dead(Dead(name, inc, p.accuser, False, p.accusation), now_ms, out)
            return
        # A remote SUSPECT or DEAD becomes our SUSPECT: their view alone must not kill a member
        # here, and the accused still gets its chance to refute. We check their accusation
        # only if ours would change something.
        cur = self._table.get(name)
        if cur is None or not rumours.suspicion_would_count(cur, inc, st.name):
            return
        kind = AccusationKind.SUSPECT if state is SUSPECT else AccusationKind.DEAD
        if st.check_accusation(kind, cur, inc, p.accuser, p.accusation, now_ms):
            rumours.on_suspect(Suspect(name, inc, st.name, b""), now_ms, out, local=True)

    def _gone_again(self, r: MemberRecord, cur: Member, now_ms: Millis, out: list[Effect]) -> None:
        """A DEAD or LEFT record about a member we hold dead or left, at a higher incarnation:
        the subject refuted somewhere we did not hear (a one-way partition) and was then found
        dead or left there too. Taking its claim first would bring it back to life here, and
        our own suspicion of it would then run a whole Lifeguard timeout that nobody confirms
        (the swarm's seed 460). So the claim and the accusation are checked together, and the
        member stays gone, at the record's incarnation with both as proof: a later copy of
        that claim is old news. An accusation we cannot check (its accuser unknown here) leaves
        the claim, the subject's own word, to be taken as any alive rumour is."""
        p = r.proof
        assert p is not None
        st = self.state
        left = r.state is LEFT
        claim = interned_member(
            r.name, r.address, p.alive_incarnation, ALIVE, r.meta,
            Proof(p.cert, p.alive_incarnation, p.alive_signature),
        )  # fmt: skip
        if not self.rumours.claim_holds(claim, now_ms):
            return
        kind = AccusationKind.LEFT if left else AccusationKind.DEAD
        accuser = r.name if left else p.accuser
        if not st.check_accusation(kind, claim, r.incarnation, accuser, p.accusation, now_ms):
            self.rumours.on_alive(claim, now_ms, out)
            return
        self.rumours.gone_again(claim, Dead(r.name, r.incarnation, accuser, left, p.accusation),
                                now_ms, out)  # fmt: skip


def merge_timers(records: int, mine: int, cfg: SwimConfig) -> int:
    """How many MERGE timers a fresh node arms merging a state of ``records`` ALIVE records,
    none of them known to it but its own at position ``mine`` (-1: absent): ``_merge_chunk``'s
    arithmetic. A chunk ends when it has looked at ``merge_chunk_records`` records or spent
    ``merge_chunk_verifications`` checks (one per record but its own), and arms a timer if
    records remain."""
    per_records = cfg.merge_chunk_records
    per_checks = cfg.merge_chunk_verifications
    timers = 0
    pos = 0
    while True:
        checks_end = pos + per_checks + (1 if pos <= mine < pos + per_checks else 0)
        pos = min(pos + per_records, checks_end, records)
        if pos >= records:
            return timers
        timers += 1
