"""``ReplicaCore``: one node's replica of the config document and how deltas travel, sans-IO.

Theory of operation
-------------------
The core owns a ``Document`` and never touches a socket, a disk or a clock. Its runtime (the trio
agent or the simulator) feeds it inputs -- a local commit, a gossiped delta, a member change, a
fired timer, the legs of an exchange -- with ``now_ms`` (monotonic: timers, report ages) and, where
the document's hybrid logical clock needs it, ``wall_ms`` (the physical time an HLC is built
from). It carries out the effects returned (``effects.py``): persist this, notify that, gossip,
open an exchange, call me back then. Each input runs to completion, so a runtime that calls it
from one thread needs no lock. Every decision is taken here once, with the pure functions of
``replication.py`` and an injected ``random.Random``; the simulator therefore checks the code the
agent runs.

1. **Prepare and commit.** Every entry is signed by an operator (``document.py``), so a local
   write is two calls: ``prepare(items)`` proposes the unsigned entries under this replica's
   writer; the operator signs them elsewhere; ``commit(entries)`` checks and applies them as one
   delta, then returns ``Persist`` first (the runtime makes it durable before it answers or sends
   anything), ``Changed``, and the spread: ``TAG`` + delta on SWIM's piggyback broadcast plus
   direct user messages to 3 random alive members when it fits a packet, else ``config-push``
   exchanges to 3 (``plan_spread``). A writer whose counters ran out starts a new id
   (``SaveWriter``) rather than stop.
2. **Merge and forward.** A delta from a peer is decoded and merged; refused input is counted and
   changes nothing. A merge that learned something is persisted, notified, and its new part
   (``MergeResult.forward``) re-sent to 2 members (``plan_forward``); a merge that learned nothing
   forwards nothing, which is what ends the epidemic. An entry refused because its signer's
   certificate is not here yet starts a sync with the member that sent it (which holds it).
3. **Anti-entropy.** Every ``jittered_ms(sync_interval_ms(base, n))`` one ``config-sync`` with a
   random live member, and at once with a member that joined or came back (a healed partition):
   ``Digest`` -> ``SyncReply`` -> ``SyncPush`` -> ``DeltaMessage`` (``sync.py``: Merkle root,
   then the buckets that differ). At most ``SYNC_CONCURRENCY_MAX`` syncs and
   ``SPREAD_CONCURRENCY_MAX`` pushes are in flight; beyond that the work is skipped and counted
   (anti-entropy repairs whatever a skipped push would have carried).
4. **Tombstone GC.** ``collect_garbage`` drops tombstones ``gc_grace_ms`` after their HLC time
   (time-based: no peer report is trusted for it).

**Framing.** Exchanges start with ``frame(name, message)`` (one length byte, the sender's name),
so logs and counters can say who spoke. **Writer id.** ``NAME@EPOCH``, the
epoch drawn from the rng when a store is created (``make_writer``); a store keeps it
(``adopt_writer``), so a rebuilt store never reuses the counters of the old one.

Counters (``core.counters``, names ``config.*``, injected so the agent shows them in /v1/health)
record every outcome. Exceptions are not caught: a bug in the core reaches its runtime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gossipmesh.crdt import replication as policy
from gossipmesh.crdt.digest import BUCKETS
from gossipmesh.crdt.document import Document, WriterExhaustedError
from gossipmesh.crdt.effects import (
    Changed,
    Effect,
    Exchange,
    ExchangeKind,
    Gossip,
    OpenExchange,
    Persist,
    Refused,
    SaveSnapshot,
    SaveWriter,
    SendSyncPush,
    Served,
    SetTimer,
    SyncDone,
    SyncTimer,
)
from gossipmesh.crdt.entries import Delta, Entry, MergeResult
from gossipmesh.crdt.sync import (
    MAX_SYNC_BATCH_BYTES,
    DeltaMessage,
    Digest,
    SyncPush,
    SyncReply,
    decode,
    decode_delta,
    encode,
    encode_delta,
    make_digest,
    on_delta,
    on_push,
    on_reply,
    respond,
)
from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address

TAG = b"C"  # first byte of a config payload on SWIM user messages (b"R" is node records)
SYNC_CONCURRENCY_MAX = 2
SPREAD_CONCURRENCY_MAX = 16
GC_CHECK_INTERVAL_MS_MAX = 30_000
GC_CHECK_INTERVAL_MS_MIN = 1_000
MAX_WRITER_NAME_BYTES = 119  # + "@" + 8 hex digits = the document's 128-byte writer limit
ALIVE = "alive"
SUSPECT = "suspect"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """The replica's knobs. Defaults are the agent's."""

    sync_interval_ms: int = policy.DEFAULT_SYNC_INTERVAL_MS  # base period, before scale + jitter
    gc_grace_ms: int = policy.DEFAULT_GC_GRACE_MS  # a tombstone is kept at least this long
    gossip_max_bytes: int = policy.DEFAULT_GOSSIP_MAX_BYTES  # larger deltas go over streams
    eager_fanout: int = policy.DEFAULT_EAGER_FANOUT  # members told of a local write at once
    forward_fanout: int = policy.DEFAULT_FORWARD_FANOUT  # members told of what a merge learned
    compact_after: int | None = None  # snapshot after this many log rows; None: no store
    anti_entropy: bool = True  # False only in experiments (the simulator's --no-anti-entropy)

    def __post_init__(self) -> None:
        for name in ("sync_interval_ms", "gossip_max_bytes"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        for name in ("gc_grace_ms", "eager_fanout", "forward_fanout"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must not be negative")
        if self.compact_after is not None and self.compact_after < 1:
            raise UsageError("compact_after must be at least 1 (or None without a store)")


def frame(name: str, data: bytes) -> bytes:
    """First frame of an exchange: who is speaking (for GC bookkeeping), then the message."""
    raw = name.encode()
    return bytes((len(raw),)) + raw + data


def unframe(body: bytes) -> tuple[str, bytes]:
    """(sender name, message) of a first frame; DecodeError if the name is missing or not UTF-8."""
    if not body or len(body) < 1 + body[0] or body[0] == 0:
        raise DecodeError("config_frame", "bad sender name")
    n = body[0]
    try:
        name = body[1 : 1 + n].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("config_frame", "sender name is not UTF-8") from exc
    return name, body[1 + n :]


def make_writer(name: str, rng: policy.Rng) -> str:
    """A new writer id ``NAME@EPOCH`` (the name cut to fit the document's writer limit)."""
    short = name.encode()[:MAX_WRITER_NAME_BYTES].decode(errors="ignore") or "node"
    return f"{short}@{rng.getrandbits(32):08x}"


def writes_as(writer: str, name: str) -> bool:
    """``writer`` is a writer id of the node called ``name`` (of this life or an earlier one)."""
    short = name.encode()[:MAX_WRITER_NAME_BYTES].decode(errors="ignore") or "node"
    return writer.startswith(short + "@")


def adopt_writer(stored: str | None, name: str) -> str | None:
    """The writer id a store holds, if it is this node's; None means "make a new one". A store
    carried over to a renamed node starts a new writer rather than speak for the old one."""
    if stored is None:
        return None
    return stored if writes_as(stored, name) else None


@dataclass(slots=True)
class _PendingSync:
    to: Address
    sent_bytes: int
    framed_bytes: int
    received_bytes: int = 0
    pushed_bytes: int = 0
    truncated: bool = False  # our push left differing buckets for another exchange


class ReplicaCore:
    """One node's config replica (see the module docstring)."""

    def __init__(
        self,
        name: str,
        document: Document,
        writer: str,
        rng: policy.Rng,
        config: ReplicaConfig | None = None,
        counters: Counter[str] | None = None,
        log_rows: int = 0,
    ) -> None:
        self.name = name
        self.doc = document
        self.writer = writer
        self.rng = rng
        self.config = config if config is not None else ReplicaConfig()
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.members: dict[str, tuple[Address, str]] = {}  # name -> (gossip address, state)
        self._by_address: dict[str, str] = {}  # str(gossip address) -> name
        self._log_rows = log_rows  # rows in the store's log since its last snapshot
        self._syncs: dict[Exchange, _PendingSync] = {}
        self._pushes: set[Exchange] = set()
        self._seq = 0
        self._sync_generation = 0

    # ---- reads ------------------------------------------------------------------------------

    @property
    def syncs_in_flight(self) -> int:
        return len(self._syncs)

    @property
    def pushes_in_flight(self) -> int:
        return len(self._pushes)

    def live_peers(self, alive_only: bool = False) -> list[str]:
        ok = (ALIVE,) if alive_only else (ALIVE, SUSPECT)
        return [n for n, (_, state) in self.members.items() if state in ok]

    def gc_interval_ms(self) -> int:
        """How often the runtime should call ``collect_garbage``."""
        grace = self.config.gc_grace_ms
        return min(GC_CHECK_INTERVAL_MS_MAX, max(GC_CHECK_INTERVAL_MS_MIN, grace))

    # ---- lifecycle and membership -----------------------------------------------------------

    def start(self, now_ms: int) -> list[Effect]:
        """Arm the anti-entropy timer."""
        return self._arm_sync(now_ms)

    def member_changed(
        self, name: str, address: Address, state: str, previous: str | None, now_ms: int
    ) -> list[Effect]:
        """A member's state (a ``MemberState`` value) changed from ``previous`` (None: new)."""
        if name == self.name:
            return []
        self.members[name] = (address, state)
        self._by_address[str(address)] = name
        if not (self.config.anti_entropy and policy.sync_on_member_change(state, previous)):
            return []
        if len(self._syncs) >= SYNC_CONCURRENCY_MAX:
            self._count("sync_skipped")
            return []
        out = self._start_sync(name)
        out += self._arm_sync(now_ms)  # the periodic wait starts over after a triggered sync
        return out

    def member_reaped(self, name: str) -> list[Effect]:
        """A member was forgotten: it no longer counts for GC, nor is it picked."""
        member = self.members.pop(name, None)
        if member is not None:
            self._by_address.pop(str(member[0]), None)
        return []

    # ---- local writes -----------------------------------------------------------------------

    def prepare(
        self, items: Sequence[tuple[str, dict[str, Any] | None]], wall_ms: int
    ) -> tuple[tuple[Entry, ...], list[Effect]]:
        """The unsigned entries that would write ``items``, for an operator to sign. Raises what
        ``Document.prepare`` raises; the effects (a ``SaveWriter`` when this replica had to
        start a new writer id) must be carried out before the proposal is shown."""
        try:
            return self.doc.prepare(items, self.writer, wall_ms), []
        except WriterExhaustedError:
            self.writer = make_writer(self.name, self.rng)
            self._count("writer_rotated")
            return self.doc.prepare(items, self.writer, wall_ms), [SaveWriter(self.writer)]

    def commit(
        self, entries: Sequence[Entry], now_ms: int, wall_ms: int
    ) -> tuple[MergeResult, list[Effect]]:
        """Apply signed entries made from ``prepare`` as one delta. Raises what
        ``Document.commit`` raises (stale, refused), with nothing changed. The first effect is
        ``Persist``: the write is acknowledged once it is done."""
        result = self.doc.commit(entries, self.writer, wall_ms)
        if result.forward is None:
            return result, []
        self._count("local_writes")
        out = self._persist(result.forward)
        out.append(Changed(result.changed_keys))
        payload = encode_delta(result.forward)
        c = self.config
        plan = policy.plan_spread(len(TAG) + len(payload), c.gossip_max_bytes, c.eager_fanout)
        self._spread(payload, plan, out)
        return result, out

    # ---- merging ----------------------------------------------------------------------------

    def on_user_message(
        self, src: Address, payload: bytes, now_ms: int, wall_ms: int
    ) -> list[Effect]:
        """A SWIM user payload; ours start with ``TAG``, others are ignored."""
        if not payload.startswith(TAG):
            return []
        self._count("gossip_received")
        return self.merge_payload(payload[len(TAG) :], str(src), wall_ms)[1]

    def merge_payload(
        self, data: bytes, origin: str, wall_ms: int
    ) -> tuple[MergeResult | None, list[Effect]]:
        """Decode and merge an encoded delta from ``origin``; bad bytes are refused and counted."""
        try:
            delta = decode_delta(data)
        except DecodeError as exc:
            self._count("refused")
            self._count(f"refused.decode_{exc.reason}")
            return None, [Refused(origin, (f"decode_{exc.reason}",), whole_delta=True)]
        result = self.doc.merge(delta, wall_ms)
        return result, self._after_merge(result, origin)

    def _after_merge(self, result: MergeResult, origin: str) -> list[Effect]:
        """Count, persist, notify and forward what a merge did."""
        out: list[Effect] = []
        if result.refused:
            self._count("refused", result.refused)
            for reason in result.refused_reasons:
                self._count(f"refused.{reason}")
            reasons = tuple(sorted(set(result.refused_reasons)))
            out.append(Refused(origin, reasons, whole_delta=False))
            if "unknown_signer" in reasons:
                out += self._fetch_signers(origin)
        if result.drifted:
            self._count("drift_exceeded", len(result.drifted))
        if result.forward is None:
            self._count("merged_nothing_new")
            return out  # nothing to persist or forward: this is what ends the epidemic
        # Persisted first, so it leads the effects; refusal reports carry no acknowledgement.
        out[:0] = self._persist(result.forward)
        self._count("merged_entries", result.accepted)
        if result.voided:
            self._count("voided_keys", len(result.voided))
        if result.changed_keys:
            out.append(Changed(result.changed_keys))
        if result.forward is not None:
            fwd = encode_delta(result.forward)
            self._count("forwarded")
            c = self.config
            plan = policy.plan_forward(len(TAG) + len(fwd), c.gossip_max_bytes, c.forward_fanout)
            self._spread(fwd, plan, out)
        return out

    def _fetch_signers(self, origin: str) -> list[Effect]:
        """An entry came whose signer's certificate we lack (it rode an earlier delta that missed
        us). The member that sent it holds that certificate, as an entry of the document: one
        sync with it fetches both, within a round trip rather than an anti-entropy period."""
        name = origin if origin in self.members else self._by_address.get(origin)
        if name is None or not self.config.anti_entropy:
            return []
        if any(t.peer == name for t in self._syncs) or len(self._syncs) >= SYNC_CONCURRENCY_MAX:
            self._count("signer_fetch_skipped")
            return []
        self._count("signer_fetches")
        return self._start_sync(name)

    def _persist(self, delta: Delta) -> list[Effect]:
        out: list[Effect] = [Persist(delta)]
        limit = self.config.compact_after
        if limit is not None:
            self._log_rows += 1
            if self._log_rows >= limit:
                out.append(SaveSnapshot())
                self._log_rows = 0
                self._count("snapshots")
        return out

    # ---- spreading --------------------------------------------------------------------------

    def _spread(self, payload: bytes, plan: policy.Spread, out: list[Effect]) -> None:
        if plan.gossip or plan.udp_fanout:
            out.append(Gossip(TAG + payload, plan.gossip, plan.udp_fanout))
            if plan.gossip:
                self._count("gossip_queued")
            if plan.udp_fanout:
                self._count("eager_sent")
        if plan.stream_fanout:
            self._push(payload, plan.stream_fanout, out)

    def gossip_refused(self, effect: Gossip, now_ms: int) -> list[Effect]:
        """SWIM refused a ``Gossip`` as too large for a packet (our size estimate was off): send
        the delta over streams to as many members instead."""
        self._count("gossip_refused")
        out: list[Effect] = []
        if effect.fanout:
            self._push(effect.payload[len(TAG) :], effect.fanout, out)
        return out

    def _push(self, payload: bytes, fanout: int, out: list[Effect]) -> None:
        if len(self._pushes) >= SPREAD_CONCURRENCY_MAX:
            self._count("spread_skipped")  # a burst: anti-entropy will carry it within a period
            return
        body = frame(self.name, payload)
        for name in policy.pick_peers(self.live_peers(alive_only=True), fanout, self.rng):
            token = self._token(ExchangeKind.PUSH, name)
            self._pushes.add(token)
            out.append(OpenExchange(self.members[name][0], token, body))

    # ---- anti-entropy: the initiating side --------------------------------------------------

    def _arm_sync(self, now_ms: int) -> list[Effect]:
        if not self.config.anti_entropy:
            return []
        self._sync_generation += 1
        n = len(self.live_peers()) + 1
        base = policy.sync_interval_ms(self.config.sync_interval_ms, n)
        wait_ms = policy.jittered_ms(base, self.rng)
        return [SetTimer(SyncTimer(self._sync_generation), now_ms + wait_ms)]

    def handle_timer(self, timer: object, now_ms: int) -> list[Effect]:
        """A timer set by ``SetTimer`` fired. Only the latest generation is acted on."""
        if not isinstance(timer, SyncTimer):
            raise TypeError(f"not a replica timer: {timer!r}")
        if timer.generation != self._sync_generation:
            self._count("timer_stale")  # superseded by a triggered sync's re-arm
            return []
        out: list[Effect] = []
        peers = policy.pick_peers(self.live_peers(), 1, self.rng)
        if peers:
            if len(self._syncs) >= SYNC_CONCURRENCY_MAX:
                self._count("sync_skipped")
            else:
                out += self._start_sync(peers[0])
        out += self._arm_sync(now_ms)
        return out

    def sync_now(self, name: str) -> list[Effect]:
        """Start a sync with member ``name`` at once (an operator's or a test's request; the
        concurrency limit is for the automatic ones). Nothing if ``name`` is unknown."""
        return self._start_sync(name)

    def _start_sync(self, name: str) -> list[Effect]:
        member = self.members.get(name)
        if member is None:
            return []
        data = encode(make_digest(self.doc))
        body = frame(self.name, data)
        token = self._token(ExchangeKind.SYNC, name)
        self._syncs[token] = _PendingSync(member[0], len(data), len(body))
        self._count("syncs")
        return [OpenExchange(member[0], token, body)]

    def exchange_reply(
        self, token: Exchange, reply: bytes, now_ms: int, wall_ms: int
    ) -> list[Effect]:
        """The reply to an ``OpenExchange``: a push's ``ok``, or a sync's ``SyncReply``."""
        if token.kind is ExchangeKind.PUSH:
            if token not in self._pushes:
                self._count("exchange_stale")
                return []
            self._pushes.discard(token)
            self._count("push_sent")  # the peer merged (and persisted) it
            return []
        pending = self._syncs.get(token)
        if pending is None or pending.received_bytes:
            self._count("exchange_stale")
            return []
        try:
            msg = decode(reply)
            if not isinstance(msg, SyncReply):
                raise DecodeError("unexpected_type", "expected a sync reply")
        except DecodeError as exc:
            self._syncs.pop(token, None)
            self._count("sync_failed")
            self._count(f"refused.decode_{exc.reason}")
            return []
        pending.received_bytes = len(reply)
        push = on_reply(self.doc, msg, start=self.rng.getrandbits(8) % BUCKETS)
        if push is None:
            self._syncs.pop(token, None)
            self._count("sync_in_sync")
            self._count("sync_bytes", pending.sent_bytes + len(reply))
            return [SyncDone(token, True, pending.sent_bytes, pending.framed_bytes, len(reply), 0)]
        data = encode(push)
        pending.pushed_bytes = len(data)
        pending.truncated = push.truncated
        return [SendSyncPush(token, pending.to, data)]

    def sync_push_reply(
        self, token: Exchange, reply: bytes, now_ms: int, wall_ms: int
    ) -> list[Effect]:
        """The fourth leg of a sync we started: what we lacked in the buckets that differed."""
        pending = self._syncs.pop(token, None)
        if pending is None or not pending.pushed_bytes:
            self._count("exchange_stale")
            return []
        try:
            msg = decode(reply)
            if not isinstance(msg, DeltaMessage):
                raise DecodeError("unexpected_type", "expected a delta")
        except DecodeError as exc:
            self._count("sync_failed")
            self._count(f"refused.decode_{exc.reason}")
            return []
        result = on_delta(self.doc, msg, wall_ms)
        out = self._after_merge(result, token.peer)
        self._count("sync_repaired")
        # A leg cut short left differences for another exchange: have it at once, as long as
        # each one makes progress (a difference that cannot converge waits for the timer).
        cut = pending.truncated or len(reply) >= MAX_SYNC_BATCH_BYTES // 2
        if cut and result.accepted > 0:
            self._count("sync_continued")
            out += self._start_sync(token.peer)
        total = pending.sent_bytes + pending.received_bytes + pending.pushed_bytes + len(reply)
        self._count("sync_bytes", total)
        out.append(SyncDone(token, False, pending.sent_bytes, pending.framed_bytes,
                            pending.received_bytes, pending.pushed_bytes, len(reply)))  # fmt: skip
        return out

    def exchange_failed(self, token: Exchange, now_ms: int) -> list[Effect]:
        """An exchange failed or timed out (or, for a sync already answered, its third leg)."""
        if token.kind is ExchangeKind.PUSH:
            if token in self._pushes:
                self._pushes.discard(token)
                self._count("push_failed")
            else:
                self._count("exchange_stale")
        elif self._syncs.pop(token, None) is not None:
            self._count("sync_failed")
        else:
            self._count("sync_push_failed")
        return []

    # ---- anti-entropy: the serving side -----------------------------------------------------

    def serve_sync(self, src: Address, body: bytes, now_ms: int, wall_ms: int) -> Served:
        """The first leg of a sync from a peer: its framed ``Digest``. Answers ``SyncReply``."""
        try:
            name, data = unframe(body)
            digest = decode(data)
            if not isinstance(digest, Digest):
                raise DecodeError("unexpected_type", "expected a digest")
        except DecodeError as exc:
            self._count(f"refused.decode_{exc.reason}")
            return Served(b"")
        reply = respond(self.doc, digest)
        return Served(encode(reply), (), name, awaits_push=not reply.in_sync)

    def serve_sync_push(self, peer: str, data: bytes, now_ms: int, wall_ms: int) -> Served:
        """The third leg of a sync served to ``peer``: its side of the buckets that differ.
        Answers the fourth leg: what it lacks there."""
        try:
            push = decode(data)
            if not isinstance(push, SyncPush):
                raise DecodeError("unexpected_type", "expected a sync push")
        except DecodeError as exc:
            self._count(f"refused.decode_{exc.reason}")
            return Served(b"", (), peer)
        result, back = on_push(self.doc, push, wall_ms)
        return Served(encode(back), tuple(self._after_merge(result, peer)), peer)

    def serve_push(self, src: Address, body: bytes, now_ms: int, wall_ms: int) -> Served:
        """A ``config-push``: a framed delta. Answers ``ok`` once merged (and, by the effects'
        order, persisted); a bad frame is answered with nothing."""
        try:
            name, data = unframe(body)
        except DecodeError as exc:
            self._count(f"refused.decode_{exc.reason}")
            return Served(b"")
        effects = self.merge_payload(data, name, wall_ms)[1]
        return Served(b"ok", tuple(effects), name)

    # ---- tombstone GC -----------------------------------------------------------------------

    def collect_garbage(self, now_ms: int, wall_ms: int) -> tuple[list[str], list[Effect]]:
        """Collect tombstones older than the grace period; returns (keys, effects)."""
        collected = self.doc.collect_garbage(wall_ms, self.config.gc_grace_ms)
        if not collected:
            return [], []
        self._count("tombstones_collected", len(collected))
        out: list[Effect] = []
        if self.config.compact_after is not None:
            # The log still holds the tombstones; a snapshot is what forgets them on disk.
            out.append(SaveSnapshot())
            self._log_rows = 0
        return collected, out

    # ---- internals --------------------------------------------------------------------------

    def _token(self, kind: ExchangeKind, peer: str) -> Exchange:
        self._seq += 1
        return Exchange(kind, self._seq, peer)

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[f"config.{name}"] += n


__all__ = [
    "SPREAD_CONCURRENCY_MAX",
    "SYNC_CONCURRENCY_MAX",
    "TAG",
    "ReplicaConfig",
    "ReplicaCore",
    "adopt_writer",
    "frame",
    "make_writer",
    "writes_as",
    "unframe",
]
