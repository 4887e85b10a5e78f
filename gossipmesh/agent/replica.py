"""The config replica inside the agent: a thin trio shell that carries out ``ReplicaCore``'s effects.

Theory of operation
-------------------
Every decision (what to persist, whom to tell, when to sync, what to forward, what to refuse) is
taken by the sans-IO core (``gossipmesh/crdt/replica.py``, the same code the simulator runs). This
module loads it from the store, feeds it the agent's inputs, and carries out the effects it returns
(``gossipmesh/crdt/effects.py``):

- ``Persist`` / ``SaveSnapshot``: ``store.append`` / ``store.save_snapshot`` (SQLite WAL,
  ``synchronous=FULL``: the commit returns after fsync), synchronously;
- ``Changed``: the change listeners (the data plane);
- ``Gossip``: an outbound channel drained by one task, which calls ``agent.queue_broadcast`` and
  ``agent.send_user_message`` (both go through SWIM's owner task); a packet-size refusal goes back
  to the core (``gossip_refused``), which answers with stream pushes;
- ``OpenExchange`` / ``SendSyncPush``: a task per exchange on the agent's streams (kinds
  ``config-sync`` and ``config-push``, with the agent's stream timeout, twice it for a sync; a
  sync's third leg and the fourth leg that answers it run on the same stream);
- ``SaveWriter``: the new writer id goes to the store's meta table;
- ``SetTimer``: a ``TimerHeap`` and one task that sleeps until the earliest deadline.

**One owner, no locks.** The core is only touched from the trio thread, and each input together
with the synchronous part of carrying out its effects (the fsync, the listeners, queuing the sends)
runs with no ``await`` in between. Trio switches tasks only at an ``await``, so each step is atomic
with respect to every other task: admin writes, merges from gossip, anti-entropy streams. SWIM's
owner task, which must not wait on an fsync, hands user messages over through a bounded channel
(``_inbox``; overflow is dropped and counted, anti-entropy repairs it).

**Durable before acknowledged.** The core puts ``Persist`` first in a step's effects and this shell
carries it out before anything else: only then is the HTTP request answered, a push acknowledged
with ``ok``, or the delta sent anywhere. Nobody can observe (read, sync or gossip) a write that
would not survive ``kill -9``. If the store fails, the exception propagates (the admin API answers
503) and the step's remaining effects are not carried out.

**Writer id and store.** ``DATA_DIR/replica.db`` keeps the deltas, a snapshot every
``compact_after`` rows, and the writer id ``NAME@EPOCH`` in its meta table (``make_writer`` /
``adopt_writer``). ``DATA_DIR/replica.acked`` (``ack_ledger.py``) records what this node
acknowledged under each writer id; a store that holds less at start-up is a loss, logged, counted,
flagged in ``/v1/health`` and recovered from peers, never a silently new node. Counters are the core's, in the agent's table: ``config.*`` in ``/v1/health``.

**Signed entries.** The document's ``ConfigAuthority`` is anchored in this node's configured roots
(``agent.identity``); every change of ``trust/`` or ``revocation/`` keys (and, once a minute, the
passing of time) is carried into ``agent.identity.trust``, the ``TrustStore`` the other mesh layers
consult (``trust_sync.py``). ``reload_roots`` re-anchors it after a roots.pem reload.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from gossipmesh.agent.ack_ledger import LEDGER_FILE, AckLedger, Shortfall
from gossipmesh.agent.timers import TimerHeap
from gossipmesh.agent.trust_sync import TrustSync
from gossipmesh.config.authority import ConfigAuthority
from gossipmesh.config.schema import check_entry
from gossipmesh.crdt import replication as policy
from gossipmesh.crdt.document import Conflict, Document, Entry, MergeResult, Version
from gossipmesh.crdt.effects import (
    Changed,
    Effect,
    ExchangeKind,
    Gossip,
    OpenExchange,
    Persist,
    Refused,
    SaveSnapshot,
    SaveWriter,
    SendSyncPush,
    SetTimer,
    SyncDone,
)
from gossipmesh.crdt.replica import (
    TAG,
    ReplicaConfig,
    ReplicaCore,
    adopt_writer,
    make_writer,
    writes_as,
)
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.errors import DecodeError, LimitExceededError, StoreCorruptError
from gossipmesh.ids import Address
from gossipmesh.store import COMPACT_AFTER_DELTAS, ReplicaStore, move_aside

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent, MemberEvent
    from gossipmesh.agent.streams import SealedStream

STORE_FILE = "replica.db"
INBOX_DEPTH = 256
GOSSIP_DEPTH = 256
EPOCH_META = "writer"
# What a failed exchange looks like from here: the peer is gone, slow, or spoke garbage framing.
TRANSPORT_ERRORS = (OSError, trio.TooSlowError, EOFError, DecodeError, trio.BrokenResourceError)

ChangeListener = Callable[[frozenset[str]], None]


class ConfigSource(Protocol):
    """What the data plane reads: effective values, and a nudge whenever any key changes."""

    def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]: ...

    def add_change_listener(self, fn: Callable[[frozenset[str]], None]) -> None: ...


def wall_ms() -> int:
    """HLC physical time: the real wall clock (the core never reads one itself)."""
    return int(time.time() * 1000)


def _now_ms() -> int:
    """Monotonic time from trio's clock (a MockClock in tests), for timers and report ages."""
    return int(trio.current_time() * 1000)


class ConfigReplica:
    """The agent's replica of the config document. Implements ``ConfigSource``."""

    def __init__(
        self,
        agent: Agent,
        *,
        document: Document,
        store: ReplicaStore | None,
        writer: str,
        sync_interval_ms: int = policy.DEFAULT_SYNC_INTERVAL_MS,
        gc_grace_ms: int = policy.DEFAULT_GC_GRACE_MS,
        gossip_max_bytes: int = policy.DEFAULT_GOSSIP_MAX_BYTES,
        compact_after: int = COMPACT_AFTER_DELTAS,
    ) -> None:
        self.agent = agent
        self.store = store
        self.counters = agent.counters  # the core counts into it: /v1/health shows config.*
        config = ReplicaConfig(
            sync_interval_ms=sync_interval_ms,
            gc_grace_ms=gc_grace_ms,
            gossip_max_bytes=gossip_max_bytes,
            compact_after=compact_after if store is not None else None,
        )
        self.core = ReplicaCore(
            agent.settings.name,
            document,
            writer,
            random.Random(agent.rng.getrandbits(64)),
            config,
            agent.counters,
            log_rows=store.log_length() if store is not None else 0,
        )
        self._listeners: list[ChangeListener] = []
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[Address, bytes]](
            INBOX_DEPTH
        )
        self._gossip_send, self._gossip_recv = trio.open_memory_channel[Gossip](GOSSIP_DEPTH)
        self._timers = TimerHeap()
        self._timers_changed = trio.Event()
        self._deferred: list[OpenExchange] = []  # exchanges asked for before run() started
        self._nursery: trio.Nursery | None = None
        self.ledger: AckLedger | None = None  # set by open() with a data dir
        self.lost: dict[str, Shortfall] = {}  # writer -> what is still missing (recovery state)
        # Started with no store and no ledger, as a new node: writer ids of this node's name from
        # an earlier life, found in what peers hand over, with their top counter. None: the
        # store was not new (its own ledger speaks for it).
        self.previous: dict[str, int] | None = None
        agent.health_extensions.append(self._health_section)
        # The mesh's TrustStore follows the document's revocations and root statements.
        self.trust_sync = TrustSync(document, agent.identity.trust, agent.counters)
        self.trust_sync.sync(wall_ms())
        agent.register_stream_handler(ExchangeKind.SYNC.value, self._serve_sync)
        agent.register_stream_handler(ExchangeKind.PUSH.value, self._serve_push)
        agent.add_user_message_handler(self._on_user_message)
        agent.add_member_listener(self._on_member_event)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def open(
        cls, agent: Agent, data_dir: Path | None, *, rebuild: bool = False, **options: Any
    ) -> ConfigReplica:
        """Load the replica from ``data_dir/replica.db`` (or keep it in memory without a data dir).

        Raises StoreCorruptError when the store is damaged and ``rebuild`` is False. With
        ``rebuild`` the damaged file is moved aside (never deleted) and the replica starts empty,
        under a new writer epoch, and fills up from peers.
        """
        rng = random.Random(agent.rng.getrandbits(64))
        name = agent.settings.name
        identity = agent.identity
        # Anchors: the roots this node was configured with (roots.pem, or the playground root).
        authority = ConfigAuthority(identity.cluster, identity.credentials.roots)

        def fresh() -> Document:
            return Document(authority, validator=check_entry)

        if data_dir is None:
            agent.log.warn("config_not_persisted", detail="no --data-dir: the replica is in memory")
            return cls(
                agent, document=fresh(), store=None, writer=make_writer(name, rng), **options
            )
        path = data_dir / STORE_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        store = ReplicaStore.open(path, rebuild=rebuild)
        try:
            document = store.load_document(fresh, wall_ms())
        except StoreCorruptError:
            store.close()
            if not rebuild:
                raise
            moved = move_aside(path)
            store = ReplicaStore.open(path)
            store_rebuilt_from: Path | None = moved
            document = fresh()
        else:
            store_rebuilt_from = store.rebuilt_from
        if store_rebuilt_from is not None:
            agent.log.warn("config_store_rebuilt", moved_to=str(store_rebuilt_from))
        try:
            ledger = AckLedger.load(data_dir)
        except ValueError as exc:
            agent.counters["config.ledger_unreadable"] += 1
            agent.log.error("config_ledger_unreadable", error=str(exc),
                            detail="losses of acknowledged writes cannot be detected this once")  # fmt: skip
            ledger = AckLedger(data_dir / LEDGER_FILE, {})
        short = ledger.shortfalls({w: document.top(w) for w in ledger.writers})
        raw = store.get_meta(EPOCH_META)
        writer = adopt_writer(None if raw is None else raw.decode(errors="replace"), name)
        if writer is not None and any(s.writer == writer for s in short):
            writer = None  # its counters above what survived were used: never reuse them
        if writer is None:
            writer = make_writer(name, rng)
            store.put_meta(EPOCH_META, writer.encode())
        agent.log.info("config_loaded", writer=writer, keys=len(document.keys()),
                       bytes=document.size_bytes)  # fmt: skip
        replica = cls(agent, document=document, store=store, writer=writer, **options)
        replica.ledger = ledger
        if not ledger.writers and not document.writers() and store_rebuilt_from is None:
            replica.previous = {}  # new by its own evidence: peers may know better
        if short:
            replica.lost = {s.writer: s for s in short}
            missing = sum(s.missing for s in short)
            agent.counters["config.store_lost"] += 1
            agent.counters["config.lost_writes"] += missing
            agent.log.error(
                "config_store_lost", path=str(path), missing=missing,
                writers={s.writer: {"acknowledged": s.acked, "found": s.found} for s in short},
                new_writer=writer,
                detail="the store holds fewer writes than this node acknowledged; "
                       "recovering them from peers (see /v1/health config_recovery)",
            )  # fmt: skip
        if document.top(writer):
            ledger.acknowledge(writer, document.top(writer))  # the store ran ahead before a crash
        return replica

    @property
    def doc(self) -> Document:
        return self.core.doc

    @property
    def writer(self) -> str:
        return self.core.writer

    # ---- ConfigSource -----------------------------------------------------------------------

    def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return list(self.doc.items(prefix))

    def add_change_listener(self, fn: ChangeListener) -> None:
        """``fn(keys)`` runs in the trio thread after every local write or merge that changed
        something; it must not block."""
        self._listeners.append(fn)

    # ---- reads for the admin API ------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self.doc.get(key)

    def siblings(self, key: str) -> tuple[Entry, ...]:
        return self.doc.siblings(key)

    def history(self, key: str) -> list[Version]:
        return self.doc.history(key)

    def conflicts(self) -> list[Conflict]:
        return self.doc.conflicts()

    def digest(self) -> dict[str, Any]:
        return {
            "root_hash": self.doc.root_hash.hex(),
            "keys": len(self.doc.keys()),
            "bytes": self.doc.size_bytes,
            "writer": self.writer,
        }

    # ---- inputs -----------------------------------------------------------------------------

    def prepare(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> tuple[Entry, ...]:
        """The unsigned entries that would write ``items``, for an operator to sign. Raises what
        ``Document.prepare`` raises. A new writer id, if the old one ran out, is stored first."""
        entries, effects = self.core.prepare(items, wall_ms())
        self._apply(effects)
        return entries

    def commit(self, entries: Sequence[Entry]) -> MergeResult:
        """Apply signed entries as one delta, durably, then start spreading it. Raises what
        ``Document.commit`` raises (stale, refused: nothing changed) or OSError/sqlite errors
        from the store. Synchronous on purpose: see "One owner" and "Durable before
        acknowledged" above."""
        result, effects = self.core.commit(entries, _now_ms(), wall_ms())
        self._apply(effects)
        if self.ledger is not None:
            self.ledger.acknowledge(self.writer, self.doc.top(self.writer))
        return result

    def reload_roots(self, roots: Sequence[bytes]) -> None:
        """This node's configured roots changed (a reloaded roots.pem): re-judge the document."""
        authority = self.doc.authority
        if isinstance(authority, ConfigAuthority) and authority.set_anchors(roots):
            changed = self.doc.refresh_policy()
            if changed:
                self._notify(changed)
            self.trust_sync.sync(wall_ms())

    def merge_payload(self, data: bytes, origin: str) -> MergeResult | None:
        """Decode and merge an encoded delta from a peer; bad bytes are refused and counted."""
        result, effects = self.core.merge_payload(data, origin, wall_ms())
        self._apply(effects)
        return result

    async def sync_with(self, name: str) -> bool:
        """One push-pull with member ``name`` as initiator; True if it completed."""
        for effect in self.core.sync_now(name):
            if isinstance(effect, OpenExchange):
                return await self._exchange(effect)
        return False

    def collect_garbage(self) -> list[str]:
        keys, effects = self.core.collect_garbage(_now_ms(), wall_ms())
        self._apply(effects)
        return keys

    def _on_user_message(self, src: Address, payload: bytes) -> None:
        # Runs in SWIM's owner task: hand over, never block it with a merge and an fsync.
        if not payload.startswith(TAG):
            return
        try:
            self._inbox_send.send_nowait((src, payload))
        except trio.WouldBlock:
            self.counters["config.dropped.inbox_full"] += 1

    def _on_member_event(self, event: MemberEvent) -> None:
        # Runs in SWIM's owner task; the core's answer (a sync to start, a timer) never blocks.
        if event.kind == "reap":
            self._apply(self.core.member_reaped(event.name))
        elif event.address is not None and event.state is not None:
            self._apply(self.core.member_changed(event.name, event.address, event.state,
                                                 event.previous, _now_ms()))  # fmt: skip
            if self.lost and event.state == "alive":
                self._apply(self.core.sync_now(event.name))  # recovering: ask everyone

    # ---- run --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Merge inbound gossip, send ours, run timers, anti-entropy and GC until the agent stops."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            deferred, self._deferred = self._deferred, []
            for exchange in deferred:
                nursery.start_soon(self._exchange, exchange)
            self._apply(self.core.start(_now_ms()))
            nursery.start_soon(self._inbox_loop)
            nursery.start_soon(self._gossip_loop)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._gc_loop)
            task_status.started()
            await self.agent.stopped.wait()
            nursery.cancel_scope.cancel()
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    async def _inbox_loop(self) -> None:
        async for src, payload in self._inbox_recv:
            self._apply(self.core.on_user_message(src, payload, _now_ms(), wall_ms()))

    async def _gossip_loop(self) -> None:
        async for effect in self._gossip_recv:
            try:
                if effect.broadcast:
                    await self.agent.queue_broadcast(effect.payload)
                if effect.fanout:
                    await self.agent.send_user_message(effect.payload, effect.fanout)
            except LimitExceededError:
                self._apply(self.core.gossip_refused(effect, _now_ms()))

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._timers.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline / 1000):
                await self._timers_changed.wait()
            self._timers_changed = trio.Event()
            now = _now_ms()
            for timer in self._timers.pop_due(now):
                self._apply(self.core.handle_timer(timer, now))

    async def _gc_loop(self) -> None:
        while True:
            await trio.sleep(self.core.gc_interval_ms() / 1000)
            self.collect_garbage()
            self.trust_sync.sync(wall_ms())  # a distrust or revocation whose time has come

    # ---- carrying out effects ---------------------------------------------------------------

    def _apply(self, effects: Sequence[Effect]) -> None:
        """Carry out one step's effects in order, synchronously (sends are only queued). If one
        raises (the store failed), the exchanges not started are reported failed to the core."""
        for i, effect in enumerate(effects):
            try:
                self._carry_out(effect)
            except BaseException:
                for rest in effects[i + 1 :]:
                    if isinstance(rest, OpenExchange):
                        self.core.exchange_failed(rest.token, _now_ms())
                raise
        if any(isinstance(e, Persist) for e in effects):
            if self.lost:
                self._check_recovery()  # a merge persisted something: maybe what was lost
            if self.previous is not None:
                self._check_previous_life()

    def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, Persist):
            if self.store is not None:
                self.store.append(encode_delta(effect.delta))
        elif isinstance(effect, SaveSnapshot):
            if self.store is not None:
                self.store.save_snapshot(self.core.doc)
        elif isinstance(effect, SaveWriter):
            if self.store is not None:
                self.store.put_meta(EPOCH_META, effect.writer.encode())
        elif isinstance(effect, Changed):
            if self.trust_sync.concerns(effect.keys):
                self.trust_sync.sync(wall_ms())
            self._notify(effect.keys)
        elif isinstance(effect, Gossip):
            try:
                self._gossip_send.send_nowait(effect)
            except trio.WouldBlock:
                self.counters["config.dropped.gossip_full"] += 1  # anti-entropy will carry it
        elif isinstance(effect, OpenExchange):
            if self._nursery is None:
                self._deferred.append(effect)
            else:
                self._nursery.start_soon(self._exchange, effect)
        elif isinstance(effect, SetTimer):
            self._timers.push(effect.timer, effect.at_ms)
            self._timers_changed.set()
        elif isinstance(effect, Refused):
            event = "config_delta_refused" if effect.whole_delta else "config_entries_refused"
            self.agent.log.warn(event, origin=effect.origin, reasons=list(effect.reasons))
        elif isinstance(effect, SyncDone):
            self.agent.log.debug("config_synced", peer=effect.token.peer, in_sync=effect.in_sync,
                                 received=effect.received_bytes, pushed=effect.pushed_bytes)  # fmt: skip
        else:
            # SendSyncPush belongs to the exchange that asked for it (see _exchange).
            raise TypeError(f"cannot carry out {effect!r} here")

    def _check_recovery(self) -> None:
        """Count what peers handed back of the lost writes; end the recovery state when done."""
        for writer, short in list(self.lost.items()):
            now = min(self.doc.top(writer), short.acked)
            if now > short.found:
                self.counters["config.recovered_writes"] += now - short.found
                short = self.lost[writer] = Shortfall(writer, short.acked, now)
            if not short.missing:
                del self.lost[writer]
        if not self.lost:
            self.agent.log.warn("config_store_recovered",
                                recovered=self.counters["config.recovered_writes"])  # fmt: skip

    def _check_previous_life(self) -> None:
        """A node that started with an empty data dir (no store, no ledger) is only new if no
        peer holds writes made under its name before. If one does, its data dir was lost (or a
        new host took an old name): said loudly, counted, shown in /v1/health, and the ledger
        takes those writes over so that a later loss of them is detected like any other. The
        writes themselves come back with anti-entropy; any no peer received are gone, and
        without the old ledger nobody can say how many."""
        previous = self.previous
        assert previous is not None
        name = self.agent.settings.name
        for writer in self.doc.writers():
            if writer == self.writer or not writes_as(writer, name):
                continue
            top = self.doc.top(writer)
            if previous.get(writer, 0) >= top:
                continue
            if writer not in previous:
                self.counters["config.previous_writers"] += 1
                self.agent.log.error(
                    "config_previous_writer", writer=writer, entries=top, own_writer=self.writer,
                    detail="this node started with an empty data dir, but peers hold writes made "
                           "under its name before: its data dir was lost, or an old name was "
                           "reused; they are restored from peers, writes no peer received are "
                           "gone",
                )  # fmt: skip
            previous[writer] = top
            if self.ledger is not None:
                self.ledger.acknowledge(writer, top)

    def _health_section(self, health: dict[str, Any]) -> None:
        if self.previous:
            health["config_previous_writers"] = dict(self.previous)
        if not self.lost:
            return
        missing = sum(s.missing for s in self.lost.values())
        health["config_recovery"] = {
            w: {"acknowledged": s.acked, "found": s.found, "missing": s.missing}
            for w, s in self.lost.items()
        }
        health["reasons"].append(
            f"config store lost {missing} acknowledged writes; recovering them from peers"
        )
        if health["status"] == "ok":
            health["status"] = "degraded"

    def _notify(self, keys: frozenset[str]) -> None:
        for fn in list(self._listeners):
            try:
                fn(keys)
            except Exception as exc:  # a listener bug must not stop replication
                self.counters["config.listener_errors"] += 1
                self.agent.log.error("config_listener_error", error=repr(exc))

    async def _exchange(self, effect: OpenExchange) -> bool:
        """Run one exchange this core started; True if it completed (the reply handled and, for
        a sync that found differences, the third leg sent and the fourth handed back). A
        transport failure before the core has the last answer goes back to it as
        ``exchange_failed``, so every token is settled exactly once."""
        token = effect.token
        timeout_s = self.agent.stream_timeout_s * (2 if token.kind is ExchangeKind.SYNC else 1)
        unsettled = True  # until the core has had its last answer
        try:
            with trio.fail_after(timeout_s):
                stream = await self.agent.open_stream(effect.to, token.kind.value, effect.body)
                try:
                    reply = await stream.receive()
                    effects = self.core.exchange_reply(token, reply, _now_ms(), wall_ms())
                    pushes = [e for e in effects if isinstance(e, SendSyncPush)]
                    unsettled = bool(pushes)
                    self._apply([e for e in effects if not isinstance(e, SendSyncPush)])
                    for push in pushes:  # at most one: the sync's third leg
                        await stream.send(push.data)
                        back = await stream.receive()
                        unsettled = False
                        self._apply(self.core.sync_push_reply(token, back, _now_ms(), wall_ms()))
                finally:
                    await stream.aclose()
        except TRANSPORT_ERRORS:
            if unsettled:
                self._apply(self.core.exchange_failed(token, _now_ms()))
            return False
        return True

    # ---- serving peers' exchanges -----------------------------------------------------------

    async def _serve_sync(self, stream: SealedStream, src: Address, body: bytes) -> None:
        served = self.core.serve_sync(src, body, _now_ms(), wall_ms())
        self._apply(served.effects)
        if not served.reply:
            return  # refused (counted by the core): close without an answer
        await stream.send(served.reply)
        if not served.awaits_push:
            return
        try:
            data = await stream.receive()
        except (EOFError, DecodeError):
            return  # the initiator went away: its next sync will repair whatever is left
        third = self.core.serve_sync_push(served.peer, data, _now_ms(), wall_ms())
        self._apply(third.effects)  # Persist first: the answer below follows what is durable
        if third.reply:
            await stream.send(third.reply)

    async def _serve_push(self, stream: SealedStream, src: Address, body: bytes) -> None:
        served = self.core.serve_push(src, body, _now_ms(), wall_ms())
        self._apply(served.effects)  # Persist first: the "ok" below means durable
        if served.reply:
            await stream.send(served.reply)


__all__ = ["ConfigReplica", "ConfigSource", "TAG"]
