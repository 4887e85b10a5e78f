"""The config replica inside the agent: one Document, its durable store, and how deltas travel.

Theory of operation
-------------------
**One owner, no locks.** The ``Document`` is only ever touched from the trio thread, and every
read-modify-persist sequence is synchronous (no ``await`` between reading the document, changing
it and appending the change to the store). Trio never switches tasks except at an ``await``, so
each such section is atomic with respect to every other task: admin writes, merges from gossip,
anti-entropy streams. We chose this over a dedicated owner task with its own channel because every
mutation is short and CPU-bound (a merge, one SQLite commit), and the channel would only add a hop.
The one input that arrives on a task that must not block, SWIM's owner task (user messages), is
handed over through a bounded memory channel (``_inbox``; overflow is dropped and counted, since
anti-entropy repairs whatever is lost).

**Writer id.** Each replica writes under ``NAME@EPOCH``, where the epoch is drawn at random when
the store is created and kept in the store's meta table. Counters are then never reused: a node
whose store was rebuilt (moved aside, started empty) gets a new epoch, so its first write is not
mistaken for the old ``(writer, 1)`` that peers already hold. A store that survives keeps its
epoch and its counters (they are loaded back with the entries).

**Durable before acknowledged.** A local write is ``apply_batch`` then ``store.append`` (SQLite
WAL, ``synchronous=FULL``: the commit returns after fsync), in one synchronous section; only then
is the HTTP request answered and the delta sent anywhere. Nobody can observe (read, sync or gossip)
a write that would not survive ``kill -9``. Merged remote deltas are persisted the same way. The
log is compacted into a snapshot every ``compact_after`` rows.

**Replication** (the decisions are pure functions in ``gossipmesh/crdt/replication.py``, shared
with the simulator):

1. A new local delta, tagged ``b"C"``, is queued on SWIM's piggyback broadcast (relayed cluster-wide)
   and sent at once as a direct user message to 3 random alive members, when it fits a packet; a
   larger one goes over TCP (stream kind ``config-push``) to 3 random alive members.
2. A node that merges a delta and finds something new re-sends just the new part eagerly to 2
   members, so spread time is a few network latencies rather than gossip rounds.
3. Anti-entropy: every ``sync_interval_ms`` (±25%, scaled with cluster size) one push-pull
   (stream kind ``config-sync``: digest → reply → push, ``crdt/sync.py``) with a random live
   member; at once with a member that joined or came back after suspect/dead (a partition heal).
4. Tombstone GC: each digest tells us the peer's version vector; the pointwise minimum over every
   live member (``replication.gc_stable_vector``) plus a grace period decides what is collected.
   Stale reports are safe: version vectors only grow, so an old one is a lower bound.

Remote deltas that fail to decode, or whose entries fail validation or limits, are refused and
counted (``config.refused.*`` in ``/v1/health``); refused entries are never merged, persisted or
forwarded (``Document.merge`` keeps them out of ``forward``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from gossipmesh.config.schema import check_entry
from gossipmesh.crdt import replication as policy
from gossipmesh.crdt.document import Conflict, Context, Delta, Document, Entry, MergeResult, Version
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
from gossipmesh.errors import DecodeError, LimitExceededError, StoreCorruptError
from gossipmesh.ids import Address
from gossipmesh.store import COMPACT_AFTER_DELTAS, ReplicaStore, move_aside

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent, MemberEvent
    from gossipmesh.agent.streams import SealedStream

TAG = b"C"  # first byte of a config payload on SWIM user messages (b"R" is node records)
STORE_FILE = "replica.db"
INBOX_DEPTH = 256
TRIGGER_DEPTH = 64
SYNC_CONCURRENCY_MAX = 2
SPREAD_CONCURRENCY_MAX = 16
GC_CHECK_INTERVAL_S = 30.0
EPOCH_META = "writer"
MAX_WRITER_NAME_BYTES = 119  # + "@" + 8 hex digits = the document's 128-byte writer limit

ChangeListener = Callable[[frozenset[str]], None]


class ConfigSource(Protocol):
    """What the data plane reads: effective values, and a nudge whenever any key changes."""

    def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]: ...

    def add_change_listener(self, fn: Callable[[frozenset[str]], None]) -> None: ...


def wall_ms() -> int:
    """HLC physical time: the real wall clock (the document never reads one itself)."""
    return int(time.time() * 1000)


def frame(name: str, data: bytes) -> bytes:
    """First-frame body of a config stream: who is speaking (for GC bookkeeping), then the message."""
    raw = name.encode()
    return bytes((len(raw),)) + raw + data


def unframe(body: bytes) -> tuple[str, bytes]:
    if not body or len(body) < 1 + body[0] or body[0] == 0:
        raise DecodeError("config_frame", "bad sender name")
    n = body[0]
    try:
        name = body[1 : 1 + n].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("config_frame", "sender name is not UTF-8") from exc
    return name, body[1 + n :]


def make_writer(name: str, rng: random.Random) -> str:
    short = name.encode()[:MAX_WRITER_NAME_BYTES].decode(errors="ignore") or "node"
    return f"{short}@{rng.getrandbits(32):08x}"


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
        self.doc = document
        self.store = store
        self.writer = writer
        self.sync_interval_ms = sync_interval_ms
        self.gc_grace_ms = gc_grace_ms
        self.gossip_max_bytes = gossip_max_bytes
        self.compact_after = compact_after
        self.counters = agent.counters  # one counter table: /v1/health shows ours as config.*
        self.rng = random.Random(agent.rng.getrandbits(64))
        self._listeners: list[ChangeListener] = []
        self._members: dict[str, tuple[Address, str]] = {}  # name -> (gossip address, state)
        self._reported: dict[str, tuple[dict[str, int], int]] = {}  # name -> (vv, now_ms)
        self._log_rows = store.log_length() if store is not None else 0
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[Address, bytes]](
            INBOX_DEPTH
        )
        self._trigger_send, self._trigger_recv = trio.open_memory_channel[str](TRIGGER_DEPTH)
        self._syncs = 0
        self._spreads = 0
        self._nursery: trio.Nursery | None = None
        agent.register_stream_handler("config-sync", self._serve_sync)
        agent.register_stream_handler("config-push", self._serve_push)
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

        def fresh() -> Document:
            return Document(validator=check_entry)

        if data_dir is None:
            agent.log.warn("config_not_persisted", detail="no --data-dir: the replica is in memory")
            return cls(agent, document=fresh(), store=None,
                       writer=make_writer(agent.settings.name, rng), **options)  # fmt: skip
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
        writer = _stored_writer(store, agent.settings.name)
        if writer is None:
            writer = make_writer(agent.settings.name, rng)
            store.put_meta(EPOCH_META, writer.encode())
        agent.log.info("config_loaded", writer=writer, keys=len(document.keys()),
                       bytes=document.size_bytes)  # fmt: skip
        return cls(agent, document=document, store=store, writer=writer, **options)

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
            "version_vector": self.doc.version_vector(),
            "keys": len(self.doc.keys()),
            "bytes": self.doc.size_bytes,
            "writer": self.writer,
        }

    # ---- local writes -----------------------------------------------------------------------

    def commit(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> Delta:
        """Write ``items`` as one delta, durably, then start spreading it. Raises what
        ``Document.apply_batch`` raises (nothing changed) or OSError/sqlite errors from the store.

        Synchronous on purpose: see "One owner" and "Durable before acknowledged" above.
        """
        delta = self.doc.apply_batch(items, self.writer, wall_ms())
        if not delta.entries:
            return delta
        payload = encode_delta(delta)
        self._persist(payload)
        self.counters["config.local_writes"] += 1
        self._notify(frozenset(e.key for e in delta.entries))
        self._spread(payload, policy.plan_spread(len(payload) + 1, self.gossip_max_bytes))
        return delta

    # ---- run --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Merge inbound gossip, run anti-entropy and GC until the agent stops."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._inbox_loop)
            nursery.start_soon(self._sync_loop)
            nursery.start_soon(self._gc_loop)
            task_status.started()
            await self.agent.stopped.wait()
            nursery.cancel_scope.cancel()
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- merging ----------------------------------------------------------------------------

    def merge_payload(self, data: bytes, origin: str) -> MergeResult | None:
        """Decode and merge an encoded delta from a peer; refuse (and count) bad bytes."""
        try:
            delta = decode_delta(data)
        except DecodeError as exc:
            self.counters["config.refused"] += 1
            self.counters[f"config.refused.decode_{exc.reason}"] += 1
            self.agent.log.warn("config_delta_refused", origin=origin, reason=str(exc))
            return None
        root = self.doc.root_hash
        result = self.doc.merge(delta, wall_ms())
        self._after_merge(result, delta.context, root, origin)
        return result

    def _after_merge(self, result: MergeResult, context: Context, root: bytes, origin: str) -> None:
        """Count, persist, notify and forward what a merge did (still in the same sync section)."""
        if result.refused:
            self.counters["config.refused"] += result.refused
            for reason in result.refused_reasons:
                self.counters[f"config.refused.{reason}"] += 1
            self.agent.log.warn("config_entries_refused", origin=origin,
                                reasons=sorted(set(result.refused_reasons)))  # fmt: skip
        if result.drifted:
            self.counters["config.drift_exceeded"] += len(result.drifted)
        if self.doc.root_hash == root and not result.accepted:
            return  # nothing new: nothing to persist or forward (this ends the epidemic)
        entries = result.forward.entries if result.forward is not None else ()
        payload = encode_delta(Delta(entries, context))
        self._persist(payload)
        self.counters["config.merged_entries"] += result.accepted
        if result.changed_keys:
            self._notify(result.changed_keys)
        if result.forward is not None:
            # Not ``payload``: the incoming context may name dots of entries we held and left out
            # (see MergeResult.forward); we persist it, but only forward the new entries' dots.
            fwd = encode_delta(result.forward)
            self._spread(fwd, policy.plan_forward(len(fwd) + 1, self.gossip_max_bytes))

    def _persist(self, payload: bytes) -> None:
        if self.store is None:
            return
        self.store.append(payload)
        self._log_rows += 1
        if self._log_rows >= self.compact_after:
            self.store.save_snapshot(self.doc)
            self._log_rows = 0
            self.counters["config.snapshots"] += 1

    def _notify(self, keys: frozenset[str]) -> None:
        for fn in list(self._listeners):
            try:
                fn(keys)
            except Exception as exc:  # a listener bug must not stop replication
                self.counters["config.listener_errors"] += 1
                self.agent.log.error("config_listener_error", error=repr(exc))

    # ---- gossip in and out ------------------------------------------------------------------

    def _on_user_message(self, src: Address, payload: bytes) -> None:
        # Runs in SWIM's owner task: hand over, never block it with a merge and an fsync.
        if not payload.startswith(TAG):
            return
        try:
            self._inbox_send.send_nowait((src, payload[1:]))
        except trio.WouldBlock:
            self.counters["config.dropped.inbox_full"] += 1

    async def _inbox_loop(self) -> None:
        async for src, data in self._inbox_recv:
            self.counters["config.gossip_received"] += 1
            self.merge_payload(data, str(src))

    def _spread(self, payload: bytes, plan: policy.Spread) -> None:
        if self._nursery is None or self._spreads >= SPREAD_CONCURRENCY_MAX:
            # Not running yet, or a burst: anti-entropy will carry it within a period.
            self.counters["config.spread_skipped"] += 1
            return
        self._spreads += 1
        self._nursery.start_soon(self._spread_task, payload, plan)

    async def _spread_task(self, payload: bytes, plan: policy.Spread) -> None:
        try:
            stream_fanout = plan.stream_fanout
            tagged = TAG + payload
            try:
                if plan.gossip:
                    await self.agent.queue_broadcast(tagged)
                if plan.udp_fanout:
                    await self.agent.send_user_message(tagged, plan.udp_fanout)
                    self.counters["config.eager_sent"] += 1
            except LimitExceededError:
                # Our size estimate was off (packet framing): fall back to streams.
                stream_fanout = max(stream_fanout, plan.udp_fanout)
            if stream_fanout:
                targets = policy.pick_peers(self._live_peers(alive_only=True), stream_fanout,
                                            self.rng)  # fmt: skip
                async with trio.open_nursery() as nursery:
                    for name in targets:
                        nursery.start_soon(self._push_to, name, payload)
        finally:
            self._spreads -= 1

    async def _push_to(self, name: str, payload: bytes) -> None:
        address = self._members[name][0]
        try:
            with trio.fail_after(self.agent.stream_timeout_s):
                stream = await self.agent.open_stream(
                    address, "config-push", frame(self.agent.settings.name, payload)
                )
                try:
                    await stream.receive()  # the ack: the peer has merged (and persisted) it
                finally:
                    await stream.aclose()
            self.counters["config.push_sent"] += 1
        except (OSError, trio.TooSlowError, EOFError, DecodeError, trio.BrokenResourceError):
            self.counters["config.push_failed"] += 1

    async def _serve_push(self, stream: SealedStream, src: Address, body: bytes) -> None:
        name, data = unframe(body)
        self.merge_payload(data, name)
        await stream.send(b"ok")

    # ---- anti-entropy -----------------------------------------------------------------------

    def _on_member_event(self, event: MemberEvent) -> None:
        if event.name == self.agent.settings.name:
            return
        if event.kind == "reap":
            self._members.pop(event.name, None)
            self._reported.pop(event.name, None)
            return
        if event.address is not None and event.state is not None:
            self._members[event.name] = (event.address, event.state)
        if policy.sync_on_member_event(event.kind, event.previous):
            try:
                self._trigger_send.send_nowait(event.name)
            except trio.WouldBlock:
                self.counters["config.dropped.sync_trigger"] += 1

    def _live_peers(self, alive_only: bool = False) -> list[str]:
        ok = ("alive",) if alive_only else ("alive", "suspect")
        return [n for n, (_, state) in self._members.items() if state in ok]

    async def _sync_loop(self) -> None:
        while True:
            n = len(self._live_peers()) + 1
            wait_ms = policy.jittered_ms(
                policy.sync_interval_ms(self.sync_interval_ms, n), self.rng
            )
            target: str | None = None
            with trio.move_on_after(wait_ms / 1000):
                target = await self._trigger_recv.receive()
            if target is None:
                peers = policy.pick_peers(self._live_peers(), 1, self.rng)
                if not peers:
                    continue
                target = peers[0]
            if self._syncs >= SYNC_CONCURRENCY_MAX:
                self.counters["config.sync_skipped"] += 1
                continue
            assert self._nursery is not None
            self._syncs += 1
            self._nursery.start_soon(self._sync_task, target)

    async def _sync_task(self, name: str) -> None:
        try:
            await self.sync_with(name)
        finally:
            self._syncs -= 1

    async def sync_with(self, name: str) -> bool:
        """One push-pull with member ``name`` as initiator; True if it completed."""
        member = self._members.get(name)
        if member is None:
            return False
        me = self.agent.settings.name
        digest = make_digest(self.doc)
        sent = len(encode(digest))
        try:
            with trio.fail_after(self.agent.stream_timeout_s * 2):
                stream = await self.agent.open_stream(
                    member[0], "config-sync", frame(me, encode(digest))
                )
                try:
                    raw = await stream.receive()
                    reply = decode(raw)
                    if not isinstance(reply, SyncReply):
                        raise DecodeError("unexpected_type", "expected a sync reply")
                    now = _now_ms()
                    if reply.in_sync or reply.context is None:
                        # Equal roots mean equal contexts (they are part of the hash).
                        self._reported[name] = (dict(digest.context.vv), now)
                        self.counters["config.sync_in_sync"] += 1
                        self.counters["config.sync_bytes"] += sent + len(raw)
                        return True
                    self._reported[name] = (dict(reply.context.vv), now)
                    root = self.doc.root_hash
                    handled = handle(self.doc, reply, wall_ms())
                    if handled.merged is not None and reply.delta is not None:
                        self._after_merge(handled.merged, reply.delta.context, root, name)
                    push = handled.reply
                    pushed = b""
                    if isinstance(push, SyncPush):
                        pushed = encode(push)
                        await stream.send(pushed)
                    self.counters["config.sync_repaired"] += 1
                    self.counters["config.sync_bytes"] += sent + len(raw) + len(pushed)
                finally:
                    await stream.aclose()
        except DecodeError as exc:
            self.counters["config.sync_failed"] += 1
            self.counters[f"config.refused.decode_{exc.reason}"] += 1
            return False
        except (OSError, trio.TooSlowError, EOFError, trio.BrokenResourceError):
            self.counters["config.sync_failed"] += 1
            return False
        return True

    async def _serve_sync(self, stream: SealedStream, src: Address, body: bytes) -> None:
        name, data = unframe(body)
        digest = decode(data)
        if not isinstance(digest, Digest):
            raise DecodeError("unexpected_type", "expected a digest")
        self._reported[name] = (dict(digest.context.vv), _now_ms())
        reply = handle(self.doc, digest, wall_ms()).reply
        assert isinstance(reply, SyncReply)
        await stream.send(encode(reply))
        if reply.in_sync:
            return
        try:
            raw = await stream.receive()
        except EOFError:
            return  # the initiator had nothing we lack
        push = decode(raw)
        if not isinstance(push, SyncPush):
            raise DecodeError("unexpected_type", "expected a sync push")
        root = self.doc.root_hash
        handled = handle(self.doc, push, wall_ms())
        if handled.merged is not None:
            self._after_merge(handled.merged, push.delta.context, root, name)

    # ---- tombstone GC -----------------------------------------------------------------------

    def collect_garbage(self) -> list[str]:
        live = self._live_peers()
        stable = policy.gc_stable_vector(self.doc.version_vector(), live, self._reported, _now_ms())
        if stable is None:
            return []
        collected = self.doc.collect_garbage(stable, wall_ms(), self.gc_grace_ms)
        if collected:
            self.counters["config.tombstones_collected"] += len(collected)
            if self.store is not None:
                # The log still holds the tombstones; a snapshot is what forgets them on disk.
                self.store.save_snapshot(self.doc)
                self._log_rows = 0
        return collected

    async def _gc_loop(self) -> None:
        while True:
            await trio.sleep(min(GC_CHECK_INTERVAL_S, max(1.0, self.gc_grace_ms / 1000)))
            self.collect_garbage()


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


def _stored_writer(store: ReplicaStore, name: str) -> str | None:
    raw = store.get_meta(EPOCH_META)
    if raw is None:
        return None
    writer = raw.decode(errors="replace")
    short = name.encode()[:MAX_WRITER_NAME_BYTES].decode(errors="ignore")
    # A store carried over to a renamed node starts a new writer rather than speak for the old one.
    return writer if writer.startswith(short + "@") else None


__all__ = ["ConfigReplica", "ConfigSource", "TAG", "frame", "unframe"]
