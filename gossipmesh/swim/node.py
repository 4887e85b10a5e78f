"""``SwimNode``: SWIM membership and failure detection with Lifeguard, as a sans-IO state machine.

Theory of operation
-------------------
The node never touches a socket or a clock. Its runtime (the trio agent or the simulator) feeds
it inputs -- a UDP packet, a fired timer, a push-pull stream, a command -- together with the
current time in milliseconds, and carries out the effects it returns (``effects.py``): send this
datagram, start that push-pull, call me back at that time, this member changed.

Failure detection (SWIM): every probe interval the next member of a shuffled round-robin order
is pinged. No ack within the probe timeout: ``indirect_checks`` random members are asked to ping
it for us (ping-req); they forward its ack or, if it stays silent, send us a nack. No ack by the
end of the interval: the member becomes *suspect* at the incarnation we probed. A suspect has a
suspicion timeout to refute; when it runs out the member is *dead*. A member refutes a suspicion
or death rumour about itself by bumping its incarnation and gossiping ``alive``: for one member,
higher incarnation wins, and at equal incarnation DEAD > SUSPECT > ALIVE. A member leaving on
purpose announces ``dead(left=True)`` about itself, so the others report it *left*.

Lifeguard (Dadgar et al.), all three parts:

1. local health (``awareness.py``) multiplies our probe interval and timeout when evidence says
   *we* are the slow one (failed probes, relays that do not even nack, having to refute);
2. the suspicion timeout (``suspicion.py``) starts long and shrinks with each *independent*
   confirmation, so a lone sick accuser cannot kill a healthy member quickly;
3. a ping to a suspect carries the suspicion (``Ping.suspect_incarnation``) so the suspect
   refutes at once in its ack instead of waiting for the rumour to reach it (buddy system).

Confirmation probes (our addition; ``confirm_probe_fanout``): Lifeguard's timeout only shrinks
as fast as independent confirmations arrive, and in memberlist those come from the ordinary
round-robin probes, so they trickle in over several seconds and the minimum must stay long.
Here a member that hears *someone else's* suspicion of X, and has not probed X itself for that
incarnation, probes X once at once -- a full probe (direct ping carrying the suspicion, ping-req
after the probe timeout, failure at the end of the probe interval), out of band of the
round-robin -- with probability ``fanout / (live - 2)``, so about ``fanout`` members do it per
suspicion at any cluster size and each does at most one per (member, incarnation). If X stays
silent the prober raises its own suspicion, which every other member counts as an independent
confirmation; if X is alive the suspicion-carrying ping makes it refute at once. So a real
failure collects its K confirmations within about one probe interval, while a false suspicion
reaches the suspect from several directions and is refuted sooner.

Dissemination: rumours are queued (``broadcast.py``) and piggybacked on every packet we send;
a gossip round every ``gossip_interval_ms`` sends them to ``gossip_nodes`` random members,
including recently dead ones so a falsely accused member hears it and refutes. Push-pull (a
full state exchange over TCP) runs on join and periodically, less often in big clusters; a
remote "dead" is merged as a local "suspect", so one member's mistaken view cannot kill another
member instantly, and a member told it is dead refutes.

Partitions heal (Serf's reconnect): when two halves have declared each other dead, plain gossip
never crosses again. Every ``reconnect_interval_ms`` the node may push-pull with a random member
it holds DEAD (not LEFT) for at most ``reconnect_timeout_ms``; that member hears it is dead,
refutes with a higher incarnation and the news spreads in both halves. A restarted node passes
a higher initial incarnation (a per-boot epoch), which revives it everywhere. Dead and left
members are forgotten after ``dead_reap_ms``.

Stale inputs are harmless: timers carry tokens and incarnations (``timers.py``) and are
re-checked; a packet that fails to decode is dropped whole, counted in ``stats`` under
``drop.decode.<reason>``, and changes nothing. Every queue and cache has a bound.

Bugs are not input: hostile or malformed bytes are counted drops, but an exception raised while
handling an input is a bug in this core, and it propagates out of ``handle_packet``,
``handle_timer`` and the other entry points to the runtime (the agent logs it with its traceback
and keeps running; the simulator stops the run and prints the seed that reproduces it).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from gossipmesh.errors import DecodeError, LimitExceededError, UsageError
from gossipmesh.ids import MAX_NODE_NAME_BYTES, Address, Millis
from gossipmesh.swim.awareness import Awareness
from gossipmesh.swim.broadcast import BroadcastQueue, retransmit_limit
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import (
    Effect,
    MemberChanged,
    MemberReaped,
    SendPacket,
    SetTimer,
    StartPushPull,
    UserMessage,
)
from gossipmesh.swim.member import MAX_META_BYTES, Member, MemberState, interned_member
from gossipmesh.swim.membership import MemberTable
from gossipmesh.swim.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    User,
    alive_from_checked,
    decode_packet_lazy,
    decode_push_pull,
    encode,
    encode_push_pull,
)
from gossipmesh.swim.suspicion import Suspicion, suspicion_bounds_ms
from gossipmesh.swim.timers import Timer, TimerKind
from gossipmesh.wire import PACKET_OVERHEAD_BYTES, encode_packet

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT

# memberlist's pushPullScaleThreshold: above this many members the push-pull interval grows.
PUSH_PULL_SCALE_THRESHOLD = 32

# Bound on confirmation probes in flight at once (each is at most one per suspicion, and each
# lasts one probe interval, so this only matters when very many members are suspected at once,
# e.g. the far side of a partition). More are skipped and counted.
CONFIRM_PROBES_MAX = 64

# Counters a runtime can always show, even before they move.
_STAT_KEYS = (
    "packets.in",
    "packets.out",
    "drop.decode",
    "probes",
    "probes.ok",
    "probes.ok_indirect",
    "probes.failed",
    "ping_req.sent",
    "ping_req.relayed",
    "nacks.sent",
    "nacks.received",
    "suspicions",
    "confirmations",
    "confirm_probes",
    "confirm_probes.ok",
    "confirm_probes.failed",
    "confirm_probes.final",
    "deaths",
    "leaves",
    "refutes",
    "reaped",
    "push_pull.started",
    "push_pull.served",
    "push_pull.merged",
    "push_pull.failed",
    "reconnect.attempts",
    "user.sent",
    "user.delivered",
    "user.duplicate",
    "user.relayed_late",
    "broadcast.queued",
    "broadcast.dropped",
    "timers.stale",
)


def push_pull_scale_ms(interval_ms: int, n: int) -> int:
    """memberlist's pushPullScale: one extra interval per doubling of n above 32 members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_ms
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval_ms


class _Probe:
    """The probe in flight (at most one): who, at which incarnation, and what came back."""

    __slots__ = (
        "acked",
        "expected_nacks",
        "final",
        "incarnation",
        "indirect_sent",
        "nacks",
        "seq",
        "target",
    )

    def __init__(self, seq: int, target: str, incarnation: int) -> None:
        self.seq = seq
        self.target = target
        self.incarnation = incarnation
        self.acked = False
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0
        self.final = False  # a confirmation probe made when our suspicion deadline came


class SwimNode:
    """One SWIM member. See the module docstring and docs/ARCHITECTURE.md for the contract."""

    def __init__(
        self,
        name: str,
        address: Address,
        config: SwimConfig,
        rng: random.Random,
        now_ms: Millis,
        meta: bytes = b"",
        incarnation: int = 0,
    ) -> None:
        if not name or len(name.encode("utf-8")) > MAX_NODE_NAME_BYTES:
            raise UsageError(f"node name must be 1..{MAX_NODE_NAME_BYTES} bytes")
        _check_meta(meta)
        if not 0 <= incarnation < (1 << 62):
            raise UsageError(f"incarnation {incarnation} out of range")
        self.name = name
        self.address = address
        self.config = config
        self._rng = rng
        self._incarnation = incarnation
        self._meta = meta
        self._table = MemberTable(interned_member(name, address, incarnation, ALIVE, meta), rng)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._broadcasts = BroadcastQueue(config.broadcast_queue_max)
        self._suspicions: dict[str, Suspicion] = {}
        self._probe: _Probe | None = None
        # Confirmation probes in flight, by ping seq, and the incarnation of the last suspicion
        # of each member we decided on (probe or not), so each is decided once.
        self._confirm_probes: dict[int, _Probe] = {}
        self._confirm_decided: dict[str, int] = {}
        self._relays: dict[int, tuple[Address, int]] = {}  # our ping seq -> (origin, its seq)
        self._push_pulls: dict[Address, Millis] = {}  # outgoing periodic/reconnect, started at
        self._joins: dict[Address, None] = {}  # seeds asked for a join exchange, not yet answered
        self._quiet = False  # merging a join reply: learn, but do not re-gossip what we learn
        self._seen_user: dict[bytes, bool] = {}  # payload digest -> relayed by us; oldest first
        self._seq = 0
        self._token = 0
        self._periodic: dict[TimerKind, int] = {}
        self._leaving = False
        self._limit_n = -1
        self._limit = 1
        self._bounds_n = -1
        self._bounds = (0, 0)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)

    # --- read-only views --------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member we know, ourselves included, in any state (until reaped)."""
        return list(self._table.values())

    def member(self, name: str) -> Member | None:
        return self._table.get(name)

    def local_member(self) -> Member:
        m = self._table.get(self.name)
        assert m is not None  # the local member is never removed
        return m

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy, up to awareness_max_multiplier - 1."""
        return self._awareness.score

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def live_count(self) -> int:
        """ALIVE + SUSPECT members, ourselves included (the n of the log-scaled formulas)."""
        return self._table.live_count

    @property
    def broadcast_queue_len(self) -> int:
        return len(self._broadcasts)

    @property
    def leaving(self) -> bool:
        return self._leaving

    # --- commands ---------------------------------------------------------------------------------

    def start(self, now_ms: Millis) -> list[Effect]:
        """Arm the periodic timers (each at a random offset so a cluster does not tick in step)
        and queue our own ``alive``. Calling it again re-arms; older timers become stale."""
        cfg = self.config
        out: list[Effect] = [MemberChanged(self.local_member(), None)]
        self._arm(TimerKind.PROBE, now_ms + self._rng.randrange(cfg.probe_interval_ms), out)
        if cfg.gossip_interval_ms > 0:
            self._arm(TimerKind.GOSSIP, now_ms + self._rng.randrange(cfg.gossip_interval_ms), out)
        if cfg.push_pull_interval_ms > 0:
            # Scaled by the members we already know (1 for a fresh boot, as memberlist): a table
            # restored or merged before start must not make a whole cluster push-pull its full
            # state within the same base interval.
            pp_ms = push_pull_scale_ms(cfg.push_pull_interval_ms, self._table.live_count)
            self._arm(TimerKind.PUSH_PULL, now_ms + pp_ms + self._rng.randrange(pp_ms), out)
        if cfg.reconnect_interval_ms > 0:
            self._arm(
                TimerKind.RECONNECT,
                now_ms + cfg.reconnect_interval_ms + self._rng.randrange(cfg.reconnect_interval_ms),
                out,
            )
        self._queue_self_alive()
        return out

    def join(self, seeds: Sequence[Address], now_ms: Millis) -> list[Effect]:
        """Ask each seed for a full state exchange; the runtime retries if all fail."""
        out: list[Effect] = []
        for seed in seeds:
            if seed != self.address:
                self._joins[seed] = None
                out.append(StartPushPull(seed, True))
                self._count("push_pull.started")
        return out

    def leave(self, now_ms: Millis) -> list[Effect]:
        """Announce that we leave: ``dead(left=True)`` about ourselves, sent at once to a few
        members and queued for gossip. The runtime keeps running gossip briefly, then exits."""
        out: list[Effect] = []
        if self._leaving:
            return out
        self._leaving = True
        self._put(
            interned_member(self.name, self.address, self._incarnation, LEFT, self._meta),
            now_ms,
            out,
        )
        data = encode(Dead(self.name, self._incarnation, self.name, True))
        self._broadcasts.queue(data, self.name)
        fanout = max(self.config.gossip_nodes, self.config.indirect_checks, 1)
        for m in self._table.random_members(fanout, _is_live):
            self._send(m.address, data, out, to_name=m.name)
        return out

    def update_meta(self, meta: bytes, now_ms: Millis) -> list[Effect]:
        """Replace our metadata (at most MAX_META_BYTES); bumps the incarnation so it wins."""
        _check_meta(meta)
        out: list[Effect] = []
        self._meta = meta
        self._incarnation += 1
        me = self.local_member()
        self._put(
            interned_member(self.name, self.address, self._incarnation, me.state, meta), now_ms, out
        )
        self._queue_self_alive()
        return out

    def queue_broadcast(self, payload: bytes, now_ms: Millis) -> None:
        """Gossip an application payload to the whole cluster (piggybacked, transmit-limited,
        re-gossiped by every first receiver). Raises LimitExceededError if it cannot fit a packet."""
        data = encode(User(payload, True))
        self._check_fits(data)
        self._remember_user(_user_digest(payload), True)
        self._broadcasts.queue(data)
        self._count("broadcast.queued")

    def send_user_message(self, payload: bytes, fanout: int, now_ms: Millis) -> list[Effect]:
        """Send an application payload directly to ``fanout`` random alive members (no relay)."""
        data = encode(User(payload, False))
        self._check_fits(data)
        out: list[Effect] = []
        for m in self._table.random_members(fanout, _is_alive):
            self._send(m.address, data, out, to_name=m.name)
            self._count("user.sent")
        return out

    # --- packets ----------------------------------------------------------------------------------

    def handle_packet(self, src: Address, data: bytes, now_ms: Millis) -> list[Effect]:
        """Process one datagram. Bad bytes never raise: they are dropped whole and counted."""
        out: list[Effect] = []
        stats = self.stats
        stats["packets.in"] += 1
        try:
            msgs = decode_packet_lazy(data, self.config.packet_size_bytes)
        except DecodeError as exc:
            key = "drop.decode." + exc.reason
            stats[key] = stats.get(key, 0) + 1
            stats["drop.decode"] += 1
            return out
        get = self._table.get
        for msg in msgs:
            if type(msg) is list:
                # A validated raw alive. Old news (the bulk of gossip while a cluster
                # forms) is skipped before any object is built.
                cur = get(msg[1])
                if cur is not None and msg[2] <= cur.incarnation and msg[1] != self.name:
                    continue
                self._on_alive(alive_from_checked(msg), now_ms, out)
            else:
                self._dispatch(src, msg, now_ms, out)  # type: ignore[arg-type]
        return out

    def _dispatch(self, src: Address, msg: Message, now_ms: Millis, out: list[Effect]) -> None:
        t = type(msg)
        if t is Ping:
            self._on_ping(src, msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Ack:
            self._on_ack(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Alive:
            self._on_alive(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Suspect:
            self._on_suspect(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Dead:
            self._on_dead(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is PingReq:
            self._on_ping_req(src, msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Nack:
            self._on_nack(msg)  # type: ignore[arg-type]
        elif t is User:
            self._on_user(src, msg, out)  # type: ignore[arg-type]

    def _on_ping(self, src: Address, msg: Ping, now_ms: Millis, out: list[Effect]) -> None:
        if msg.target != self.name:
            # Meant for whoever used to have our address; acking would mislead the prober.
            self._count("drop.ping.wrong_target")
            return
        if msg.suspect_incarnation is not None and not self._leaving:
            # Lifeguard buddy system: the prober holds us suspect. Refute now, in the ack.
            if msg.suspect_incarnation >= self._incarnation:
                self._count("refutes.buddy")
                self._refute(msg.suspect_incarnation, now_ms, out)
            else:
                # Already refuted, but the prober has not heard: make sure it rides the ack.
                self._queue_self_alive()
        ack = encode(Ack(msg.seq))
        source = msg.source
        if source is not None and (
            source in self._suspicions or self._table.gone_since(source) is not None
        ):
            told = self._verdict_for(source)
            if told:
                self._send(src, ack, out, told, source)
                return
        self._send(src, ack, out, to_name=source)

    def _verdict_for(self, name: str) -> bytes:
        """What we hold against a member that just pinged us, encoded for its ack (or b"").

        The buddy system the other way round: it asks us, so we tell it. Our suspicion's gossip
        may have been spent while we were cut off from it, and our death notice ages out of
        gossip-to-the-dead after 30 s; without this a member cut off by a partition learns
        either only from our probes (Lifeguard slows them on exactly such a node) or from a
        reconnect push-pull (about one per 30 s cluster-wide when one member is dead), and a
        healed 1-vs-999 split took 25 s to mend. A member that left is not told anything."""
        m = self._table.get(name)
        if m is None:
            return b""
        if m.state is SUSPECT:
            self._count("suspicions.told")
            return encode(Suspect(m.name, m.incarnation, self.name))
        if m.state is DEAD:
            self._count("deaths.told")
            return encode(Dead(m.name, m.incarnation, self.name))
        return b""

    def _on_ack(self, msg: Ack, now_ms: Millis, out: list[Effect]) -> None:
        p = self._probe
        if p is not None and p.seq == msg.seq:
            self._probe = None
            if p.indirect_sent:
                self._count("probes.ok_indirect")
            else:
                self._count("probes.ok")
                self._awareness.apply_delta(-1)
            return
        cp = self._confirm_probes.pop(msg.seq, None)
        if cp is not None:
            # The suspect answered: nothing to confirm. Our ping carried the suspicion, so it
            # is refuting already. A direct answer is evidence of our own health, as for probes.
            self._count("confirm_probes.ok")
            if not cp.indirect_sent:
                self._awareness.apply_delta(-1)
            if cp.final:
                self._final_probe_answered(cp, now_ms, out)
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            origin, origin_seq = relay
            self._send(origin, encode(Ack(origin_seq)), out)

    def _on_nack(self, msg: Nack) -> None:
        p = self._probe
        if p is None or p.seq != msg.seq:
            p = self._confirm_probes.get(msg.seq)
        if p is not None and p.seq == msg.seq and p.nacks < p.expected_nacks:
            p.nacks += 1
            self._count("nacks.received")

    def _on_ping_req(self, src: Address, msg: PingReq, now_ms: Millis, out: list[Effect]) -> None:
        if len(self._relays) >= self.config.indirect_pending_max:
            self._count("drop.ping_req.full")
            return
        seq = self._next_seq()
        self._relays[seq] = (src, msg.seq)
        self._count("ping_req.relayed")
        ping = Ping(seq, msg.target, msg.suspect_incarnation, self.name)
        self._send(msg.target_address, encode(ping), out, to_name=msg.target)
        # The relay waits the unscaled probe timeout: its own health is not what is measured.
        # But the nack goes out earlier, at 80% of it: the origin sent this ping-req at its
        # probe timeout and ends the probe one probe timeout later (LAN: 500 + 500 = 1000 ms),
        # so a nack sent at the full timeout lands just *after* the probe ended and counts as
        # missing -- every member that probed a dead node got +3 on its health score (seen on
        # loopback right after each kill, slowing its next probes and confirmation probes 4x).
        # An ack arriving between the nack and the full timeout is still forwarded.
        nack_ms = self.config.probe_timeout_ms * 4 // 5
        out.append(SetTimer(Timer(TimerKind.INDIRECT, seq, "nack"), now_ms + nack_ms))

    def _on_user(self, src: Address, msg: User, out: list[Effect]) -> None:
        digest = _user_digest(msg.payload)
        relayed = self._seen_user.get(digest)
        if relayed is None:
            self._count("user.delivered")
            out.append(UserMessage(src, msg.payload))
        elif relayed or not msg.relay:
            self._count("user.duplicate")
            return
        else:
            # Delivered already, from a direct (eager) copy that is not relayed, and now the
            # gossiped copy arrives: it must still travel on. Were it swallowed as a duplicate,
            # every member the eager push reached would stop the gossip meant for the members
            # it missed (measured: 1 in 5 of 1,000 replicas then waited for anti-entropy).
            self._count("user.relayed_late")
        self._remember_user(digest, msg.relay)
        if msg.relay:
            self._broadcasts.queue(encode(msg))

    # --- membership rumours -----------------------------------------------------------------------

    def _on_alive(self, msg: Alive | Member, now_ms: Millis, out: list[Effect]) -> None:
        """An alive rumour: an ``Alive`` from a packet, or an ALIVE push-pull record, which is
        already the (interned) snapshot to keep."""
        name = msg.name
        if name == self.name:
            if self._leaving:
                return
            if msg.incarnation > self._incarnation or (
                msg.incarnation == self._incarnation
                and (msg.address != self.address or msg.meta != self._meta)
            ):
                # Someone claims to be us with newer or different details (a previous boot of
                # ours, or a name clash): out-bid it so our view wins.
                self._refute(msg.incarnation, now_ms, out)
            return
        cur = self._table.get(name)
        if cur is not None and msg.incarnation <= cur.incarnation:
            return  # old news (or the same news again)
        self._suspicions.pop(name, None)
        if isinstance(msg, Member):
            self._put(msg, now_ms, out)
            if not self._quiet:
                rumour = Alive(name, msg.incarnation, msg.address, msg.meta)
                self._broadcasts.queue(encode(rumour), name)
            return
        self._put(interned_member(name, msg.address, msg.incarnation, ALIVE, msg.meta), now_ms, out)
        if not self._quiet:
            self._broadcasts.queue(encode(msg), name)

    def _on_suspect(self, msg: Suspect, now_ms: Millis, out: list[Effect]) -> None:
        name = msg.name
        cur = self._table.get(name)
        if cur is None or msg.incarnation < cur.incarnation:
            if name == self.name:
                self._reassert()
            return
        if name == self.name:
            if not self._leaving:
                self._refute(msg.incarnation, now_ms, out)
            return
        state = cur.state
        if state is SUSPECT:
            s = self._suspicions.get(name)
            if s is not None and s.confirm(msg.source):
                self._count("confirmations")
                # Re-gossip so others count this independent confirmation too, keyed by its
                # accuser: keyed by the member alone (as memberlist does) it would replace our
                # own accusation, or an earlier confirmation, before they were sent. Two nodes
                # that suspected a dead member within a gossip round then each relayed only the
                # other's accusation back to it, neither counted a confirmation, and the death
                # took the 18 s maximum instead of the 2 s minimum (seen in the 3-node demo). A
                # refutation still replaces our own accusation; stale copies of these expire
                # after their transmit limit and are ignored (older incarnation) meanwhile.
                self._broadcasts.queue(encode(msg), (name, msg.source))
                self._arm_suspicion(cur, s, now_ms, out)
            if s is not None:
                self._maybe_confirm_probe(cur, s, now_ms, out)
            return
        if state is not ALIVE:
            return
        self._count("suspicions")
        new = interned_member(name, cur.address, msg.incarnation, SUSPECT, cur.meta)
        self._put(new, now_ms, out)
        self._broadcasts.queue(encode(msg), name)
        n = self._table.live_count
        k = self.config.suspicion_confirmations
        other = n - 2  # members who could confirm: all live ones but us and the suspect
        if self.config.confirm_probe_fanout > 0:
            # Confirmation probes ask every possible confirmer in a small cluster, so wait for
            # as many as there can be rather than dropping Lifeguard's protection altogether.
            k = max(0, min(k, other))
        elif other < k:
            # memberlist: too few members to give the expected confirmations, expect none
            # (the timeout is then simply the minimum).
            k = 0
        lo, hi = self._suspicion_bounds(n)
        self._token += 1
        s = Suspicion(self._token, msg.source, k, lo, hi, now_ms)
        self._suspicions[name] = s
        self._arm_suspicion(new, s, now_ms, out)
        self._maybe_confirm_probe(new, s, now_ms, out)

    def _maybe_confirm_probe(
        self, m: Member, s: Suspicion, now_ms: Millis, out: list[Effect]
    ) -> None:
        """Decide, once per suspicion (member, incarnation), whether to probe the suspect
        ourselves; see "Confirmation probes" in the module docstring."""
        fanout = self.config.confirm_probe_fanout
        name = m.name
        if (
            fanout <= 0
            or self._leaving
            or self.name in s.confirmed_by  # we accused or confirmed it: our view is counted
            or self._confirm_decided.get(name) == m.incarnation
        ):
            return
        # Decided now whatever the dice say: later confirmations of the same suspicion must not
        # give us more rolls (that would make the expected number of probers grow with n).
        self._confirm_decided[name] = m.incarnation
        if s.confirmations >= s.k:
            return  # already as short as it gets; another confirmation changes nothing
        p = self._probe
        if p is not None and p.target == name:
            return  # our round-robin probe of it is in flight and will accuse if it fails
        others = self._table.live_count - 2
        if others > fanout and self._rng.random() * others >= fanout:
            return
        self._start_confirm_probe(m, False, now_ms, out)

    def _start_confirm_probe(
        self, m: Member, final: bool, now_ms: Millis, out: list[Effect]
    ) -> bool:
        """Probe a suspect out of band (direct, then relays); False if too many are in flight."""
        if len(self._confirm_probes) >= CONFIRM_PROBES_MAX:
            self._count("drop.confirm_probe.full")
            return False
        name = m.name
        seq = self._next_seq()
        cp = _Probe(seq, name, m.incarnation)
        cp.final = final
        self._confirm_probes[seq] = cp
        self._count("confirm_probes.final" if final else "confirm_probes")
        # We hold it suspect, so the ping carries the suspicion: a live member refutes at once.
        self._send(m.address, encode(Ping(seq, name, m.incarnation, self.name)), out, to_name=name)
        scale = self._awareness.scale
        cfg = self.config
        out.append(
            SetTimer(Timer(TimerKind.CONFIRM_TIMEOUT, seq), now_ms + scale(cfg.probe_timeout_ms))
        )
        out.append(
            SetTimer(Timer(TimerKind.CONFIRM_END, seq), now_ms + scale(cfg.probe_interval_ms))
        )
        return True

    def _final_probe_answered(self, cp: _Probe, now_ms: Millis, out: list[Effect]) -> None:
        """The suspect answered our last-word probe. Its refutation normally rides the ack; if we
        still hold it suspect, the refutation is on its way (our ping told it): look again after
        another minimum rather than kill a member that just answered us."""
        s = self._suspicions.get(cp.target)
        m = self._table.get(cp.target)
        if s is None or m is None or m.state is not SUSPECT or m.incarnation != cp.incarnation:
            return
        s.final_probed = False
        s.deadline_ms = now_ms + s.min_ms
        self._arm_suspicion(m, s, now_ms, out)

    def _arm_suspicion(
        self, m: Member | None, s: Suspicion, now_ms: Millis, out: list[Effect]
    ) -> None:
        if m is None:
            return
        # A confirmation can pull the deadline into the past (the suspicion is already older
        # than its new timeout): then the timer is due now.
        at_ms = s.deadline_ms if s.deadline_ms > now_ms else now_ms
        out.append(SetTimer(Timer(TimerKind.SUSPICION, s.token, m.name, m.incarnation), at_ms))

    def _on_dead(self, msg: Dead, now_ms: Millis, out: list[Effect]) -> None:
        name = msg.name
        cur = self._table.get(name)
        if (
            cur is None
            or msg.incarnation < cur.incarnation
            or cur.state is DEAD
            or cur.state is LEFT
        ):
            if name == self.name and cur is not None and msg.incarnation < cur.incarnation:
                self._reassert()
            return
        if name == self.name:
            if not self._leaving:
                self._refute(msg.incarnation, now_ms, out)
            return
        left = msg.left and msg.source == name
        self._count("leaves" if left else "deaths")
        self._suspicions.pop(name, None)
        new = interned_member(name, cur.address, msg.incarnation, LEFT if left else DEAD, cur.meta)
        self._put(new, now_ms, out)
        self._broadcasts.queue(encode(msg), name)
        out.append(
            SetTimer(
                Timer(TimerKind.REAP, 0, name, msg.incarnation), now_ms + self.config.dead_reap_ms
            )
        )

    def _reassert(self) -> None:
        """An accusation we already refuted is still going round, so our refutation has not
        reached everyone (it may have been spent on packets that were lost, while we were cut
        off). Gossip our current incarnation again; memberlist ignores these and leaves the
        accusers' stale view to the next push-pull, up to a minute later. Not fresh evidence
        against our health, so awareness is left alone."""
        if self._leaving:
            return
        self._count("refutes.reasserted")
        self._queue_self_alive()

    def _refute(self, accused_incarnation: int, now_ms: Millis, out: list[Effect]) -> None:
        """Out-bid a rumour about ourselves; having to do so is evidence we are unhealthy."""
        self._count("refutes")
        self._awareness.apply_delta(1)
        self._incarnation = max(self._incarnation, accused_incarnation) + 1
        self._put(
            interned_member(self.name, self.address, self._incarnation, ALIVE, self._meta),
            now_ms,
            out,
        )
        self._queue_self_alive()

    # --- timers -----------------------------------------------------------------------------------

    def handle_timer(self, timer: object, now_ms: Millis) -> list[Effect]:
        """Act on a timer we asked for; stale or foreign timers are ignored and counted."""
        out: list[Effect] = []
        if type(timer) is not Timer:
            self._count("timers.foreign")
            return out
        kind = timer.kind
        if kind is TimerKind.PROBE_TIMEOUT:
            p = self._probe
            if p is None or p.seq != timer.token or p.indirect_sent:
                self._count("timers.stale")
            else:
                self._ask_relays(p, out)
        elif kind is TimerKind.CONFIRM_TIMEOUT:
            cp = self._confirm_probes.get(timer.token)
            if cp is None or cp.indirect_sent:
                self._count("timers.stale")
            else:
                self._ask_relays(cp, out)
        elif kind is TimerKind.CONFIRM_END:
            cp = self._confirm_probes.pop(timer.token, None)
            if cp is None:
                self._count("timers.stale")
            else:
                self._count("confirm_probes.failed")
                self._probe_failed(cp, now_ms, out)
        elif kind is TimerKind.PROBE_END:
            p = self._probe
            if p is not None and p.seq == timer.token:
                self._finish_probe(p, now_ms, out)
            else:
                self._count("timers.stale")
        elif kind is TimerKind.INDIRECT:
            if timer.name != "nack":
                self._relays.pop(timer.token, None)  # the full timeout: stop forwarding
            else:
                relay = self._relays.get(timer.token)
                if relay is not None:
                    self._count("nacks.sent")
                    self._send(relay[0], encode(Nack(relay[1])), out)
                    rest = self.config.probe_timeout_ms - self.config.probe_timeout_ms * 4 // 5
                    out.append(SetTimer(Timer(TimerKind.INDIRECT, timer.token), now_ms + rest))
        elif kind is TimerKind.SUSPICION:
            self._suspicion_fired(timer, now_ms, out)
        elif kind is TimerKind.REAP:
            self._reap(timer, now_ms, out)
        elif self._periodic.get(kind) != timer.token:
            self._count("timers.stale")
        elif kind is TimerKind.PROBE:
            self._arm(
                TimerKind.PROBE, now_ms + self._awareness.scale(self.config.probe_interval_ms), out
            )
            self._start_probe(now_ms, out)
        elif kind is TimerKind.GOSSIP:
            self._arm(TimerKind.GOSSIP, now_ms + self.config.gossip_interval_ms, out)
            self._gossip(now_ms, out)
        elif kind is TimerKind.PUSH_PULL:
            interval = push_pull_scale_ms(self.config.push_pull_interval_ms, self._table.live_count)
            self._arm(TimerKind.PUSH_PULL, now_ms + interval, out)
            self._periodic_push_pull(now_ms, out)
        elif kind is TimerKind.RECONNECT:
            self._arm(TimerKind.RECONNECT, now_ms + self.config.reconnect_interval_ms, out)
            self._reconnect(now_ms, out)
        return out

    def _arm(self, kind: TimerKind, at_ms: Millis, out: list[Effect]) -> None:
        self._token += 1
        self._periodic[kind] = self._token
        out.append(SetTimer(Timer(kind, self._token), at_ms))

    def _start_probe(self, now_ms: Millis, out: list[Effect]) -> None:
        if self._leaving:
            return
        if self._probe is not None:
            # Its end timer is due at this same instant; settle it first, whatever the order.
            self._finish_probe(self._probe, now_ms, out)
        target = self._table.next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(seq, target.name, target.incarnation)
        self._count("probes")
        suspect_inc = target.incarnation if target.state is SUSPECT else None
        ping = Ping(seq, target.name, suspect_inc, self.name)
        self._send(target.address, encode(ping), out, to_name=target.name)
        scale = self._awareness.scale
        out.append(
            SetTimer(
                Timer(TimerKind.PROBE_TIMEOUT, seq), now_ms + scale(self.config.probe_timeout_ms)
            )
        )
        out.append(
            SetTimer(Timer(TimerKind.PROBE_END, seq), now_ms + scale(self.config.probe_interval_ms))
        )

    def _ask_relays(self, p: _Probe, out: list[Effect]) -> None:
        """No direct ack within the probe timeout: ask a few members to ping the target."""
        p.indirect_sent = True
        target = self._table.get(p.target)
        if target is None:
            return
        suspect_inc = target.incarnation if target.state is SUSPECT else None
        data = encode(PingReq(p.seq, target.name, target.address, suspect_inc))
        relays = self._table.random_members(
            self.config.indirect_checks, lambda m: m.state is ALIVE and m.name != p.target
        )
        for relay in relays:
            self._send(relay.address, data, out, to_name=relay.name)
            self._count("ping_req.sent")
        p.expected_nacks = len(relays)

    def _finish_probe(self, p: _Probe, now_ms: Millis, out: list[Effect]) -> None:
        self._probe = None
        self._count("probes.failed")
        self._probe_failed(p, now_ms, out)

    def _probe_failed(self, p: _Probe, now_ms: Millis, out: list[Effect]) -> None:
        """No ack at all, direct or relayed, by the end of the probe: suspect the target at the
        incarnation we probed (a refutation since then makes this old news)."""
        # With relays we can tell our fault from the target's: each relay that did not even
        # nack points at us. Without relays, a failed probe is the only evidence we have.
        if p.expected_nacks > 0:
            self._awareness.apply_delta(p.expected_nacks - p.nacks)
        else:
            self._awareness.apply_delta(1)
        cur = self._table.get(p.target)
        if cur is None or cur.state is DEAD or cur.state is LEFT:
            return
        self._on_suspect(Suspect(p.target, p.incarnation, self.name), now_ms, out)
        # A last-word probe (or any probe ending after our deadline) that fails settles it.
        s = self._suspicions.get(p.target)
        cur = self._table.get(p.target)
        if (
            s is not None
            and cur is not None
            and cur.state is SUSPECT
            and cur.incarnation == p.incarnation
            and now_ms >= s.deadline_ms
        ):
            self._on_dead(Dead(cur.name, cur.incarnation, self.name), now_ms, out)

    def _suspicion_fired(self, timer: Timer, now_ms: Millis, out: list[Effect]) -> None:
        s = self._suspicions.get(timer.name)
        m = self._table.get(timer.name)
        if (
            s is None
            or s.token != timer.token
            or m is None
            or m.state is not SUSPECT
            or m.incarnation != timer.incarnation
            or now_ms < s.deadline_ms  # an earlier-armed, longer deadline; a later one is due
        ):
            self._count("timers.stale")
            return
        if (
            self.config.confirm_probe_fanout > 0
            and not s.final_probed
            and (self.name not in s.confirmed_by or s.confirmations < s.k)
            and not self._leaving
        ):
            # Last word, unless we failed to reach it ourselves AND K others agreed. Otherwise
            # all we hold is other members' rumours or a lone, possibly old, accusation, and a
            # refutation lost on its way to us looks exactly the same (seen in the harness
            # under 10% loss: the only member not to hear a refutation kept its suspicion to
            # the end). Probe it once (carrying the suspicion) before declaring it dead; if it
            # stays silent, _probe_failed declares it. In a real failure the accuser, whose
            # deadline comes first and who has K confirmations by then, spreads "dead" at once.
            s.final_probed = True
            if self._start_confirm_probe(m, True, now_ms, out):
                return
        self._on_dead(Dead(m.name, m.incarnation, self.name), now_ms, out)

    def _reap(self, timer: Timer, now_ms: Millis, out: list[Effect]) -> None:
        m = self._table.get(timer.name)
        if (
            m is None
            or m.name == self.name
            or m.state not in (DEAD, LEFT)
            or m.incarnation != timer.incarnation
            or now_ms < (self._table.gone_since(m.name) or 0) + self.config.dead_reap_ms
        ):
            self._count("timers.stale")
            return
        self._table.remove(m.name)
        self._suspicions.pop(m.name, None)
        self._confirm_decided.pop(m.name, None)
        self._count("reaped")
        out.append(MemberReaped(m.name))

    def _gossip(self, now_ms: Millis, out: list[Effect]) -> None:
        if not len(self._broadcasts):
            return
        dead_after = now_ms - self.config.gossip_to_dead_ms
        gone_since = self._table.gone_since

        def accept(m: Member) -> bool:
            st = m.state
            if st is ALIVE or st is SUSPECT:
                return True
            since = gone_since(m.name) if st is DEAD else None
            return since is not None and since >= dead_after

        budget = self.config.packet_size_bytes - PACKET_OVERHEAD_BYTES
        limit = self._retransmit_limit()
        for m in self._table.random_members(self.config.gossip_nodes, accept):
            parts = self._broadcasts.get(budget, limit, m.name)
            if not parts:
                break
            out.append(SendPacket(m.address, encode_packet(parts)))
            self.stats["packets.out"] += 1

    def _periodic_push_pull(self, now_ms: Millis, out: list[Effect]) -> None:
        targets = self._table.random_members(1, _is_alive)
        if targets:
            self._start_push_pull(targets[0].address, now_ms, out)

    def _reconnect(self, now_ms: Millis, out: list[Effect]) -> None:
        horizon = now_ms - self.config.reconnect_timeout_ms
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
        if self._rng.random() > prob:
            return
        target = candidates[self._rng.randrange(len(candidates))]
        self._count("reconnect.attempts")
        self._start_push_pull(target.address, now_ms, out)

    def _start_push_pull(self, to: Address, now_ms: Millis, out: list[Effect]) -> None:
        pending = self._push_pulls
        if pending:
            # The runtime reports every outcome; this only guards against a lost callback.
            expiry = now_ms - 2 * self.config.push_pull_timeout_ms
            for addr in [a for a, t in pending.items() if t < expiry]:
                del pending[addr]
        if to in pending or len(pending) >= self.config.push_pull_concurrency_max:
            self._count("push_pull.skipped")
            return
        pending[to] = now_ms
        self._count("push_pull.started")
        out.append(StartPushPull(to, False))

    # --- push-pull --------------------------------------------------------------------------------

    def push_pull_payload(self, join: bool) -> bytes:
        """Our full member table, encoded as a stream payload (frame it with wire.encode_frame)."""
        return encode_push_pull(PushPull(join, tuple(self._table.values())))

    def handle_push_pull_request(
        self, src: Address, data: bytes, now_ms: Millis
    ) -> tuple[bytes, list[Effect]]:
        """Merge a peer's state and answer with ours. A bad request gets ``b""``: send nothing
        and close the stream."""
        out: list[Effect] = []
        if not self._merge_push_pull(data, now_ms, out):
            return b"", out
        self._count("push_pull.served")
        # Built after the merge so a refutation it triggered is already in our answer.
        return self.push_pull_payload(False), out

    def handle_push_pull_reply(self, src: Address, data: bytes, now_ms: Millis) -> list[Effect]:
        self._push_pulls.pop(src, None)
        out: list[Effect] = []
        # A join reply is the seed's view, which the cluster already knows: re-gossiping all of
        # it from every newcomer would make a mass join cost O(n^2) broadcasts for nothing.
        # Refutations about ourselves are still gossiped (``_queue_self_alive`` ignores quiet).
        self._quiet = self._joins.pop(src, 0) is None
        try:
            self._merge_push_pull(data, now_ms, out)
        finally:
            self._quiet = False
        return out

    def push_pull_failed(self, to: Address, now_ms: Millis) -> list[Effect]:
        self._push_pulls.pop(to, None)
        self._joins.pop(to, None)
        self._count("push_pull.failed")
        return []

    def _merge_push_pull(self, data: bytes, now_ms: Millis, out: list[Effect]) -> bool:
        try:
            pp = decode_push_pull(data, self.config.push_pull_max_bytes)
        except DecodeError as exc:
            key = "drop.push_pull." + exc.reason
            self.stats[key] = self.stats.get(key, 0) + 1
            return False
        self._count("push_pull.merged")
        for r in pp.members:
            st = r.state
            if st is ALIVE:
                self._on_alive(r, now_ms, out)
            elif st is LEFT:
                self._on_dead(Dead(r.name, r.incarnation, r.name, True), now_ms, out)
            else:
                # A remote SUSPECT or DEAD becomes our SUSPECT: their view alone must not
                # kill a member here, and the accused still gets its chance to refute.
                if r.name not in self._table and r.name != self.name:
                    self._on_alive(Alive(r.name, r.incarnation, r.address, r.meta), now_ms, out)
                self._on_suspect(Suspect(r.name, r.incarnation, self.name), now_ms, out)
        return True

    # --- helpers ----------------------------------------------------------------------------------

    def _put(self, member: Member, now_ms: Millis, out: list[Effect]) -> None:
        prev = self._table.put(member, now_ms)
        out.append(MemberChanged(member, None if prev is None else prev.state))

    def _send(
        self,
        to: Address,
        first: bytes,
        out: list[Effect],
        second: bytes = b"",
        to_name: str | None = None,
    ) -> None:
        """Send one message (and ``second``, if any) with as many queued broadcasts piggybacked
        as fit; news about ``to_name`` (the receiver) rides along without being spent."""
        parts = [first, second] if second else [first]
        if len(self._broadcasts):
            budget = self.config.packet_size_bytes - PACKET_OVERHEAD_BYTES - len(first)
            budget -= len(second)
            parts.extend(self._broadcasts.get(budget, self._retransmit_limit(), to_name))
        out.append(SendPacket(to, encode_packet(parts)))
        self.stats["packets.out"] += 1

    def _queue_self_alive(self) -> None:
        self._broadcasts.queue(
            encode(Alive(self.name, self._incarnation, self.address, self._meta)), self.name
        )

    def _retransmit_limit(self) -> int:
        n = self._table.live_count
        if n != self._limit_n:
            self._limit_n = n
            self._limit = retransmit_limit(self.config.retransmit_mult, n)
        return self._limit

    def _suspicion_bounds(self, n: int) -> tuple[int, int]:
        if n != self._bounds_n:
            cfg = self.config
            self._bounds_n = n
            self._bounds = suspicion_bounds_ms(
                cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_ms
            )
        return self._bounds

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _check_fits(self, data: bytes) -> None:
        if len(data) + PACKET_OVERHEAD_BYTES > self.config.packet_size_bytes:
            raise LimitExceededError(
                f"user payload of {len(data)} encoded bytes does not fit a "
                f"{self.config.packet_size_bytes}-byte packet"
            )

    def _remember_user(self, digest: bytes, relayed: bool) -> None:
        """Record a payload digest and whether we relayed it (bounded FIFO of recent payloads)."""
        seen = self._seen_user
        seen[digest] = relayed
        if len(seen) > self.config.user_dedupe_max:
            del seen[next(iter(seen))]


def _user_digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def _is_alive(m: Member) -> bool:
    return m.state is ALIVE


def _is_live(m: Member) -> bool:
    return m.state is ALIVE or m.state is SUSPECT


def _check_meta(meta: bytes) -> None:
    if type(meta) is not bytes:
        raise UsageError("meta must be bytes")
    if len(meta) > MAX_META_BYTES:
        raise LimitExceededError(f"meta is {len(meta)} bytes; the limit is {MAX_META_BYTES}")
