"""``NodeState``: what every part of one SWIM node shares, and the steps several parts take.

Theory of operation
-------------------
``SwimNode`` (``node.py``) is composed of parts of one concern each, in the manner of foca:
``probe.py`` (failure detection: probes, ping-req relaying, confirmation and last-word probes),
``rumours.py`` (membership news: alive, suspect, dead, refutation, reaping, the gossip round),
``push_pull.py`` (full state exchanges: join, periodic, reconnect) and ``user_messages.py``
(application payloads). They all act on one ``NodeState``: who we are (name, address,
incarnation, metadata, whether we are leaving), what we know (the member table, the open
suspicions), what we have to say (the broadcast queue), our local health, and the counters; plus
the steps more than one part takes -- record a member's new state and report the change, send a
packet with as much gossip piggybacked as fits, sign our own claims and check others' (through
the injected ``Authority``, with a verification budget per gossip source: ``budget.py``).

Our own alive claim is signed once per (incarnation, metadata) and kept, encoded, for gossip;
every rejected claim is counted as ``reject.<reason>`` (and in ``reject``).

The node handles one input at a time, so no part ever sees another half-done. Nothing here reads
a clock or a socket: time arrives as ``now_ms``, randomness is the injected ``rng``.
"""

from __future__ import annotations

import random

from gossipmesh.errors import LimitExceededError, UsageError
from gossipmesh.ids import Address, Millis
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim, Authority
from gossipmesh.swim.awareness import Awareness
from gossipmesh.swim.broadcast import BroadcastQueue, retransmit_limit
from gossipmesh.swim.budget import SourceBudget
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, MemberChanged, SendPacket
from gossipmesh.swim.fields import cert_ref
from gossipmesh.swim.member import MAX_META_BYTES, Member, MemberState, Proof, interned_member
from gossipmesh.swim.membership import MemberTable
from gossipmesh.swim.messages import Alive, Dead, Suspect, encode
from gossipmesh.swim.suspicion import Suspicion, suspicion_bounds_ms
from gossipmesh.wire import PACKET_OVERHEAD_BYTES, encode_packet

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT

# Counters a runtime can always show, even before they move.
STAT_KEYS = (
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
    "reject",
)


class NodeState:
    """The shared state of one SWIM node (see the module docstring)."""

    __slots__ = (
        "_bounds",
        "_bounds_n",
        "_limit",
        "_limit_n",
        "_self_alive",
        "_seq",
        "_token",
        "address",
        "authority",
        "awareness",
        "budget",
        "broadcasts",
        "config",
        "incarnation",
        "leaving",
        "meta",
        "name",
        "quiet",
        "rejections",
        "rng",
        "source",
        "stats",
        "suspicions",
        "table",
        "verifications",
        "want_budget",
    )

    def __init__(
        self,
        name: str,
        address: Address,
        config: SwimConfig,
        rng: random.Random,
        meta: bytes,
        incarnation: int,
        authority: Authority,
    ) -> None:
        self.name = name
        self.address = address
        self.config = config
        self.rng = rng
        self.incarnation = incarnation
        self.meta = meta
        self.authority = authority
        self.leaving = False
        # Merging a join reply: learn, but do not re-gossip what we learn (see push_pull.py).
        self.quiet = False
        # The source address of the packet being handled (None otherwise: push-pull merges and
        # our own timers), whose budget pays for checking the claims in it.
        self.source: Address | None = None
        self.budget = SourceBudget(
            config.verify_rate_per_s, config.verify_burst, config.verify_sources_max
        )
        # What answering others' ``Want``s may cost each source (bytes we send, no crypto).
        self.want_budget = SourceBudget(
            config.verify_rate_per_s, config.verify_burst, config.verify_sources_max
        )
        self.rejections = 0
        self.verifications = 0  # claims handed to the authority (push-pull chunks count them)
        # Our signed claim, encoded with our certificate and with a reference to it.
        self._self_alive: tuple[Alive, bytes, bytes] | None = None
        self.table = MemberTable(self.self_snapshot(ALIVE), rng)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(config.broadcast_queue_max)
        self.suspicions: dict[str, Suspicion] = {}
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._seq = 0
        self._token = 0
        self._limit_n = -1
        self._limit = 1
        self._bounds_n = -1
        self._bounds = (0, 0)

    def local_member(self) -> Member:
        m = self.table.get(self.name)
        assert m is not None  # the local member is never removed
        return m

    # --- our own claims ---------------------------------------------------------------------------

    def self_alive(self) -> Alive:
        """Our alive claim at the current incarnation, address and metadata, signed (cached)."""
        cached = self._self_alive
        if cached is not None:
            msg = cached[0]
            if (
                msg.incarnation == self.incarnation
                and msg.meta is self.meta
                and msg.address == self.address
            ):
                return msg
        claim = AliveClaim(self.name, self.incarnation, self.address, self.meta)
        auth = self.authority
        msg = Alive(
            self.name, self.incarnation, self.address, self.meta, auth.certificate,
            auth.sign_alive(claim),
        )  # fmt: skip
        compact = Alive(msg.name, msg.incarnation, msg.address, msg.meta, cert_ref(msg.cert),
                        msg.signature)  # fmt: skip
        self._self_alive = (msg, encode(msg), encode(compact))
        return msg

    def self_snapshot(self, state: MemberState, accusation: bytes = b"") -> Member:
        """Our own snapshot in ``state`` (ALIVE, or LEFT with our signed leave)."""
        msg = self.self_alive()
        proof = Proof(
            msg.cert, msg.incarnation, msg.signature, self.name if accusation else "", accusation
        )
        return interned_member(self.name, self.address, self.incarnation, state, self.meta, proof)

    def sign_suspect(self, name: str, incarnation: int) -> Suspect:
        claim = Accusation(AccusationKind.SUSPECT, name, incarnation, self.name)
        return Suspect(name, incarnation, self.name, self.authority.sign_accusation(claim))

    def sign_dead(self, name: str, incarnation: int, left: bool = False) -> Dead:
        kind = AccusationKind.LEFT if left else AccusationKind.DEAD
        claim = Accusation(kind, name, incarnation, self.name)
        return Dead(name, incarnation, self.name, left, self.authority.sign_accusation(claim))

    # --- others' claims ---------------------------------------------------------------------------

    def reject(self, reason: str) -> None:
        self.rejections += 1
        self.stats["reject"] += 1
        key = "reject." + reason
        self.stats[key] = self.stats.get(key, 0) + 1

    def afford(self, now_ms: Millis) -> bool:
        """May we spend one verification on a claim from the packet being handled?"""
        src = self.source
        if src is None or self.budget.take(src, now_ms):
            return True
        self.reject("rate_limited")
        return False

    def check_alive(self, claim: AliveClaim, cert: bytes, signature: bytes, now_ms: Millis) -> bool:
        """Is this alive claim its subject's own (counted as rejected if not)?"""
        if not self.afford(now_ms):
            return False
        self.verifications += 1
        reason = self.authority.verify_alive(claim, cert, signature)
        if reason is not None:
            self.reject(reason)
            return False
        return True

    def check_accusation(
        self, kind: AccusationKind, subject: Member, incarnation: int, accuser: str,
        signature: bytes, now_ms: Millis,
    ) -> bool:  # fmt: skip
        """Is this accusation about ``subject`` (the snapshot we hold, or our own) one we may
        believe: within one incarnation of what the subject itself signed, by a member whose
        certificate we hold, signed by it? Counted as rejected if not."""
        proof = subject.proof
        assert proof is not None, "the core keeps a proof with every snapshot"
        signed = self.incarnation if subject.name == self.name else proof.alive_incarnation
        if incarnation > signed + 1:
            # Nobody can hold a signed claim of this incarnation: it would push the subject
            # past what it can refute (the 2**62 attack). A restarted node that lost its data
            # learns its old incarnation from its own signed claims in push-pull instead.
            self.reject("incarnation_bound")
            return False
        if accuser == subject.name:
            cert = proof.cert
        else:
            by = self.table.get(accuser)
            if by is None or by.proof is None:
                self.reject("unknown_accuser")
                return False
            cert = by.proof.cert
        if not self.afford(now_ms):
            return False
        self.verifications += 1
        claim = Accusation(kind, subject.name, incarnation, accuser)
        reason = self.authority.verify_accusation(claim, cert, signature)
        if reason is not None:
            self.reject(reason)
            return False
        return True

    # --- shared steps -----------------------------------------------------------------------------

    def put(self, member: Member, now_ms: Millis, out: list[Effect]) -> None:
        """Record a member's new state and report the change to the runtime."""
        prev = self.table.put(member, now_ms)
        out.append(MemberChanged(member, None if prev is None else prev.state))

    def send(
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
        if len(self.broadcasts):
            budget = self.config.packet_size_bytes - PACKET_OVERHEAD_BYTES - len(first)
            budget -= len(second)
            parts.extend(self.broadcasts.get(budget, self.retransmit_limit(), to_name))
        out.append(SendPacket(to, encode_packet(parts)))
        self.stats["packets.out"] += 1

    def queue_self_alive(self, with_certificate: bool = False) -> None:
        """Gossip our current incarnation and details (also while quiet: see ``quiet``), with
        our certificate (when we start) or a reference to it (``rumours.py`` says why)."""
        self.self_alive()
        assert self._self_alive is not None
        _, full, compact = self._self_alive
        if with_certificate:
            self.broadcasts.queue(full, self.name, compact, self.config.certificate_transmits)
        else:
            self.broadcasts.queue(compact, self.name)

    def retransmit_limit(self) -> int:
        """How many times each broadcast is sent, for the live cluster size (cached per size)."""
        n = self.table.live_count
        if n != self._limit_n:
            self._limit_n = n
            self._limit = retransmit_limit(self.config.retransmit_mult, n)
        return self._limit

    def suspicion_bounds(self, n: int) -> tuple[int, int]:
        """Lifeguard's (min, max) suspicion timeout in ms for ``n`` live members (cached)."""
        if n != self._bounds_n:
            cfg = self.config
            self._bounds_n = n
            self._bounds = suspicion_bounds_ms(
                cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_ms
            )
        return self._bounds

    def next_seq(self) -> int:
        """A fresh ping sequence number (probes, confirmation probes and relayed pings)."""
        self._seq += 1
        return self._seq

    def next_token(self) -> int:
        """A fresh timer token (periodic timers and suspicions)."""
        self._token += 1
        return self._token

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def check_fits(self, data: bytes) -> None:
        """Refuse a user payload that could never fit a packet (raises LimitExceededError)."""
        if len(data) + PACKET_OVERHEAD_BYTES > self.config.packet_size_bytes:
            raise LimitExceededError(
                f"user payload of {len(data)} encoded bytes does not fit a "
                f"{self.config.packet_size_bytes}-byte packet"
            )


def is_alive(m: Member) -> bool:
    return m.state is ALIVE


def is_live(m: Member) -> bool:
    return m.state is ALIVE or m.state is SUSPECT


def check_meta(meta: bytes) -> None:
    """Refuse metadata that is not bytes or is over MAX_META_BYTES (raises a UsageError)."""
    if type(meta) is not bytes:
        raise UsageError("meta must be bytes")
    if len(meta) > MAX_META_BYTES:
        raise LimitExceededError(f"meta is {len(meta)} bytes; the limit is {MAX_META_BYTES}")
