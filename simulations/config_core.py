"""The config replica as a simulator attachment: the real Document, sync codec and policy.

Theory of operation
-------------------
``ConfigAttachment`` plays, for one simulated host, the part ``gossipmesh/agent/replica.py``
plays in the agent: it owns a real ``Document`` (with the real schema validator), and every
decision is the agent's, taken from the same pure functions in ``gossipmesh/crdt/replication.py``
with the host's seeded rng and the virtual clock. Only the I/O is different:

- **Spread.** A local write is ``Document.apply_batch``, then ``encode_delta``; ``plan_spread``
  decides: ``b"C"`` + delta on SWIM's piggyback broadcast (``host.queue_broadcast``, relayed
  cluster-wide by the SWIM core) *and* a direct user message to 3 random alive members
  (``host.send_user_message``), or, when too big for a packet, a ``config-push`` exchange to 3.
- **Forward.** A merge that learned something re-sends ``MergeResult.forward`` (its new entries,
  with only their own dots as context) as ``plan_forward`` says: eagerly to 2 members. A merge
  that learned nothing forwards nothing, which is what ends the epidemic.
- **Anti-entropy.** Every ``jittered_ms(sync_interval_ms(3000, n))`` one ``config-sync`` with a
  random live member (``pick_peers``), and at once with a member for which
  ``sync_on_member_event`` says so (joined, or alive again after suspect/dead: a healed
  partition). The sync is the agent's three legs: ``Digest`` → ``SyncReply`` → ``SyncPush``,
  each encoded with ``crdt/sync.py`` and decoded again on the other side, so codec bugs surface.
  At most two syncs run at once (``SYNC_CONCURRENCY_MAX``); a trigger that finds both slots busy
  is skipped, as in the agent; at most 16 stream pushes (``SPREAD_CONCURRENCY_MAX``).
- **Framing.** The agent's streams have kinds (``config-sync``, ``config-push``) and a first frame
  with the sender's name (``replica.frame``). The simulator's exchange is one request/reply, so
  the first byte names the leg: ``S`` digest, ``Q`` the third (push) leg, ``P`` a config-push.
  That byte is simulator plumbing and is not counted in the byte figures; the name frame is
  reported separately (``framed`` bytes).
- **Clock.** The HLC's physical time is ``EPOCH_MS + now_ms + skew``, the skew drawn per host
  (±50 ms by default, well inside the 500 ms drift bound), so writers' timestamps disagree a
  little, as real clocks do, and the deterministic winner rule is actually exercised.
- **Restart.** With data: the previous attachment's document and writer id carry over (what the
  agent loads from its store). Without: an empty document under a new writer epoch.

Membership comes from the SWIM core's ``MemberChanged`` effects, mapped to the agent's event kinds
with the agent's own ``_event_kind``. Reaped members are not forwarded to attachments, so they stay
in the peer table as dead; dead members are never picked, so that changes no decision.

What is *not* driven: tombstone GC (its grace period is an hour, longer than any scenario) and the
store (durability is the agent's; here "acknowledged" means ``apply_batch`` returned, which is
when the agent would answer the operator, after its fsync).

A ``ConfigLedger`` shared by all attachments of a run records what the checkers and reports need:
every acknowledged write (the entry itself), when each host first held each *watched* write
(for spread percentiles), and the bytes of every anti-entropy exchange that found the pair in
sync. ``ReplicaSettings`` can switch parts off (``forward``, ``anti_entropy``, ``gossip``), which is
how a test shows that the checkers fail on a deliberately broken replica.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.agent.replica import TAG, frame, make_writer, unframe
from gossipmesh.agent.runtime import _event_kind
from gossipmesh.config.schema import check_entry
from gossipmesh.crdt import replication as policy
from gossipmesh.crdt.document import Delta, Document, Entry, MergeResult
from gossipmesh.crdt.sync import (
    Digest,
    SyncPush,
    SyncReply,
    decode,
    decode_delta,
    encode,
    encode_delta,
    handle,
    make_digest,
)
from gossipmesh.errors import DecodeError, LimitExceededError
from gossipmesh.ids import Address
from gossipmesh.swim.member import Member, MemberState
from simulations.checkers import CheckResult
from simulations.cluster import UP, Attachment, Cluster, SimNode

# The agent's limits (gossipmesh/agent/replica.py), restated because they are module constants
# of an I/O module; a test checks they still agree.
SYNC_CONCURRENCY_MAX = 2
SPREAD_CONCURRENCY_MAX = 16
TRIGGER_DEPTH = 64

EPOCH_MS = 1_790_000_000_000  # virtual t=0 as a wall clock (late 2026), so HLCs look real
LEG_SYNC, LEG_PUSH_BACK, LEG_PUSH = b"S", b"Q", b"P"

Dot = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """The replica's knobs; defaults are the agent's. Switches exist to break it on purpose."""

    eager_fanout: int = policy.DEFAULT_EAGER_FANOUT
    forward_fanout: int = policy.DEFAULT_FORWARD_FANOUT
    sync_interval_ms: int = policy.DEFAULT_SYNC_INTERVAL_MS
    gossip_max_bytes: int = policy.DEFAULT_GOSSIP_MAX_BYTES
    clock_skew_ms_max: int = 50
    gossip: bool = True  # queue fresh deltas on SWIM's piggyback broadcast
    forward: bool = True  # re-send what a merge learned
    anti_entropy: bool = True  # periodic and triggered config-sync


@dataclass(slots=True)
class AckedWrite:
    t_ms: int
    host: int
    entry: Entry


@dataclass(slots=True)
class Watch:
    """Spread of one write: when each host first held its dot."""

    t_ms: int
    host: int
    live: int  # hosts UP when it was written: the denominator of the percentiles
    seen_ms: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class ConfigLedger:
    acked: list[AckedWrite] = field(default_factory=list)
    watches: dict[Dot, Watch] = field(default_factory=dict)
    insync_bytes: list[int] = field(default_factory=list)  # digest + in-sync reply
    insync_framed_bytes: list[int] = field(default_factory=list)  # plus the sender-name frame
    repair_bytes: list[int] = field(default_factory=list)  # digest + reply + push
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def watch(self, dot: Dot, t_ms: int, host: int, live: int) -> None:
        self.watches[dot] = Watch(t_ms, host, live, {host: t_ms})

    def observe(self, host: SimNode, doc: Document) -> None:
        """After a merge at ``host``: note the watched writes it now holds for the first time."""
        idx = host.idx
        for dot, w in self.watches.items():
            if idx not in w.seen_ms and doc.has_seen(dot):
                w.seen_ms[idx] = host.now_ms


class ConfigAttachment(Attachment):
    """One host's config replica (see the module docstring)."""

    doc: Document
    writer: str
    skew_ms: int

    def __init__(
        self,
        host: SimNode,
        ledger: ConfigLedger,
        settings: ReplicaSettings,
        previous: ConfigAttachment | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        # The agent derives its replica rng from the agent's; we derive ours from the host's.
        self.rng = random.Random(host.rng.getrandbits(64))
        if previous is not None:  # restart with data: the store's document and writer id
            self.doc = previous.doc
            self.writer = previous.writer
            self.skew_ms = previous.skew_ms
        else:
            self.doc = Document(validator=check_entry)
            self.writer = make_writer(host.name, self.rng)
            m = settings.clock_skew_ms_max
            self.skew_ms = self.rng.randint(-m, m) if m else 0
        self.members: dict[str, tuple[Address, str]] = {}  # name -> (address, state)
        self.reported: dict[str, tuple[dict[str, int], int]] = {}  # name -> (vv, now_ms)
        self.syncs = 0
        self.spreads = 0
        self.sync_generation = 0

    # ---- clock ----------------------------------------------------------------------------

    def wall_ms(self, now_ms: int) -> int:
        return EPOCH_MS + now_ms + self.skew_ms

    # ---- lifecycle and membership ---------------------------------------------------------

    def start(self, host: SimNode, now_ms: int) -> None:
        self._arm_sync(host, now_ms)

    def on_member_changed(
        self, host: SimNode, member: Member, previous: MemberState | None, now_ms: int
    ) -> None:
        if member.name == host.name:
            return
        kind = _event_kind(previous, member.state)  # the agent's MemberEvent.kind
        self.members[member.name] = (member.address, member.state.value)
        prev = previous.value if previous is not None else None
        if self.settings.anti_entropy and policy.sync_on_member_event(kind, prev):
            # The agent queues the trigger (depth 64) and its loop starts the sync at once if a
            # slot is free, else skips it; nothing awaits in between, so this is the same.
            if self.syncs >= SYNC_CONCURRENCY_MAX:
                self.ledger.count("sync_skipped")
                return
            self._start_sync(host, member.name)
            self._arm_sync(host, now_ms)  # the agent's loop restarts its wait after a trigger

    def live_peers(self, alive_only: bool = False) -> list[str]:
        ok = ("alive",) if alive_only else ("alive", "suspect")
        return [n for n, (_, state) in self.members.items() if state in ok]

    # ---- local writes ---------------------------------------------------------------------

    def commit(self, host: SimNode, items: Sequence[tuple[str, dict[str, Any] | None]]) -> Delta:
        """An operator's write at this host; returns once acknowledged (as the agent would)."""
        now = host.now_ms
        delta = self.doc.apply_batch(items, self.writer, self.wall_ms(now))
        if not delta.entries:
            return delta
        for e in delta.entries:
            self.ledger.acked.append(AckedWrite(now, host.idx, e))
        self.ledger.count("local_writes")
        payload = encode_delta(delta)
        s = self.settings
        self._spread(host, payload, policy.plan_spread(len(payload) + 1, s.gossip_max_bytes,
                                                       s.eager_fanout))  # fmt: skip
        return delta

    # ---- spreading ------------------------------------------------------------------------

    def _spread(self, host: SimNode, payload: bytes, plan: policy.Spread) -> None:
        ledger = self.ledger
        tagged = TAG + payload
        stream_fanout = plan.stream_fanout
        try:
            if plan.gossip and self.settings.gossip:
                host.queue_broadcast(tagged)
                ledger.count("gossip_queued")
            if plan.udp_fanout:
                host.send_user_message(tagged, plan.udp_fanout)
                ledger.count("eager_sent")
        except LimitExceededError:
            # Our size estimate was off (packet framing): fall back to streams, as the agent does.
            stream_fanout = max(stream_fanout, plan.udp_fanout)
        if not stream_fanout:
            return
        if self.spreads >= SPREAD_CONCURRENCY_MAX:
            ledger.count("spread_skipped")  # anti-entropy will carry it
            return
        for name in policy.pick_peers(self.live_peers(alive_only=True), stream_fanout, self.rng):
            self.spreads += 1
            host.exchange(self.members[name][0], LEG_PUSH + frame(host.name, payload),
                          ("push", name))  # fmt: skip

    def on_user_message(self, host: SimNode, src: Address, payload: bytes, now_ms: int) -> None:
        if not payload.startswith(TAG):
            return
        self.ledger.count("gossip_received")
        self.merge_payload(host, payload[1:], now_ms)

    def merge_payload(self, host: SimNode, data: bytes, now_ms: int) -> MergeResult | None:
        try:
            delta = decode_delta(data)
        except DecodeError:
            self.ledger.count("refused_decode")
            return None
        root = self.doc.root_hash
        result = self.doc.merge(delta, self.wall_ms(now_ms))
        self._after_merge(host, result, root)
        return result

    def _after_merge(self, host: SimNode, result: MergeResult, root: bytes) -> None:
        if result.refused:
            self.ledger.count("refused_entries", result.refused)
        if self.doc.root_hash == root and not result.accepted:
            self.ledger.count("merges_nothing_new")
            return  # nothing new: nothing to forward (this ends the epidemic)
        self.ledger.observe(host, self.doc)
        if result.forward is not None and self.settings.forward:
            fwd = encode_delta(result.forward)
            s = self.settings
            self.ledger.count("forwarded")
            self._spread(host, fwd, policy.plan_forward(len(fwd) + 1, s.gossip_max_bytes,
                                                        s.forward_fanout))  # fmt: skip

    # ---- anti-entropy ---------------------------------------------------------------------

    def _arm_sync(self, host: SimNode, now_ms: int) -> None:
        if not self.settings.anti_entropy:
            return
        self.sync_generation += 1
        n = len(self.live_peers()) + 1
        wait = policy.jittered_ms(policy.sync_interval_ms(self.settings.sync_interval_ms, n),
                                  self.rng)  # fmt: skip
        host.set_timer(("sync", self.sync_generation), now_ms + wait)

    def on_timer(self, host: SimNode, token: object, now_ms: int) -> None:
        if not (isinstance(token, tuple) and token[0] == "sync"):
            return
        if token[1] != self.sync_generation:
            return  # superseded by a triggered sync's re-arm
        peers = policy.pick_peers(self.live_peers(), 1, self.rng)
        if peers:
            if self.syncs >= SYNC_CONCURRENCY_MAX:
                self.ledger.count("sync_skipped")
            else:
                self._start_sync(host, peers[0])
        self._arm_sync(host, now_ms)

    def _start_sync(self, host: SimNode, name: str) -> None:
        member = self.members.get(name)
        if member is None:
            return
        data = encode(make_digest(self.doc))
        self.syncs += 1
        self.ledger.count("syncs")
        framed = frame(host.name, data)
        host.exchange(member[0], LEG_SYNC + framed, ("sync", name, len(data), len(framed)))

    def handle_exchange(self, host: SimNode, src: Address, data: bytes, now_ms: int) -> bytes:
        leg, body = data[:1], data[1:]
        try:
            name, raw = unframe(body)
            if leg == LEG_PUSH:
                self.merge_payload(host, raw, now_ms)
                return b"ok"
            msg = decode(raw)
        except DecodeError:
            self.ledger.count("refused_decode")
            return b""
        if leg == LEG_SYNC and isinstance(msg, Digest):
            self.reported[name] = (dict(msg.context.vv), now_ms)
            reply = handle(self.doc, msg, self.wall_ms(now_ms)).reply
            assert isinstance(reply, SyncReply)
            return encode(reply)
        if leg == LEG_PUSH_BACK and isinstance(msg, SyncPush):
            root = self.doc.root_hash
            handled = handle(self.doc, msg, self.wall_ms(now_ms))
            if handled.merged is not None:
                self._after_merge(host, handled.merged, root)
            return b""
        self.ledger.count("refused_unexpected")
        return b""

    def on_exchange_reply(self, host: SimNode, token: object, reply: bytes, now_ms: int) -> None:
        assert isinstance(token, tuple)
        if token[0] == "push":
            self.spreads -= 1
            self.ledger.count("push_sent")
            return
        if token[0] != "sync":
            return
        _, name, sent, sent_framed = token
        self.syncs -= 1
        ledger = self.ledger
        try:
            msg = decode(reply)
        except DecodeError:
            ledger.count("sync_failed")
            return
        if not isinstance(msg, SyncReply):
            ledger.count("sync_failed")
            return
        if msg.in_sync or msg.context is None:
            self.reported[name] = (dict(self.doc.version_vector()), now_ms)
            ledger.count("sync_in_sync")
            ledger.insync_bytes.append(sent + len(reply))
            ledger.insync_framed_bytes.append(sent_framed + len(reply))
            return
        self.reported[name] = (dict(msg.context.vv), now_ms)
        root = self.doc.root_hash
        handled = handle(self.doc, msg, self.wall_ms(now_ms))
        if handled.merged is not None:
            self._after_merge(host, handled.merged, root)
        pushed = 0
        if isinstance(handled.reply, SyncPush):
            data = encode(handled.reply)
            pushed = len(data)
            member = self.members.get(name)
            if member is not None:
                host.exchange(member[0], LEG_PUSH_BACK + frame(host.name, data), ("leg3", name))
        ledger.count("sync_repaired")
        ledger.repair_bytes.append(sent + len(reply) + pushed)

    def on_exchange_failed(self, host: SimNode, token: object, now_ms: int) -> None:
        assert isinstance(token, tuple)
        if token[0] == "sync":
            self.syncs -= 1
            self.ledger.count("sync_failed")
        elif token[0] == "push":
            self.spreads -= 1
            self.ledger.count("push_failed")


def attachment_factory(
    ledger: ConfigLedger, settings: ReplicaSettings
) -> Callable[[SimNode, Attachment | None], Attachment]:
    def make(host: SimNode, previous: Attachment | None) -> Attachment:
        prev = previous if isinstance(previous, ConfigAttachment) else None
        return ConfigAttachment(host, ledger, settings, prev)

    return make


# ---- checkers ----------------------------------------------------------------------------------


def _replicas(c: Cluster) -> list[tuple[SimNode, ConfigAttachment]]:
    return [
        (n, n.attachment)
        for n in c.nodes
        if n.state == UP and isinstance(n.attachment, ConfigAttachment)
    ]


def documents_identical(c: Cluster) -> CheckResult:
    """Every live replica has the same root hash, version vector, items and winners."""
    reps = _replicas(c)
    if not reps:
        return CheckResult("config-identical", False, "no live replica")
    ref_node, ref = reps[0]
    ref_key = (ref.doc.root_hash, ref.doc.version_vector(), list(ref.doc.items()),
               [(k.key, k.winner.dot) for k in ref.doc.conflicts()])  # fmt: skip
    bad: list[str] = []
    for node, att in reps[1:]:
        d = att.doc
        if d.root_hash != ref_key[0]:
            bad.append(f"{node.name}: root {d.root_hash.hex()} != {ref_key[0].hex()}")
        elif d.version_vector() != ref_key[1]:
            bad.append(f"{node.name}: version vector differs")
        elif list(d.items()) != ref_key[2]:
            bad.append(f"{node.name}: items differ")
        elif [(k.key, k.winner.dot) for k in d.conflicts()] != ref_key[3]:
            bad.append(f"{node.name}: conflict winners differ")
    if bad:
        return CheckResult("config-identical", False,
                           f"{len(bad)} of {len(reps)} replicas differ from {ref_node.name}; "
                           + "; ".join(bad[:5]))  # fmt: skip
    return CheckResult(
        "config-identical",
        True,
        f"{len(reps)} replicas: root {ref_key[0].hex()}, {len(ref_key[2])} live keys, "
        f"{len(ref_key[1])} writers, {len(ref_key[3])} conflicts",
    )


def no_lost_write(c: Cluster, ledger: ConfigLedger) -> CheckResult:
    """Every acknowledged write is held by every live replica, or superseded there by a write
    that had seen it (a write nobody saw replaced must never vanish)."""
    reps = _replicas(c)
    lost: list[str] = []
    for ack in ledger.acked:
        e = ack.entry
        for node, att in reps:
            sibs = att.doc.siblings(e.key)
            if not att.doc.has_seen(e.dot) or not any(s.dot == e.dot or s.covers(e) for s in sibs):
                lost.append(f"{e.key} {e.writer}:{e.counter} missing at {node.name}")
                break
    if lost:
        return CheckResult("config-no-lost-write", False,
                           f"{len(lost)} of {len(ledger.acked)} acknowledged writes lost; "
                           + "; ".join(lost[:5]))  # fmt: skip
    return CheckResult("config-no-lost-write", True,
                       f"all {len(ledger.acked)} acknowledged writes held or causally "
                       f"superseded at {len(reps)} replicas")  # fmt: skip


def conflicts_visible(c: Cluster, keys: Sequence[str]) -> CheckResult:
    """Keys written concurrently on both sides keep both versions, with one winner everywhere."""
    bad: list[str] = []
    winners: dict[str, set[Dot]] = {k: set() for k in keys}
    for node, att in _replicas(c):
        for k in keys:
            sibs = att.doc.siblings(k)
            if len(sibs) < 2:
                bad.append(f"{k}: {len(sibs)} version(s) at {node.name}")
            elif sibs:
                winners[k].add(sibs[0].dot)
    split = [k for k, w in winners.items() if len(w) > 1]
    if bad or split:
        detail = "; ".join(bad[:5] + [f"{k}: {len(winners[k])} different winners" for k in split])
        return CheckResult("config-conflicts-visible", False, detail)
    return CheckResult("config-conflicts-visible", True,
                       f"{len(keys)} contested keys listed as conflicts, one winner each "
                       "everywhere")  # fmt: skip


__all__ = [
    "AckedWrite",
    "ConfigAttachment",
    "ConfigLedger",
    "ReplicaSettings",
    "attachment_factory",
    "conflicts_visible",
    "documents_identical",
    "no_lost_write",
]
