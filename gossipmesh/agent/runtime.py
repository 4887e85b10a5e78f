"""The trio runtime around the sans-IO SWIM core: one owner task, transports, timers, extension points.

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

Effects are applied in order by the owner: ``SendPacket`` is sealed and sent; ``SetTimer`` goes on
the heap; ``StartPushPull`` spawns a bounded background task (``push_pull_concurrency_max`` at once)
that talks TCP and feeds its outcome back as a ``_Call``; ``MemberChanged``/``MemberReaped`` are
logged and published to listeners; ``UserMessage`` goes to registered user-message handlers.

Extension points (for the config replica, the proxy, health checks):

- ``register_stream_handler(kind, handler)``: serve a new TCP stream kind on the gossip port;
  ``open_stream(address, kind, first_body)`` is the client side. Frames are sealed like packets.
- ``add_member_listener(fn)`` (sync, called in the owner task) or ``subscribe_members()`` (a
  bounded receive channel of ``MemberEvent``) for membership changes.
- ``add_user_message_handler(fn)``; ``queue_broadcast(payload)``; ``send_user_message(payload, k)``.
- ``router.add(method, path, handler)`` for admin API routes.
- ``call(fn)`` to run anything else against the core, serialised with every other input.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from gossipmesh.agent.http import HTTPServer, Router
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.settings import AgentSettings
from gossipmesh.agent.store import DataDir
from gossipmesh.agent.streams import SealedStream, decode_first, encode_first
from gossipmesh.agent.timers import TimerHeap
from gossipmesh.crypto import SEAL_OVERHEAD, Keyring, save_keyring_file
from gossipmesh.errors import DecodeError, GossipmeshError
from gossipmesh.ids import Address, Millis
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

if TYPE_CHECKING:
    from gossipmesh.agent.replica import ConfigSource

T = TypeVar("T")

INPUT_QUEUE_DEPTH = 1024  # inputs waiting for the owner; UDP beyond this is dropped
MAX_UDP_BYTES = 65536  # receive buffer; datagrams over the configured packet size are dropped
MAX_INBOUND_STREAMS = 32  # concurrent inbound TCP streams; more are closed at once and counted
SUBSCRIBER_BUFFER = 256
JOIN_BACKOFF_S = (0.5, 30.0)  # first retry delay, cap
LEAVE_FLUSH_S = 1.0
LEAVE_NOTIFY_MAX = 16  # members told directly (push-pull) that we leave; gossip tells the rest
PEERS_SAVE_INTERVAL_S = 1.0


class AgentStartError(GossipmeshError):
    """The agent could not start (a port in use, an unusable address); the message says which."""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One membership change as listeners, monitors and logs see it."""

    kind: str  # join | alive | suspect | failed | left | update | reap
    name: str
    address: Address | None
    state: str | None
    previous: str | None
    incarnation: int | None
    meta: bytes
    ts_ms: int  # wall clock, milliseconds since the epoch (for humans and logs)

    def to_json(self) -> dict[str, Any]:
        return {
            "ts_ms": self.ts_ms,
            "event": self.kind,
            "member": self.name,
            "address": str(self.address) if self.address else None,
            "state": self.state,
            "previous": self.previous,
            "incarnation": self.incarnation,
            "meta": base64.b64encode(self.meta).decode(),
        }


def member_json(m: Member) -> dict[str, Any]:
    return {
        "name": m.name,
        "address": str(m.address),
        "state": m.state.value,
        "incarnation": m.incarnation,
        "meta": base64.b64encode(m.meta).decode(),
    }


@dataclass(slots=True)
class _Packet:
    src: Address
    data: bytes


@dataclass(slots=True)
class _Call:
    fn: Callable[[Any, Millis], tuple[Any, list[Effect]]]
    reply: trio.MemorySendChannel[tuple[bool, Any]] | None


StreamHandler = Callable[[SealedStream, Address, bytes], Awaitable[None]]
MemberListener = Callable[[MemberEvent], None]
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
        swim_config: Any = None,
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.keyring_path = keyring_path
        self.log = log if log is not None else EventLog(level=settings.log_level)
        self.store = DataDir(settings.data_dir) if settings.data_dir is not None else None
        self.swim_config = (
            swim_config if swim_config is not None else _swim_config(settings.profile)
        )
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8), "big")
        self.rng = random.Random(seed)
        cluster = settings.cluster.encode()
        self._udp_aad = b"gossipmesh/udp/" + cluster
        self._stream_aad = b"gossipmesh/stream/" + cluster
        self.counters: Counter[str] = Counter()
        self.router = Router()
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._member_listeners: list[MemberListener] = []
        self._subscribers: set[trio.MemorySendChannel[MemberEvent]] = set()
        self._user_handlers: list[UserMessageHandler] = []
        self._join_waiters: dict[Address, list[Callable[[bool], None]]] = {}
        self._timers = TimerHeap()
        self._send_in, self._recv_in = trio.open_memory_channel[_Packet | _Call](INPUT_QUEUE_DEPTH)
        self._push_pulls = 0
        cfg = self.swim_config
        # Outbound push-pulls at once (the core also bounds its own); streams time out as a whole.
        self._push_pull_max = _cfg(cfg, ("push_pull_concurrency_max",), 4)
        self.stream_timeout_s = _cfg(cfg, ("push_pull_timeout_ms",), 5000) / 1000
        self._max_packet = _cfg(cfg, ("packet_size_bytes",), 1400) + SEAL_OVERHEAD
        self._max_frame = _cfg(cfg, ("push_pull_max_bytes",), 16 << 20) + SEAL_OVERHEAD
        self._inbound_streams = trio.CapacityLimiter(MAX_INBOUND_STREAMS)
        self._peers_dirty = False
        self._node: Any = None
        self._nursery: trio.Nursery | None = None
        self._udp: trio.socket.SocketType | None = None
        self.address: Address | None = None  # advertised gossip address, once bound
        self.admin_address: Address | None = None
        self.leaving = False
        self._stopped = trio.Event()
        # Fault injection (``agent/faults.py``): True drops traffic to/from that gossip address
        # (port 0: any port on the host). None, the default, costs one attribute check per packet.
        self.transport_filter: Callable[[Address], bool] | None = None
        # The config replica (``agent/replica.py``), set by the composition root; the data plane
        # reads it as a ``ConfigSource``.
        self.config: ConfigSource | None = None
        self.register_stream_handler("pushpull", self._serve_push_pull)
        from gossipmesh.agent.admin import install_admin_routes
        from gossipmesh.agent.keyops import install_keyops

        install_keyops(self)
        install_admin_routes(self)

    # ---- extension points -------------------------------------------------------------------

    def register_stream_handler(self, kind: str, handler: StreamHandler) -> None:
        """Serve TCP streams whose first frame names ``kind``. The handler owns the stream."""
        if kind in self._stream_handlers:
            raise ValueError(f"stream kind {kind!r} already registered")
        encode_first(kind, b"")  # validates the kind
        self._stream_handlers[kind] = handler

    def add_member_listener(self, fn: MemberListener) -> None:
        """``fn(event)`` runs in the owner task for every member change; it must not block."""
        self._member_listeners.append(fn)

    @contextlib.asynccontextmanager
    async def subscribe_members(
        self, buffer: int = SUBSCRIBER_BUFFER
    ) -> AsyncIterator[trio.MemoryReceiveChannel[MemberEvent]]:
        """A bounded channel of member events; a subscriber that lags loses events (counted)."""
        send, recv = trio.open_memory_channel[MemberEvent](buffer)
        self._subscribers.add(send)
        try:
            yield recv
        finally:
            self._subscribers.discard(send)
            send.close()

    def add_user_message_handler(self, fn: UserMessageHandler) -> None:
        """``fn(src, payload)`` runs in the owner task for each user payload; it must not block."""
        self._user_handlers.append(fn)

    async def call(self, fn: Callable[[Any, Millis], tuple[T, list[Effect]]]) -> T:
        """Run ``fn(node, now_ms) -> (result, effects)`` in the owner task; return its result."""
        send, recv = trio.open_memory_channel[tuple[bool, Any]](1)
        await self._send_in.send(_Call(fn, send))
        ok, value = await recv.receive()
        if not ok:
            raise value
        return value

    async def queue_broadcast(self, payload: bytes) -> None:
        await self.call(lambda node, now: (node.queue_broadcast(payload, now), []))

    async def send_user_message(self, payload: bytes, fanout: int) -> None:
        await self.call(lambda node, now: (None, node.send_user_message(payload, fanout, now)))

    async def members(self) -> list[Member]:
        return await self.call(lambda node, now: (list(node.members()), []))

    async def open_stream(self, to: Address, kind: str, body: bytes) -> SealedStream:
        """Connect to a peer's gossip port and send the first frame. Caller sets the timeout."""
        if self.transport_filter is not None and self.transport_filter(to):
            self.counters["faults.tcp_out"] += 1
            raise ConnectionRefusedError(f"fault injection drops {to}")
        tcp = await trio.open_tcp_stream(to.host, to.port)
        stream = SealedStream(tcp, self.keyring, self._stream_aad, self._max_frame)
        try:
            await stream.send(encode_first(kind, body))
        except BaseException:
            await tcp.aclose()
            raise
        return stream

    # ---- run --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the core, serve until ``stop()``/``leave_and_stop()`` or cancellation."""
        udp, tcp_listeners, admin_listeners = await self._bind()
        self._udp = udp
        incarnation = self._boot_incarnation()
        from gossipmesh.swim.node import SwimNode

        assert self.address is not None
        self._node = SwimNode(
            self.settings.name,
            self.address,
            self.swim_config,
            self.rng,
            now_ms(),
            incarnation=incarnation,
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
        with udp:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._apply(self._node.start(now_ms()))
                    nursery.start_soon(self._owner)
                    nursery.start_soon(self._udp_loop)
                    nursery.start_soon(self._serve_streams, tcp_listeners)
                    admin = HTTPServer(self.router, on_error=self._admin_error)
                    await nursery.start(admin.serve, admin_listeners)
                    nursery.start_soon(self._peers_saver)
                    nursery.start_soon(self._auto_join)
                    task_status.started(self)
                    await self._stopped.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._save_peers()
                for sub in list(self._subscribers):
                    sub.close()
                self.log.info("agent_stop", member=self.settings.name)

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

        def leave(node: Any, now: Millis) -> tuple[list[Address], list[Effect]]:
            live = [
                m.address
                for m in node.members()
                if m.name != me and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            ]
            return live, node.leave(now)

        with trio.move_on_after(flush_s):
            live = await self.call(leave)
            # Gossip alone may miss a member (each rumour is sent only λ·log n times, and we stop
            # soon), so also hand our "left" record to some members directly over push-pull,
            # which merges it as left; the rest hear it from them.
            targets = self.rng.sample(live, min(len(live), LEAVE_NOTIFY_MAX))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, self._flush_time_s(flush_s))
                for target in targets:
                    nursery.start_soon(self._leave_notify, target)
        self.stop()

    async def _leave_notify(self, to: Address) -> None:
        try:
            payload = await self.call(lambda node, now: (node.push_pull_payload(False), []))
            stream = await self.open_stream(to, "pushpull", payload)
            try:
                await stream.receive()
            finally:
                await stream.aclose()
        except (OSError, EOFError, DecodeError, trio.BrokenResourceError):
            self.counters["leave_notify.failed"] += 1

    def _flush_time_s(self, cap_s: float) -> float:
        # Three gossip rounds carry the news to most of a small cluster; never wait past the cap.
        gossip_ms = _cfg(self.swim_config, ("gossip_interval_ms",), 200)
        return min(cap_s, max(0.2, 3 * gossip_ms / 1000))

    async def _bind(
        self,
    ) -> tuple[trio.socket.SocketType, list[trio.SocketListener], list[trio.SocketListener]]:
        s = self.settings
        udp = trio.socket.socket(
            trio.socket.AF_INET6 if ":" in s.bind.host else trio.socket.AF_INET,
            trio.socket.SOCK_DGRAM,
        )
        try:
            await udp.bind(s.bind.as_tuple())
        except OSError as exc:
            udp.close()
            raise AgentStartError(f"cannot bind UDP {s.bind}: {exc.strerror or exc}") from exc
        port = udp.getsockname()[1]
        try:
            tcp = await trio.open_tcp_listeners(port, host=s.bind.host)
        except OSError as exc:
            udp.close()
            raise AgentStartError(
                f"cannot bind TCP {Address(s.bind.host, port)}: {exc.strerror or exc}"
            ) from exc
        try:
            admin = await trio.open_tcp_listeners(s.admin.port, host=s.admin.host)
        except OSError as exc:
            udp.close()
            for listener in tcp:
                await listener.aclose()
            raise AgentStartError(
                f"cannot bind admin API {s.admin}: {exc.strerror or exc}"
            ) from exc
        admin_port = admin[0].socket.getsockname()[1]
        self.admin_address = Address(s.admin.host, admin_port)
        if s.advertise is not None:
            self.address = Address(s.advertise.host, s.advertise.port or port)
        elif s.bind.host in ("0.0.0.0", "::"):
            self.address = Address(_routable_ip(), port)
        else:
            self.address = Address(s.bind.host, port)
        return udp, tcp, admin

    def _boot_incarnation(self) -> int:
        if self.store is not None:
            return self.store.boot_incarnation()
        # No data dir: seconds since 2023 still rise from boot to boot (barring clock resets).
        return max(1, int(time.time()) - 1_672_531_200)

    # ---- the owner task ---------------------------------------------------------------------

    async def _owner(self) -> None:
        while True:
            now = now_ms()
            for timer in self._timers.pop_due(now):
                await self._run_core(self._node.handle_timer, timer, now)
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
                await self._run_core(self._node.handle_packet, item.src, item.data, now_ms())
            else:
                try:
                    result, effects = item.fn(self._node, now_ms())
                except Exception as exc:
                    self.counters["core.errors"] += 1
                    if item.reply is not None:
                        item.reply.send_nowait((False, exc))
                    else:
                        self.log.error("core_error", error=repr(exc))
                    continue
                await self._apply(effects)
                if item.reply is not None:
                    item.reply.send_nowait((True, result))

    async def _run_core(self, fn: Callable[..., list[Effect]], *args: Any) -> None:
        try:
            effects = fn(*args)
        except Exception as exc:  # the core promises not to raise on input; count it if it does
            self.counters["core.errors"] += 1
            self.log.error("core_error", error=repr(exc))
            return
        await self._apply(effects)

    async def _apply(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendPacket):
                await self._send_packet(effect.to, effect.data)
            elif isinstance(effect, SetTimer):
                self._timers.push(effect.timer, effect.at_ms)
            elif isinstance(effect, StartPushPull):
                self._start_push_pull(effect.to, effect.join)
            elif isinstance(effect, MemberChanged):
                self._member_changed(effect)
            elif isinstance(effect, MemberReaped):
                self._publish(
                    MemberEvent("reap", effect.name, None, None, None, None, b"", _wall_ms())
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
        event = MemberEvent(
            kind,
            m.name,
            m.address,
            m.state.value,
            effect.previous.value if effect.previous else None,
            m.incarnation,
            m.meta,
            _wall_ms(),
        )
        self._publish(event)

    def _publish(self, event: MemberEvent) -> None:
        level = "warn" if event.kind in ("failed", "suspect") else "info"
        self.log.log(
            level,
            f"member_{event.kind}",
            member=event.name,
            state=event.state,
            previous=event.previous,
            address=str(event.address) if event.address else None,
            incarnation=event.incarnation,
        )
        for fn in self._member_listeners:
            try:
                fn(event)
            except Exception as exc:
                self.counters["member_listener.errors"] += 1
                self.log.error("member_listener_error", error=repr(exc))
        for sub in list(self._subscribers):
            try:
                sub.send_nowait(event)
            except trio.WouldBlock:
                self.counters["dropped.subscriber_lag"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(sub)

    # ---- UDP --------------------------------------------------------------------------------

    async def _send_packet(self, to: Address, data: bytes) -> None:
        assert self._udp is not None
        if self.transport_filter is not None and self.transport_filter(to):
            self.counters["faults.udp_out"] += 1
            return
        try:
            await self._udp.sendto(self.keyring.seal(data, self._udp_aad), to.as_tuple())
            self.counters["udp.sent"] += 1
        except OSError:
            self.counters["udp.send_errors"] += 1

    async def _udp_loop(self) -> None:
        assert self._udp is not None
        while True:
            try:
                sealed, addr = await self._udp.recvfrom(MAX_UDP_BYTES)
            except OSError:
                # ICMP port-unreachable from a dead peer surfaces here on some platforms.
                self.counters["udp.recv_errors"] += 1
                continue
            if len(sealed) > self._max_packet:
                self.counters["dropped.oversize"] += 1
                continue
            if self.transport_filter is not None and self.transport_filter(Address(*addr[:2])):
                self.counters["faults.udp_in"] += 1
                continue
            try:
                data = self.keyring.open(sealed, self._udp_aad)
            except DecodeError as exc:
                self.counters[f"dropped.{exc.reason}"] += 1
                continue
            try:
                self._send_in.send_nowait(_Packet(Address(addr[0], addr[1]), data))
            except trio.WouldBlock:
                self.counters["dropped.queue_full"] += 1

    # ---- TCP streams ------------------------------------------------------------------------

    async def _serve_streams(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._handle_stream, listeners)

    async def _handle_stream(self, tcp: trio.SocketStream) -> None:
        if self._inbound_streams.available_tokens == 0:
            self.counters["dropped.stream_limit"] += 1
            await tcp.aclose()
            return
        async with self._inbound_streams, tcp:
            try:
                host, port = tcp.socket.getpeername()[:2]
            except OSError:
                return
            src = Address(host, port)
            if self.transport_filter is not None and self.transport_filter(Address(host, 0)):
                self.counters["faults.tcp_in"] += 1
                return
            stream = SealedStream(tcp, self.keyring, self._stream_aad, self._max_frame)
            try:
                with trio.fail_after(self.stream_timeout_s):
                    kind, body = decode_first(await stream.receive())
                    handler = self._stream_handlers.get(kind)
                    if handler is None:
                        raise DecodeError("stream_kind", f"unknown stream kind {kind!r}")
                    self.counters[f"stream.{kind}"] += 1
                    await handler(stream, src, body)
            except DecodeError as exc:
                self.counters[f"dropped.stream_{exc.reason}"] += 1
            except (trio.TooSlowError, EOFError):
                self.counters["dropped.stream_timeout"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.counters["dropped.stream_broken"] += 1

    async def _serve_push_pull(self, stream: SealedStream, src: Address, body: bytes) -> None:
        reply = await self.call(lambda node, now: node.handle_push_pull_request(src, body, now))
        if reply:  # the core answers b"" to a request it rejected: close without a reply
            await stream.send(reply)

    def _start_push_pull(self, to: Address, join: bool) -> None:
        assert self._nursery is not None
        if self._push_pulls >= self._push_pull_max:
            self.counters["dropped.push_pull_limit"] += 1
            self._nursery.start_soon(self._push_pull_done, to, join, None)
            return
        self._push_pulls += 1
        self._nursery.start_soon(self._push_pull, to, join)

    async def _push_pull(self, to: Address, join: bool) -> None:
        reply: bytes | None = None
        try:
            payload = await self.call(lambda node, now: (node.push_pull_payload(join), []))
            with trio.fail_after(self.stream_timeout_s):
                stream = await self.open_stream(to, "pushpull", payload)
                try:
                    reply = await stream.receive()
                finally:
                    await stream.aclose()
        except (OSError, trio.TooSlowError, EOFError, DecodeError, trio.BrokenResourceError) as exc:
            self.counters["push_pull.failed"] += 1
            self.log.debug("push_pull_failed", peer=str(to), error=repr(exc))
        finally:
            self._push_pulls -= 1
        await self._push_pull_done(to, join, reply)

    async def _push_pull_done(self, to: Address, join: bool, reply: bytes | None) -> None:
        if reply is None:
            await self.call(lambda node, now: (None, node.push_pull_failed(to, now)))
        else:
            self.counters["push_pull.ok"] += 1
            await self.call(lambda node, now: (None, node.handle_push_pull_reply(to, reply, now)))
        if join:
            for waiter in self._join_waiters.pop(to, []):
                waiter(reply is not None)

    # ---- joining ----------------------------------------------------------------------------

    async def join(self, addresses: Sequence[Address], timeout_s: float = 5.0) -> dict[str, bool]:
        """Push-pull with each address (resolved); report which answered within the timeout."""
        resolved: dict[str, Address | None] = {}
        for addr in addresses:
            resolved[str(addr)] = await _resolve(addr)
        results: dict[str, bool] = {k: False for k in resolved}
        targets = {a for a in resolved.values() if a is not None and a != self.address}
        if not targets:
            return results
        done = trio.Event()
        outcome: dict[Address, bool] = {}

        def waiter_for(a: Address) -> Callable[[bool], None]:
            def record(ok: bool) -> None:
                outcome[a] = ok
                if len(outcome) == len(targets):
                    done.set()

            return record

        for target in targets:
            self._join_waiters.setdefault(target, []).append(waiter_for(target))
        await self.call(lambda node, now: (None, node.join(sorted(targets), now)))
        with trio.move_on_after(timeout_s):
            await done.wait()
        if any(outcome.values()):
            self._save_peers()  # a crash right after joining must still find its way back
        for text, a in resolved.items():
            results[text] = a is not None and outcome.get(a, False)
        return results

    async def _auto_join(self) -> None:
        """Join the --join seeds (else the saved peers), retrying with backoff until one answers."""
        seeds = list(self.settings.join)
        source = "flags"
        if not seeds and self.store is not None:
            seeds = [p for p in self.store.load_peers() if p != self.address]
            source = "saved_peers"
        if not seeds:
            return
        delay, cap = JOIN_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            results = await self.join(seeds)
            if any(results.values()):
                self.log.info("joined", via=[k for k, v in results.items() if v], source=source)
                await self._settle_sync()
                return
            alive = [m for m in await self.members() if m.state is MemberState.ALIVE]
            if len(alive) > 1:
                self.log.info("joined", via="peer contacted us", source=source)
                return
            self.log.warn("join_retry", seeds=[str(s) for s in seeds], attempt=attempt, in_s=delay)
            await trio.sleep(delay)
            delay = min(cap, delay * 2)

    async def _settle_sync(self) -> None:
        """One more push-pull with a random member shortly after joining.

        Members that join together learn of each other by gossip, and each rumour is sent only
        λ·⌈log10(n+1)⌉ times (2 in the local profile), so a node can miss a later joiner until
        the next periodic push-pull. One extra exchange a couple of probe intervals after joining
        closes most of that gap for one TCP round trip; both sides learn what the other missed.
        """
        await trio.sleep(2 * _cfg(self.swim_config, ("probe_interval_ms",), 1000) / 1000)
        me = self.settings.name
        peers = [
            m.address for m in await self.members() if m.name != me and m.state is MemberState.ALIVE
        ]
        if peers and self._push_pulls < self._push_pull_max:
            self._start_push_pull(self.rng.choice(peers), join=False)

    # ---- persistence ------------------------------------------------------------------------

    async def _peers_saver(self) -> None:
        while True:
            await trio.sleep(PEERS_SAVE_INTERVAL_S)
            if self._peers_dirty:
                self._save_peers()

    def _save_peers(self) -> None:
        if self.store is None or self._node is None:
            return
        self._peers_dirty = False
        peers = [
            m.address
            for m in self._node.members()
            if m.name != self.settings.name and m.state is MemberState.ALIVE
        ]
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
        def snapshot(node: Any, now: Millis) -> tuple[dict[str, Any], list[Effect]]:
            states = Counter(m.state.value for m in node.members())
            return {
                "status": "leaving" if self.leaving else "ok",
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

        return await self.call(snapshot)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _cfg(config: Any, names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return default


def _swim_config(profile: str) -> Any:
    from gossipmesh.swim.config import SwimConfig

    return SwimConfig.preset(profile)


async def _resolve(addr: Address) -> Address | None:
    try:
        infos = await trio.socket.getaddrinfo(addr.host, addr.port, type=trio.socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, _, _, _, sockaddr in infos:
        if family == trio.socket.AF_INET:
            return Address(str(sockaddr[0]), int(sockaddr[1]))
    return Address(str(infos[0][4][0]), int(infos[0][4][1])) if infos else None


def _routable_ip() -> str:
    """The address this host would use to reach the outside; no packet is sent (UDP connect)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def suspicion_bound_s(config: Any, cluster_size: int) -> float:
    """An upper bound on failure detection: a probe round, the longest suspicion, and gossip."""
    probe_ms = _cfg(config, ("probe_interval_ms",), 1000)
    mult = _cfg(config, ("suspicion_mult",), 4)
    max_mult = _cfg(config, ("suspicion_max_timeout_mult",), 6)
    base = mult * max(1.0, math.log10(max(cluster_size, 1))) * probe_ms
    return (2 * probe_ms + max_mult * base) / 1000


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
