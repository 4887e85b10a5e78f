"""``SwimNode``: SWIM membership and failure detection with Lifeguard, as a sans-IO state machine.

Theory of operation
-------------------
The node never touches a socket or a clock. Its runtime (the trio agent or the simulator) feeds
it inputs -- a UDP packet, a fired timer, a push-pull stream, a command -- together with the
current time in milliseconds, and carries out the effects it returns (``effects.py``): send this
datagram, start that push-pull, call me back at that time, this member changed.

This file is the facade: it checks the commands, routes each input to the part that owns its
concern, and keeps the periodic timers. The parts, one file each in foca's manner, share one
``NodeState`` (``state.py``): failure detection in ``probe.py``, membership news in
``rumours.py``, full state exchanges in ``push_pull.py``, application payloads in
``user_messages.py``. What follows is the protocol they implement together.

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

Signed membership (DESIGN-11 D3, ``authority.py``): every claim that changes a member -- alive,
suspect, dead, left -- is signed by whoever makes it and checked by an injected ``Authority``
before it is believed; a member is added only with a certificate valid for exactly its name, and
an accusation can name an incarnation at most one above what its subject signed. Checking costs
CPU, so old news is recognised from the incarnation before any check, gossip from one source
address may cost only so many checks per second (``budget.py``), and a push-pull state is merged
in chunks (``push_pull.py``). ``revalidate`` re-checks every member's certificate (the runtime
calls it when revocations change and now and then for expiry): a member whose certificate was
revoked or expired is declared dead here, and its claims are refused from then on.

Stale inputs are harmless: timers carry tokens and incarnations (``timers.py``) and are
re-checked; a packet that fails to decode is dropped whole, counted in ``stats`` under
``drop.decode.<reason>``, and changes nothing. Every queue and cache has a bound.

Bugs are not input: hostile or malformed bytes are counted drops, but an exception raised while
handling an input is a bug in this core, and it propagates out of ``handle_packet``,
``handle_timer`` and the other entry points to the runtime (the agent logs it with its traceback
and keeps running; the simulator stops the run and prints the seed that reproduces it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gossipmesh.errors import DecodeError, LimitExceededError, UsageError
from gossipmesh.ids import MAX_NODE_NAME_BYTES, Address, Millis
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, MemberChanged, SetTimer
from gossipmesh.swim.member import Member, interned_member
from gossipmesh.swim.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    User,
    Want,
    alive_from_checked,
    decode_packet_lazy,
    encode,
)
from gossipmesh.swim.probe import Prober
from gossipmesh.swim.push_pull import StateSync, push_pull_scale_ms
from gossipmesh.swim.rumours import Rumours, accused, proof_behind
from gossipmesh.swim.state import ALIVE, DEAD, LEFT, NodeState, check_meta, is_live
from gossipmesh.swim.timers import Timer, TimerKind
from gossipmesh.swim.user_messages import UserMessages
from gossipmesh.wire import PACKET_OVERHEAD_BYTES

# Room left beside our own alive claim in a packet, for the message it rides on (a ping or an
# ack with its verdict is well under this).
CLAIM_HEADROOM_BYTES = 160

# The periodic timers, which the node re-arms itself; only the latest of each kind is live.
_PERIODIC = (TimerKind.PROBE, TimerKind.GOSSIP, TimerKind.PUSH_PULL, TimerKind.RECONNECT)


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
        *,
        authority: Authority,
    ) -> None:
        if not name or len(name.encode("utf-8")) > MAX_NODE_NAME_BYTES:
            raise UsageError(f"node name must be 1..{MAX_NODE_NAME_BYTES} bytes")
        check_meta(meta)
        if not 0 <= incarnation < (1 << 62):
            raise UsageError(f"incarnation {incarnation} out of range")
        self.name = name
        self.address = address
        self.config = config
        st = self._state = NodeState(name, address, config, rng, meta, incarnation, authority)
        self._check_claim_fits()
        self._table = st.table
        self._rumours = Rumours(st)
        self._prober = Prober(st, self._rumours)
        self._rumours.prober = self._prober
        self._sync = StateSync(st, self._rumours)
        self._rumours.fetcher = self._sync
        self._users = UserMessages(st)
        self._periodic: dict[TimerKind, int] = {}  # periodic timer kind -> its live token
        self.stats: dict[str, int] = st.stats

    # --- read-only views --------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member we know, ourselves included, in any state (until reaped)."""
        return list(self._table.values())

    def member(self, name: str) -> Member | None:
        return self._table.get(name)

    def local_member(self) -> Member:
        return self._state.local_member()

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy, up to awareness_max_multiplier - 1."""
        return self._state.awareness.score

    @property
    def incarnation(self) -> int:
        return self._state.incarnation

    @property
    def live_count(self) -> int:
        """ALIVE + SUSPECT members, ourselves included (the n of the log-scaled formulas)."""
        return self._table.live_count

    @property
    def broadcast_queue_len(self) -> int:
        return len(self._state.broadcasts)

    @property
    def leaving(self) -> bool:
        return self._state.leaving

    @property
    def merging(self) -> int:
        """Push-pull records received and not merged yet (merged a chunk per turn)."""
        return self._sync.merging

    # --- commands ---------------------------------------------------------------------------------

    def start(self, now_ms: Millis) -> list[Effect]:
        """Arm the periodic timers (each at a random offset so a cluster does not tick in step)
        and queue our own ``alive``. Calling it again re-arms; older timers become stale."""
        cfg = self.config
        rng = self._state.rng
        out: list[Effect] = [MemberChanged(self.local_member(), None)]
        self._arm(TimerKind.PROBE, now_ms + rng.randrange(cfg.probe_interval_ms), out)
        if cfg.gossip_interval_ms > 0:
            self._arm(TimerKind.GOSSIP, now_ms + rng.randrange(cfg.gossip_interval_ms), out)
        if cfg.push_pull_interval_ms > 0:
            # Scaled by the members we already know (1 for a fresh boot, as memberlist): a table
            # restored or merged before start must not make a whole cluster push-pull its full
            # state within the same base interval.
            pp_ms = push_pull_scale_ms(cfg.push_pull_interval_ms, self._table.live_count)
            self._arm(TimerKind.PUSH_PULL, now_ms + pp_ms + rng.randrange(pp_ms), out)
        if cfg.reconnect_interval_ms > 0:
            self._arm(
                TimerKind.RECONNECT,
                now_ms + cfg.reconnect_interval_ms + rng.randrange(cfg.reconnect_interval_ms),
                out,
            )
        self._state.queue_self_alive(with_certificate=True)
        return out

    def join(self, seeds: Sequence[Address], now_ms: Millis) -> list[Effect]:
        """Ask each seed for a full state exchange; the runtime retries if all fail."""
        return self._sync.join(seeds)

    def leave(self, now_ms: Millis) -> list[Effect]:
        """Announce that we leave: ``dead(left=True)`` about ourselves, sent at once to a few
        members and queued for gossip. The runtime keeps running gossip briefly, then exits."""
        st = self._state
        out: list[Effect] = []
        if st.leaving:
            return out
        st.leaving = True
        dead = st.sign_dead(st.name, st.incarnation, left=True)
        st.put(st.self_snapshot(LEFT, dead.signature), now_ms, out)
        data = encode(dead)
        st.broadcasts.queue(data, st.name)
        fanout = max(self.config.gossip_nodes, self.config.indirect_checks, 1)
        for m in self._table.random_members(fanout, is_live):
            st.send(m.address, data, out, to_name=m.name)
        return out

    def update_meta(self, meta: bytes, now_ms: Millis) -> list[Effect]:
        """Replace our metadata (at most MAX_META_BYTES); bumps the incarnation so it wins."""
        check_meta(meta)
        st = self._state
        out: list[Effect] = []
        old_meta = st.meta
        st.meta = meta
        try:
            self._check_claim_fits()
        except LimitExceededError:
            st.meta = old_meta
            raise
        st.incarnation += 1
        me = self.local_member()
        if me.state is LEFT:
            dead = st.sign_dead(st.name, st.incarnation, left=True)
            st.put(st.self_snapshot(LEFT, dead.signature), now_ms, out)
        else:
            st.put(st.self_snapshot(ALIVE), now_ms, out)
        st.queue_self_alive()
        return out

    def _check_claim_fits(self) -> None:
        """Our signed alive claim (certificate and all) must ride a packet beside a ping."""
        st = self._state
        size = len(encode(st.self_alive()))
        room = self.config.packet_size_bytes - PACKET_OVERHEAD_BYTES - CLAIM_HEADROOM_BYTES
        if size > room:
            raise LimitExceededError(
                f"our signed alive claim is {size} bytes (certificate, name, address and "
                f"metadata); a {self.config.packet_size_bytes}-byte packet has room for {room}"
            )

    def revalidate(self, now_ms: Millis) -> list[Effect]:
        """Re-check every member's certificate now (revocations changed, or time passed): a live
        member whose certificate is no longer valid is declared dead here (signed by us and
        gossiped), so it leaves every route at once; its own claims are refused from now on, so
        it cannot come back with this certificate. Counted as ``invalidated.<reason>``."""
        st = self._state
        out: list[Effect] = []
        check = st.authority.check_certificate
        for m in list(self._table.values()):
            if m.name == st.name or not is_live(m) or m.proof is None:
                continue
            reason = check(m.name, m.proof.cert)
            if reason is None:
                continue
            st.count("invalidated." + reason)
            dead = st.sign_dead(m.name, m.incarnation)
            self._rumours.forget_suspicion(m.name)
            proof = accused(m, st.name, dead.signature)
            st.put(interned_member(m.name, m.address, m.incarnation, DEAD, m.meta, proof),
                   now_ms, out)  # fmt: skip
            st.broadcasts.queue(encode(dead), m.name)
            self._rumours.arm_reap(m.name, m.incarnation, now_ms, out)
        return out

    def queue_broadcast(self, payload: bytes, now_ms: Millis) -> None:
        """Gossip an application payload to the whole cluster (piggybacked, transmit-limited,
        re-gossiped by every first receiver). Raises LimitExceededError if it cannot fit a packet."""
        self._users.queue_broadcast(payload)

    def send_user_message(self, payload: bytes, fanout: int, now_ms: Millis) -> list[Effect]:
        """Send an application payload directly to ``fanout`` random alive members (no relay)."""
        return self._users.send(payload, fanout)

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
        on_alive = self._rumours.on_alive
        st = self._state
        st.source = src  # checking the claims in this packet is paid from its sender's budget
        try:
            for msg in msgs:
                if type(msg) is list:
                    # A validated raw alive. Old news (the bulk of gossip while a cluster
                    # forms) is skipped before any object is built or signature checked.
                    cur = get(msg[1])
                    if (
                        cur is not None
                        and msg[2] <= cur.incarnation
                        and msg[1] != self.name
                        and (msg[2] < cur.incarnation or not proof_behind(cur))
                    ):
                        continue
                    on_alive(alive_from_checked(msg), now_ms, out)
                else:
                    self._dispatch(src, msg, now_ms, out)  # type: ignore[arg-type]
        finally:
            st.source = None
        return out

    def _dispatch(self, src: Address, msg: Message, now_ms: Millis, out: list[Effect]) -> None:
        t = type(msg)
        if t is Ping:
            self._prober.on_ping(src, msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Ack:
            self._prober.on_ack(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Alive:
            self._rumours.on_alive(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Suspect:
            self._rumours.on_suspect(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Dead:
            self._rumours.on_dead(msg, now_ms, out)  # type: ignore[arg-type]
        elif t is PingReq:
            self._prober.on_ping_req(src, msg, now_ms, out)  # type: ignore[arg-type]
        elif t is Nack:
            self._prober.on_nack(msg)  # type: ignore[arg-type]
        elif t is User:
            self._users.on_user(src, msg, out)  # type: ignore[arg-type]
        elif t is Want:
            self._rumours.wants.answer(src, msg, now_ms, out)  # type: ignore[arg-type]

    # --- timers -----------------------------------------------------------------------------------

    def handle_timer(self, timer: object, now_ms: Millis) -> list[Effect]:
        """Act on a timer we asked for; stale or foreign timers are ignored and counted."""
        out: list[Effect] = []
        if type(timer) is not Timer:
            self._state.count("timers.foreign")
            return out
        kind = timer.kind
        cfg = self.config
        if kind is TimerKind.REAP:
            self._rumours.reap(timer, now_ms, out)
        elif kind is TimerKind.MERGE:
            self._sync.on_merge_timer(timer, now_ms, out)
        elif kind not in _PERIODIC:  # a probe's, a relay's or a suspicion's (``probe.py``)
            self._prober.on_timer(timer, now_ms, out)
        elif self._periodic.get(kind) != timer.token:
            self._state.count("timers.stale")
        elif kind is TimerKind.PROBE:
            next_ms = now_ms + self._state.awareness.scale(cfg.probe_interval_ms)
            self._arm(TimerKind.PROBE, next_ms, out)
            self._prober.start_probe(now_ms, out)
        elif kind is TimerKind.GOSSIP:
            self._arm(TimerKind.GOSSIP, now_ms + cfg.gossip_interval_ms, out)
            self._rumours.gossip(now_ms, out)
        elif kind is TimerKind.PUSH_PULL:
            interval = push_pull_scale_ms(cfg.push_pull_interval_ms, self._table.live_count)
            self._arm(TimerKind.PUSH_PULL, now_ms + interval, out)
            self._sync.periodic(now_ms, out)
        elif kind is TimerKind.RECONNECT:
            self._arm(TimerKind.RECONNECT, now_ms + cfg.reconnect_interval_ms, out)
            self._sync.reconnect(now_ms, out)
        return out

    def _arm(self, kind: TimerKind, at_ms: Millis, out: list[Effect]) -> None:
        """(Re)arm a periodic timer; any earlier one of its kind becomes stale."""
        token = self._periodic[kind] = self._state.next_token()
        out.append(SetTimer(Timer(kind, token), at_ms))

    # --- push-pull --------------------------------------------------------------------------------

    def push_pull_payload(self, join: bool) -> bytes:
        """Our full member table, encoded as a stream payload (frame it with wire.encode_frame)."""
        return self._sync.payload(join)

    def handle_push_pull_request(
        self, src: Address, data: bytes, now_ms: Millis
    ) -> tuple[bytes, list[Effect]]:
        """Merge a peer's state and answer with ours. A bad request gets ``b""``: send nothing
        and close the stream."""
        return self._sync.handle_request(src, data, now_ms)

    def handle_push_pull_reply(self, src: Address, data: bytes, now_ms: Millis) -> list[Effect]:
        return self._sync.handle_reply(src, data, now_ms)

    def push_pull_failed(self, to: Address, now_ms: Millis) -> list[Effect]:
        return self._sync.failed(to)

    # --- many cores in one process (the simulator) ------------------------------------------------

    def answer_joins(self, fresh: Sequence[SwimNode], now_ms: Millis) -> None:
        """Leave each core of ``fresh`` (started, knowing only itself) exactly as a join through
        us would: ``join([our address])``, then ``handle_push_pull_reply`` of our
        ``push_pull_payload``, then each MERGE timer it asks for fired at once. The same member
        table, insertion and probe orders, random draws (in the same order), counters and timer
        tokens; what is skipped is the work that cannot change that outcome for a fresh table:
        encoding, decoding, and checking again the signed claims we checked when we took them.

        For a process that runs many cores over one trust store and one clock (the simulator's
        warm start, ``simulations/harness.py``), where our check is theirs. It takes cores, not
        bytes, so no network input can reach it; the agent runs one core and never calls it:
        whatever arrives from the network goes through ``handle_push_pull_reply`` and is checked.

        Unlike the join path it reports no ``MemberChanged``: each core of ``fresh`` learned
        every member we hold but itself (the caller has our ``members()``). Every member we
        hold must be ALIVE, every core fresh, and our record of each not news to it; else a
        ``UsageError``, before anything changed."""
        del now_ms  # a fresh table's members need no time: none of them is DEAD or LEFT
        self._sync.answer_joins([core._sync for core in fresh])
