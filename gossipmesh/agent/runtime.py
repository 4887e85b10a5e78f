"""The trio runtime around the sans-IO SWIM core: one owner task, its inputs, effects, extension points.

Theory of operation
-------------------
Exactly one task (``_owner``) touches the ``SwimNode``. Everything else talks to it through one
bounded memory channel of inputs:

- ``_Packet``: a UDP datagram that already decrypted. The UDP receive loop enqueues it with
  ``send_nowait``; when the queue is full the packet is dropped and counted
  (``dropped.queue_full``), so a flood costs CPU but never memory, and SWIM tolerates loss.
- ``_Call``: "run this function against the node and give me its result": commands from the admin
  API, push-pull requests and replies, joins, leave, user payloads. A call is
  ``fn(node, now_ms) -> (result, effects)``; the owner applies the effects, then replies.

Between inputs the owner fires due timers from a heap (``TimerHeap``); it sleeps in ``receive``
with a deadline at the earliest timer, so no task is spawned per timer and ``autojump_clock``
works. ``now_ms`` is ``trio.current_time()`` in integer milliseconds.

Bugs surface here. The core counts hostile input and never raises on it, so an exception out of
it is a bug. ``_run_core`` is the one place the agent calls the core (every packet, timer and call
goes through it): a bug is logged as a ``core_error`` event with its traceback and counted
(``core.errors``), its effects are lost, and the agent keeps running -- one bad input must not take
a member out of its cluster. The caller of a ``_Call`` gets ``CoreError`` (caused by the bug)
instead of a result. A ``GossipmeshError`` out of a call is not a bug but a refusal (a payload too
big for a packet, bad metadata; the core changed nothing): it goes back to the caller as it is.

Effects are applied in order by the owner: ``SendPacket`` is sealed and sent; ``SetTimer`` goes on
the heap; ``StartPushPull`` starts a bounded background exchange (``push_pull.py``) that feeds its
outcome back as a ``_Call``; ``MemberChanged``/``MemberReaped`` are logged and published to
listeners (``events.py``); ``UserMessage`` goes to registered user-message handlers.

The parts, one file each: ``transport.py`` (binding, sealed UDP and TCP streams),
``events.py`` (member events and their listeners), ``push_pull.py`` (push-pull over TCP),
``join.py`` (joining, with retries at boot).

Extension points (for the config replica, the proxy, health checks):

- ``register_stream_handler(kind, handler)``: serve a new TCP stream kind on the gossip port;
  ``open_stream(address, kind, first_body)`` is the client side. Frames are sealed like packets.
- ``add_member_listener(fn)`` (sync, called in the owner task) or ``subscribe_members()`` (a
  bounded receive channel of ``MemberEvent``) for membership changes.
- ``add_user_message_handler(fn)``; ``queue_broadcast(payload)``; ``send_user_message(payload, k)``.
- ``router.add(method, path, handler)`` for admin API routes; ``health_extensions`` (sync
  ``fn(health)``) to add a section or a degraded reason to ``/v1/health``.
- ``call(fn)`` to run anything else against the core, serialised with every other input.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from gossipmesh.admin_token import TokenFileError
from gossipmesh.agent.admin_auth import AdminAuth
from gossipmesh.agent.admin_tls import admin_ssl_context
from gossipmesh.agent.decrypt_watch import DecryptWatch
from gossipmesh.agent.events import (
    SUBSCRIBER_BUFFER,
    MemberEvent,
    MemberEvents,
    MemberListener,
    wall_ms,
)
from gossipmesh.agent.http import HTTPServer, Router
from gossipmesh.agent.join import Joiner
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.membership_auth import build_authority, watch_trust
from gossipmesh.agent.node_identity import AgentIdentity, build_identity
from gossipmesh.agent.push_pull import PushPullStreams
from gossipmesh.agent.settings import AgentSettings
from gossipmesh.agent.status import degraded_reasons
from gossipmesh.agent.store import DataDir
from gossipmesh.agent.streams import SealedStream
from gossipmesh.agent.timers import TimerHeap
from gossipmesh.agent.transport import AgentStartError, StreamHandler, Transport, bind
from gossipmesh.crypto import SEAL_OVERHEAD, Keyring, save_keyring_file
from gossipmesh.errors import CoreError, GossipmeshError
from gossipmesh.ids import Address, Millis
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
from gossipmesh.swim.member import Member, MemberState, event_kind
from gossipmesh.swim.node import SwimNode

if TYPE_CHECKING:
    from gossipmesh.agent.replica import ConfigSource

T = TypeVar("T")

INPUT_QUEUE_DEPTH = 1024  # inputs waiting for the owner; UDP beyond this is dropped
LEAVE_FLUSH_S = 1.0
LEAVE_NOTIFY_MAX = 16  # members told directly (push-pull) that we leave; gossip tells the rest
PEERS_SAVE_INTERVAL_S = 1.0
# A saved incarnation at or above this is refused at boot (the core's limit is 2**62).
MAX_BOOT_INCARNATION = 1 << 61


CoreCall = Callable[[SwimNode, Millis], tuple[T, list[Effect]]]


@dataclass(slots=True)
class _Packet:
    src: Address
    data: bytes

    def __call__(self, node: SwimNode, now: Millis) -> tuple[None, list[Effect]]:
        return None, node.handle_packet(self.src, self.data, now)


@dataclass(slots=True)
class _Due:
    timer: object  # the core's own timer, handed back as it was set

    def __call__(self, node: SwimNode, now: Millis) -> tuple[None, list[Effect]]:
        return None, node.handle_timer(self.timer, now)


@dataclass(slots=True)
class _Call:
    fn: CoreCall[Any]
    reply: trio.MemorySendChannel[tuple[bool, Any]] | None


UserMessageHandler = Callable[[Address, bytes], None]


def now_ms() -> Millis:
    return int(trio.current_time() * 1000)


class Agent:
    """One gossipmesh agent: a SWIM node, its transports and its admin API, in one trio process."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        keyring: Keyring,
        keyring_path: Path | None = None,
        log: EventLog | None = None,
        swim_config: SwimConfig | None = None,
        identity: AgentIdentity | None = None,
    ) -> None:
        self.settings = settings
        # Who we are and whom we trust (agent/node_identity.py). Without one given, the playground
        # identity, which ``build_identity`` grants only to an agent confined to loopback.
        self.identity = (
            identity
            if identity is not None
            else build_identity(settings, has_key=False, now_ms=wall_ms())
        )
        self.keyring = keyring
        self.keyring_path = keyring_path
        self.log = log if log is not None else EventLog(level=settings.log_level)
        self.store = DataDir(settings.data_dir, self.log) if settings.data_dir is not None else None
        cfg = self.swim_config = (
            swim_config if swim_config is not None else SwimConfig.preset(settings.profile)
        )
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8), "big")
        self.rng = random.Random(seed)
        self.counters: Counter[str] = Counter()
        self.router = Router()
        # Streams time out as a whole, after the core's push-pull timeout.
        self.stream_timeout_s = cfg.push_pull_timeout_ms / 1000
        self.transport = Transport(
            keyring,
            settings.cluster,
            self.counters,
            max_packet_bytes=cfg.packet_size_bytes + SEAL_OVERHEAD,
            max_frame_bytes=cfg.push_pull_max_bytes + SEAL_OVERHEAD,
            stream_timeout_s=self.stream_timeout_s,
        )
        # Messages no installed key opens: logged once per address per minute (health reports).
        self.decrypt_watch = DecryptWatch(self.log)
        self.transport.on_open_failure = self.decrypt_watch.record
        # The admin API's bearer token (agent/admin_auth.py); its file is written by ``run``.
        self.admin_auth = AdminAuth(settings.admin, settings.data_dir, self.counters, self.log)
        self.admin_tls = admin_ssl_context(settings)  # TLS 1.3 on a non-loopback admin address
        self.events = MemberEvents(self.log, self.counters)
        self.push_pulls = PushPullStreams(self)
        self.joiner = Joiner(self, self.push_pulls)
        self._user_handlers: list[UserMessageHandler] = []
        self._timers = TimerHeap()
        self._send_in, self._recv_in = trio.open_memory_channel[_Packet | _Call](INPUT_QUEUE_DEPTH)
        # Alive members but us, by name, as the core reported them: saved as peers to rejoin.
        self._peers: dict[str, Address] = {}
        self._peers_dirty = False
        self._node: SwimNode | None = None
        self._nursery: trio.Nursery | None = None
        self.address: Address | None = None  # advertised gossip address, once bound
        self.admin_address: Address | None = None
        self.leaving = False
        self._stopped = trio.Event()
        # The config replica (``agent/replica.py``), set by the composition root; the data plane
        # reads it as a ``ConfigSource``.
        self.config: ConfigSource | None = None
        # ``fn(health)`` may add to ``/v1/health``'s answer (the sidecar's data plane section).
        self.health_extensions: list[Callable[[dict[str, Any]], None]] = []
        self.register_stream_handler("pushpull", self.push_pulls.serve)
        from gossipmesh.agent.admin import install_admin_routes
        from gossipmesh.agent.keyops import install_keyops

        install_keyops(self)
        install_admin_routes(self)

    # ---- extension points -------------------------------------------------------------------

    @property
    def transport_filter(self) -> Callable[[Address], bool] | None:
        """Fault injection (``agent/faults.py``): True drops traffic to/from that gossip address
        (port 0: any port on the host), on every path."""
        return self.transport.filter

    @transport_filter.setter
    def transport_filter(self, fn: Callable[[Address], bool] | None) -> None:
        self.transport.filter = fn

    def register_stream_handler(self, kind: str, handler: StreamHandler) -> None:
        """Serve TCP streams whose first frame names ``kind``. The handler owns the stream."""
        self.transport.register_stream_handler(kind, handler)

    def add_member_listener(self, fn: MemberListener) -> None:
        """``fn(event)`` runs in the owner task for every member change; it must not block."""
        self.events.add_listener(fn)

    def subscribe_members(
        self, buffer: int = SUBSCRIBER_BUFFER
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[MemberEvent]]:
        """A bounded channel of member events; a subscriber that lags loses events (counted)."""
        return self.events.subscribe(buffer)

    def add_user_message_handler(self, fn: UserMessageHandler) -> None:
        """``fn(src, payload)`` runs in the owner task for each user payload; it must not block."""
        self._user_handlers.append(fn)

    async def call(self, fn: CoreCall[T]) -> T:
        """Run ``fn(node, now_ms) -> (result, effects)`` in the owner task; return its result.

        Raises what ``fn`` raised if it is a ``GossipmeshError`` (a refusal: nothing changed),
        or ``CoreError`` for any other exception (a bug: logged and counted by the owner)."""
        send, recv = trio.open_memory_channel[tuple[bool, Any]](1)
        await self._send_in.send(_Call(fn, send))
        ok, value = await recv.receive()
        if not ok:
            raise value
        return value

    async def queue_broadcast(self, payload: bytes) -> None:
        def queue(node: SwimNode, now: Millis) -> tuple[None, list[Effect]]:
            node.queue_broadcast(payload, now)
            return None, []

        await self.call(queue)

    async def send_user_message(self, payload: bytes, fanout: int) -> None:
        await self.call(lambda node, now: (None, node.send_user_message(payload, fanout, now)))

    async def members(self) -> list[Member]:
        return await self.call(lambda node, now: (list(node.members()), []))

    async def open_stream(self, to: Address, kind: str, body: bytes) -> SealedStream:
        """Connect to a peer's gossip port and send the first frame. Caller sets the timeout."""
        return await self.transport.open_stream(to, kind, body)

    async def join(self, addresses: Sequence[Address], timeout_s: float = 5.0) -> dict[str, bool]:
        """Push-pull with each address (resolved); report which answered within the timeout."""
        return await self.joiner.join(addresses, timeout_s)

    # ---- run --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the core, serve until ``stop()``/``leave_and_stop()`` or cancellation."""
        try:
            self.admin_auth.start()
        except TokenFileError as exc:
            raise AgentStartError(str(exc)) from exc
        try:
            bound = await bind(self.settings)
        except BaseException:
            self.admin_auth.close()
            raise
        self.address, self.admin_address = bound.address, bound.admin_address
        self.transport.udp = bound.udp
        incarnation = self._boot_incarnation()
        self._node = SwimNode(
            self.settings.name,
            self.address,
            self.swim_config,
            self.rng,
            now_ms(),
            incarnation=incarnation,
            authority=build_authority(self.identity),
        )
        self.log.info(
            "agent_start",
            member=self.settings.name,
            address=str(self.address),
            admin=str(self.admin_address),
            cluster=self.settings.cluster,
            profile=self.settings.profile,
            incarnation=incarnation,
            keys=len(self.keyring),
        )
        with bound.udp:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = self.push_pulls.nursery = nursery
                    await self._run_core(lambda node, now: (None, node.start(now)), now_ms())
                    nursery.start_soon(self._owner)
                    nursery.start_soon(self.transport.receive_packets, self._enqueue_packet)
                    nursery.start_soon(self.transport.serve_streams, bound.gossip_listeners)
                    admin = HTTPServer(self.router, on_error=self._admin_error,
                                       guard=self.admin_auth, ssl_context=self.admin_tls)  # fmt: skip
                    await nursery.start(admin.serve, bound.admin_listeners)
                    nursery.start_soon(self._peers_saver)
                    nursery.start_soon(watch_trust, self)
                    nursery.start_soon(self.joiner.auto_join)
                    task_status.started(self)
                    await self._stopped.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self.save_peers()
                self.events.close()
                self.admin_auth.close()
                self.log.info("agent_stop", member=self.settings.name)

    @property
    def core_stats(self) -> dict[str, int]:
        """The SWIM core's counters (a live view; read it in the owner's trio thread)."""
        return self._node.stats if self._node is not None else {}

    @property
    def stopped(self) -> trio.Event:
        """Set once the agent has been asked to stop; ``run`` returns soon after."""
        return self._stopped

    def stop(self) -> None:
        """Stop at once, without telling anyone (others will see this node fail)."""
        self._stopped.set()

    async def leave_and_stop(self, flush_s: float = LEAVE_FLUSH_S) -> None:
        """Announce "left", keep gossiping for up to ``flush_s`` so it spreads, then stop."""
        if self.leaving:
            return
        self.leaving = True
        self.log.info("leave", member=self.settings.name)
        me = self.settings.name

        def leave(node: SwimNode, now: Millis) -> tuple[list[Address], list[Effect]]:
            live = [
                m.address
                for m in node.members()
                if m.name != me and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            ]
            return live, node.leave(now)

        with trio.move_on_after(flush_s):
            try:
                live = await self.call(leave)
            except CoreError:
                live = []  # logged by the owner; we stop all the same
            # Gossip alone may miss a member (each rumour is sent only λ·log n times, and we stop
            # soon), so also hand our "left" record to some members directly over push-pull,
            # which merges it as left; the rest hear it from them.
            targets = self.rng.sample(live, min(len(live), LEAVE_NOTIFY_MAX))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, self._flush_time_s(flush_s))
                for target in targets:
                    nursery.start_soon(self.push_pulls.notify_leave, target)
        self.stop()

    def _flush_time_s(self, cap_s: float) -> float:
        # Three gossip rounds carry the news to most of a small cluster; never wait past the cap.
        gossip_ms = self.swim_config.gossip_interval_ms
        return min(cap_s, max(0.2, 3 * gossip_ms / 1000))

    def _boot_incarnation(self) -> int:
        # No data dir: seconds since 2023 still rise from boot to boot (barring clock resets).
        # A boot that starts below what a previous life signed learns that from its own signed
        # claims in the join push-pull and refutes above it (the core's on_alive).
        by_clock = max(1, int(time.time()) - 1_672_531_200)
        if self.store is None:
            return by_clock
        incarnation = self.store.boot_incarnation()
        if incarnation >= MAX_BOOT_INCARNATION:
            # Only an unsigned rumour of old could have pushed us this high (issue 11: one
            # Suspect at 2**62 made a node unable to restart); start afresh from the clock.
            self.log.warn("incarnation_reset", saved=incarnation, incarnation=by_clock)
            return by_clock
        return incarnation

    # ---- the owner task ---------------------------------------------------------------------

    def _enqueue_packet(self, src: Address, data: bytes) -> None:
        try:
            self._send_in.send_nowait(_Packet(src, data))
        except trio.WouldBlock:
            self.counters["dropped.queue_full"] += 1

    async def _owner(self) -> None:
        while True:
            now = now_ms()
            for timer in self._timers.pop_due(now):
                await self._run_core(_Due(timer), now)
            deadline = self._timers.next_deadline()
            item: _Packet | _Call | None = None
            if deadline is None:
                item = await self._recv_in.receive()
            else:
                with trio.move_on_at(deadline / 1000):
                    item = await self._recv_in.receive()
            if item is None:
                continue
            if isinstance(item, _Packet):
                self.counters["udp.received"] += 1
                await self._run_core(item, now_ms())
            else:
                await self._run_core(item.fn, now_ms(), item.reply)

    async def _run_core(
        self,
        fn: CoreCall[Any],
        now: Millis,
        reply: trio.MemorySendChannel[tuple[bool, Any]] | None = None,
    ) -> None:
        """Run one input against the core and apply its effects: the one place the agent calls
        the core (see the module docstring for what happens when it raises)."""
        assert self._node is not None
        try:
            result, effects = fn(self._node, now)
        except Exception as exc:
            if reply is not None and isinstance(exc, GossipmeshError):
                reply.send_nowait((False, exc))  # refused on purpose; nothing changed
                return
            self.counters["core.errors"] += 1
            self.log.error("core_error", error=repr(exc), traceback=traceback.format_exc())
            if reply is not None:
                error = CoreError(f"the SWIM core raised {exc!r}")
                error.__cause__ = exc
                reply.send_nowait((False, error))
            return
        await self._apply(effects)
        if reply is not None:
            reply.send_nowait((True, result))

    async def _apply(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendPacket):
                await self.transport.send_packet(effect.to, effect.data)
            elif isinstance(effect, SetTimer):
                self._timers.push(effect.timer, effect.at_ms)
            elif isinstance(effect, StartPushPull):
                self.push_pulls.start(effect.to, effect.join)
            elif isinstance(effect, MemberChanged):
                self._member_changed(effect)
            elif isinstance(effect, MemberReaped):
                self.events.publish(
                    MemberEvent("reap", effect.name, None, None, None, None, b"", wall_ms())
                )
            elif isinstance(effect, UserMessage):
                for handler in self._user_handlers:
                    try:
                        handler(effect.src, effect.payload)
                    except Exception as exc:
                        self.counters["user_handler.errors"] += 1
                        self.log.error("user_handler_error", error=repr(exc))

    def _member_changed(self, effect: MemberChanged) -> None:
        m = effect.member
        kind = event_kind(effect.previous, m.state)
        if m.name == self.settings.name:
            if self.store is not None:
                self.store.save_incarnation(m.incarnation)
            if kind == "update" and effect.previous is MemberState.ALIVE:
                kind = "refute"  # our own incarnation rose: we answered a rumour about us
        else:
            self._peers_dirty = True
            if m.state is MemberState.ALIVE:
                self._peers[m.name] = m.address
            else:
                self._peers.pop(m.name, None)
        event = MemberEvent(
            kind,
            m.name,
            m.address,
            m.state.value,
            effect.previous.value if effect.previous else None,
            m.incarnation,
            m.meta,
            wall_ms(),
            m.proof.cert if m.proof is not None else b"",
        )
        self.events.publish(event)

    # ---- persistence ------------------------------------------------------------------------

    async def _peers_saver(self) -> None:
        while True:
            await trio.sleep(PEERS_SAVE_INTERVAL_S)
            if self._peers_dirty:
                self.save_peers()

    def save_peers(self) -> None:
        """Write the alive members but us to the data dir, for rejoining after a restart."""
        if self.store is None or self._node is None:
            return
        self._peers_dirty = False
        peers = list(self._peers.values())
        if peers:
            try:
                self.store.save_peers(peers)
            except OSError as exc:
                self.log.warn("save_peers_failed", error=str(exc))

    def save_keyring(self) -> None:
        if self.keyring_path is not None:
            save_keyring_file(self.keyring_path, self.keyring)

    def _admin_error(self, path: str, error: str) -> None:
        self.counters["admin.errors"] += 1
        self.log.error("admin_error", path=path, error=error)

    # ---- views for the admin API ------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        def snapshot(node: SwimNode, now: Millis) -> tuple[dict[str, Any], list[Effect]]:
            members = node.members()
            states = Counter(m.state.value for m in members)
            reasons = degraded_reasons(members, self.decrypt_watch.recent())
            return {
                "status": "leaving" if self.leaving else "degraded" if reasons else "ok",
                "reasons": reasons,
                "name": self.settings.name,
                "address": str(self.address),
                "cluster": self.settings.cluster,
                "members": dict(states),
                "health_score": node.health_score,
                "incarnation": node.local_member().incarnation,
                "counters": dict(sorted(self.counters.items())),
                "dropped": {
                    k.removeprefix("dropped."): v
                    for k, v in sorted(self.counters.items())
                    if k.startswith("dropped.")
                },
                "core": dict(node.stats),
                "queue_depth": self._send_in.statistics().current_buffer_used,
                "pending_timers": len(self._timers),
            }, []

        health: dict[str, Any] = await self.call(snapshot)
        for extend in self.health_extensions:
            extend(health)
        return health


def suspicion_bound_s(config: SwimConfig, cluster_size: int) -> float:
    """An upper bound on failure detection: a probe round, the longest suspicion, and gossip."""
    probe_ms = config.probe_interval_ms
    base = config.suspicion_mult * max(1.0, math.log10(max(cluster_size, 1))) * probe_ms
    return (2 * probe_ms + config.suspicion_max_timeout_mult * base) / 1000
