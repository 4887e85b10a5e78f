"""A cluster of real SWIM cores wired to the engine and the simulated network.

Theory of operation
-------------------
Each simulated host (``SimNode``) owns one real, sans-IO ``SwimNode`` and plays the runtime the
core's effect contract (``gossipmesh/swim/effects.py``) asks for, exactly as the trio agent does:

- ``SendPacket`` bytes go through ``Network`` (loss, partitions, latency) and arrive as a
  ``handle_packet(src, data, now_ms)`` call; the bytes are the real wire encoding, so codec bugs
  and size-limit bugs surface here rather than in production.
- ``SetTimer`` becomes a heap event. A node carries a *generation*, bumped on every crash and
  restart, and each timer remembers the generation it was set in, so a dead process's timers never
  fire into its successor. (The core re-checks its own tokens too; this is the runtime's half.)
- ``StartPushPull`` becomes a TCP-like exchange: the request travels one way, the peer's handler
  runs, the reply travels back; if either leg is blocked or the peer is down the initiator gets
  ``push_pull_failed`` after the TCP timeout, as a real connect/read timeout would.
- ``MemberChanged`` / ``MemberReaped`` update the *observer ledger*: for every live observer the
  state and incarnation it believes each subject has. The ledger keeps per-subject counters of how
  many live observers see it alive / suspect / dead / left, so "is every view whole?" is a sum over
  subjects, not a scan of N^2 pairs. The same events drive detection times and false positives.
- ``UserMessage`` goes to the node's *attachment* (see below).

Signatures are real (DESIGN-11 D3): every host's core gets a ``MembershipAuthority`` over its own
node certificate, issued by the cluster's in-process CA (``identity.py``), and verification is
memoised across hosts (a pure function: behaviour-neutral). ``wall_ms`` is what the certificates
are checked against: a fixed epoch plus the virtual time.

Ground truth lives here and only here: a node is UP, DOWN (crashed), LEFT, or not yet started.
Checkers compare the ledger with the truth.

Slow nodes model a CPU-starved process: every inbound packet and push-pull leg is handed to the
core ``packet_lag_ms`` (±50 % jitter) late and every timer ``timer_lag_ms`` late. The node acts on
stale input, its acks leave late and its own probes see acks "too late" - the situation Lifeguard
was designed for. A *paused* host (``pause``: a GC pause, SIGSTOP, a stalled VM) handles nothing
until it wakes: every packet, stream leg and timer due meanwhile is put back, in order, to the
moment it resumes.

Extension hook for a second core (the config CRDT)
-------------------------------------------------
Pass ``attachment_factory(host, previous) -> Attachment``. Each (re)booted host gets one
``Attachment``; ``previous`` is the old one when a node restarts *with* its data, else ``None``.
The attachment receives ``UserMessage`` payloads and member changes, and acts through its host:
``host.queue_broadcast(payload)`` (piggyback on SWIM gossip), ``host.send_user_message(payload,
fanout)``, ``host.set_timer(token, at_ms)`` (delivered back as ``on_timer``) and
``host.exchange(to, data, token)``, a TCP-like request/reply answered by the peer attachment's
``handle_exchange`` (delivered back as ``on_exchange_reply`` / ``on_exchange_failed``). The host's
``rng`` is a child of the master seed, so the second core stays replayable too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.effects import (
    MemberChanged,
    MemberReaped,
    SendPacket,
    SetTimer,
    StartPushPull,
    UserMessage,
)
from gossipmesh.swim.member import Member, MemberState
from simulations.engine import Engine, derive_rng
from simulations.identity import EPOCH_MS, SimIdentities
from simulations.network import Network

# Event kinds (indices into the engine's handler table).
K_PACKET = 0
K_TIMER = 1
K_PP_REQUEST = 2
K_PP_REPLY = 3
K_PP_FAIL = 4
K_ACTION = 5
K_SAMPLE = 6
K_ATT_TIMER = 7
K_EX_REQUEST = 8
K_EX_REPLY = 9
K_EX_FAIL = 10

# Ground-truth states of a host.
NOT_STARTED = 0
UP = 1
DOWN = 2
LEFT = 3

# Ledger state codes; the ledger stores ``incarnation << 2 | code`` in one int.
V_ALIVE = 0
V_SUSPECT = 1
V_DEAD = 2
V_LEFT = 3
NO_VIEW = -1  # the observer holds no entry for the subject
_STATE_CODE = {
    MemberState.ALIVE: V_ALIVE,
    MemberState.SUSPECT: V_SUSPECT,
    MemberState.DEAD: V_DEAD,
    MemberState.LEFT: V_LEFT,
}


class Core(Protocol):
    """The part of ``SwimNode``'s contract the simulator drives (docs/ARCHITECTURE.md)."""

    def start(self, now_ms: int) -> list[Any]: ...
    def join(self, seeds: Sequence[Address], now_ms: int) -> list[Any]: ...
    def handle_packet(self, src: Address, data: bytes, now_ms: int) -> list[Any]: ...
    def handle_timer(self, timer: object, now_ms: int) -> list[Any]: ...
    def push_pull_payload(self, join: bool) -> bytes: ...
    def handle_push_pull_request(
        self, src: Address, data: bytes, now_ms: int
    ) -> tuple[bytes, list[Any]]: ...
    def handle_push_pull_reply(self, src: Address, data: bytes, now_ms: int) -> list[Any]: ...
    def push_pull_failed(self, to: Address, now_ms: int) -> list[Any]: ...
    def leave(self, now_ms: int) -> list[Any]: ...
    def queue_broadcast(self, payload: bytes, now_ms: int) -> None: ...
    def send_user_message(self, payload: bytes, fanout: int, now_ms: int) -> list[Any]: ...
    def members(self) -> list[Member]: ...
    def member(self, name: str) -> Member | None: ...
    def local_member(self) -> Member: ...


CoreFactory = Callable[[str, Address, Any, random.Random, int, int, Authority], Core]


def default_core_factory(
    name: str,
    address: Address,
    config: Any,
    rng: random.Random,
    now_ms: int,
    incarnation: int,
    authority: Authority,
) -> Core:
    from gossipmesh.swim.node import SwimNode  # the real core; imported late on purpose

    return SwimNode(name, address, config, rng, now_ms, incarnation=incarnation,
                    authority=authority)  # fmt: skip


class Attachment:
    """Base for a second per-node core (e.g. the config CRDT). Every hook defaults to a no-op."""

    def start(self, host: SimNode, now_ms: int) -> None:
        pass

    def on_user_message(self, host: SimNode, src: Address, payload: bytes, now_ms: int) -> None:
        pass

    def on_member_changed(
        self, host: SimNode, member: Member, previous: MemberState | None, now_ms: int
    ) -> None:
        pass

    def on_timer(self, host: SimNode, token: object, now_ms: int) -> None:
        pass

    def handle_exchange(self, host: SimNode, src: Address, data: bytes, now_ms: int) -> bytes:
        return b""

    def on_exchange_reply(self, host: SimNode, token: object, reply: bytes, now_ms: int) -> None:
        pass

    def on_exchange_failed(self, host: SimNode, token: object, now_ms: int) -> None:
        pass


AttachmentFactory = Callable[["SimNode", Attachment | None], Attachment]


@dataclass(slots=True)
class SimNode:
    """One simulated host: the truth about it, its core, and the handle its attachment uses."""

    idx: int
    name: str
    address: Address
    cluster: Cluster
    state: int = NOT_STARTED
    core: Core | None = None
    attachment: Attachment | None = None
    generation: int = 0
    incarnation_at_boot: int = 0
    last_incarnation: int = 0
    boots: int = 0
    packet_lag_ms: int = 0
    timer_lag_ms: int = 0
    paused_until_ms: int = 0  # a frozen process: its inputs and timers wait until then
    sent: int = 0
    rng: random.Random = field(default_factory=random.Random)

    # -- the handle an attachment acts through ----------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.cluster.engine.now_ms

    def queue_broadcast(self, payload: bytes) -> None:
        assert self.core is not None
        self.core.queue_broadcast(payload, self.now_ms)

    def send_user_message(self, payload: bytes, fanout: int) -> None:
        assert self.core is not None
        self.cluster.apply(self, self.core.send_user_message(payload, fanout, self.now_ms))

    def set_timer(self, token: object, at_ms: int) -> None:
        self.cluster.engine.schedule(at_ms + self.timer_lag_ms, K_ATT_TIMER, self.idx,
                                     self.generation, token)  # fmt: skip

    def exchange(self, to: Address, data: bytes, token: object) -> None:
        self.cluster.start_exchange(self, to, data, token)


@dataclass(slots=True)
class SubjectRecord:
    """What happened to one subject: truth changes and what the observers made of them."""

    crashed_ms: int | None = None
    first_suspect_ms: int | None = None  # first SUSPECT (or DEAD) by any live observer
    first_dead_ms: int | None = None  # first DEAD by any live observer
    all_dead_ms: int | None = None  # no live observer sees it alive or suspect any more
    left_ms: int | None = None
    stale_until_ms: int = 0  # DEAD claims before this are echoes of an earlier life


@dataclass(slots=True)
class Ledger:
    false_dead: list[tuple[int, int, int]] = field(default_factory=list)  # (t, observer, subject)
    false_suspect: int = 0
    incarnation_regressions: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    changes: int = 0
    reaps: int = 0
    # Things no honest run can produce, so only an accepted forgery can (signed membership):
    # (t, observer, subject, what) for an incarnation above what the subject itself ever
    # signed + 1, an address that is not the subject's, or a leave it never announced ...
    forged: list[tuple[int, int, int, str]] = field(default_factory=list)
    # ... and (t, observer, name) for a member named by no host at all.
    strangers: list[tuple[int, int, str]] = field(default_factory=list)


class Cluster:
    """Hosts + network + engine. Scenarios drive it; checkers read it."""

    def __init__(
        self,
        seed: int,
        config: Any,
        network: Network,
        core_factory: CoreFactory = default_core_factory,
        attachment_factory: AttachmentFactory | None = None,
        tcp_timeout_ms: int = 10_000,
        leave_flush_ms: int = 1_000,
        sample_ms: int = 250,
        stale_window_ms: int = 60_000,
        identities: SimIdentities | None = None,
    ) -> None:
        self.seed = seed
        self.identities = identities if identities is not None else SimIdentities()
        self.attackers: list[Any] = []  # captured hosts (simulations/captured.py), if any
        self.paused = False  # any host ever paused: only then do handlers look (``pause``)
        self.config = config
        self.network = network
        self.engine = Engine()
        self.core_factory = core_factory
        self.attachment_factory = attachment_factory
        self.tcp_timeout_ms = tcp_timeout_ms
        self.leave_flush_ms = leave_flush_ms
        self.sample_ms = sample_ms
        self.stale_window_ms = stale_window_ms
        self.nodes: list[SimNode] = []
        self.by_address: dict[Address, int] = {}
        self.by_name: dict[str, int] = {}
        self.rng = derive_rng(seed, "cluster")  # lag jitter and seed choice
        # Ledger: views[o][s] is incarnation << 2 | state as live observer o last heard of subject
        # s, or NO_VIEW. A flat list, not a dict: at 10,000 hosts there are 10^8 of these, and a
        # list slot costs 8 bytes (the codes are small, shared ints) where a dict entry cost ~100.
        self.views: list[list[int] | None] = []
        self.n_view: list[list[int]] = [[], [], [], []]  # per state code, per subject
        self.subjects: list[SubjectRecord] = []
        self.signed_max: list[int] = []  # per host: the highest incarnation it ever claimed
        self.ledger = Ledger()
        self.up_count = 0
        # Series sampled every sample_ms: (t, wrong views, suspect views of live subjects, up).
        self.samples: list[tuple[int, int, int, int]] = []
        self.sent_per_s: list[int] = []  # packets sent in each virtual second
        self.up_per_s: list[int] = []
        self.on_sample: Callable[[int], None] | None = None
        e = self.engine
        e.register(K_PACKET, self._on_packet)
        e.register(K_TIMER, self._on_timer)
        e.register(K_PP_REQUEST, self._on_pp_request)
        e.register(K_PP_REPLY, self._on_pp_reply)
        e.register(K_PP_FAIL, self._on_pp_fail)
        e.register(K_ACTION, self._on_action)
        e.register(K_SAMPLE, self._on_sample)
        e.register(K_ATT_TIMER, self._on_att_timer)
        e.register(K_EX_REQUEST, self._on_ex_request)
        e.register(K_EX_REPLY, self._on_ex_reply)
        e.register(K_EX_FAIL, self._on_ex_fail)
        e.schedule(0, K_SAMPLE)

    # -- building ----------------------------------------------------------------------------

    def add_node(self, name: str | None = None) -> SimNode:
        idx = len(self.nodes)
        name = name or f"node-{idx:05d}"
        # 10.x.y.z: unique per index, stable, and looks like a real address in traces.
        address = Address(f"10.{(idx >> 16) & 255}.{(idx >> 8) & 255}.{idx & 255}", 7946)
        node = SimNode(idx, name, address, self)
        self.nodes.append(node)
        self.by_address[address] = idx
        self.by_name[name] = idx
        self.views.append(None)
        for counts in self.n_view:
            counts.append(0)
        self.subjects.append(SubjectRecord())
        self.signed_max.append(0)
        self.network.add_node()
        return node

    def wall_ms(self) -> int:
        """The wall clock certificates are checked against: the epoch plus virtual time."""
        return EPOCH_MS + self.engine.now_ms

    def at(self, at_ms: int, action: Callable[..., None], *args: Any) -> None:
        """Schedule a fault or other action; it runs as an event, so it is part of the trace."""
        self.engine.schedule(at_ms, K_ACTION, action, args)

    # -- lifecycle ---------------------------------------------------------------------------

    def boot(self, idx: int, seeds: Sequence[int] = (), with_data: bool = True) -> None:
        """Start (or restart) a host and join it through ``seeds`` (host indices)."""
        node = self.nodes[idx]
        assert node.state != UP, f"{node.name} is already up"
        now = self.engine.now_ms
        restart = node.boots > 0
        incarnation = node.last_incarnation + 1 if restart and with_data else 0
        node.boots += 1
        node.generation += 1
        node.paused_until_ms = 0  # a new process is not the frozen one
        node.rng = derive_rng(self.seed, "node", node.name, node.boots)
        authority = self.identities.authority(node.name, self.wall_ms)
        node.core = self.core_factory(node.name, node.address, self.config, node.rng, now,
                                      incarnation, authority)  # fmt: skip
        node.incarnation_at_boot = incarnation
        node.last_incarnation = max(node.last_incarnation, incarnation)
        node.state = UP
        self.up_count += 1
        self.views[idx] = [NO_VIEW] * len(self.nodes)
        rec = self.subjects[idx]
        rec.crashed_ms = None
        rec.left_ms = None
        if restart:
            # Rumours of the previous life may still be travelling; they are not false positives.
            rec.stale_until_ms = now + self.stale_window_ms
        if self.attachment_factory is not None:
            previous = node.attachment if (restart and with_data) else None
            node.attachment = self.attachment_factory(node, previous)
        self.apply(node, node.core.start(now))
        seed_addrs = [self.nodes[s].address for s in seeds if s != idx]
        if seed_addrs:
            self.apply(node, node.core.join(seed_addrs, now))
        if node.attachment is not None:
            node.attachment.start(node, now)

    def crash(self, idx: int) -> None:
        """The process dies without a word: no leave, timers and in-flight replies are void."""
        node = self.nodes[idx]
        if node.state != UP:
            return
        self._stop(node, DOWN)
        self.subjects[idx].crashed_ms = self.engine.now_ms
        for rec_name in ("first_suspect_ms", "first_dead_ms", "all_dead_ms"):
            setattr(self.subjects[idx], rec_name, None)

    def leave(self, idx: int) -> None:
        """Graceful leave: announce, keep the process up for ``leave_flush_ms``, then exit."""
        node = self.nodes[idx]
        if node.state != UP or node.core is None:
            return
        now = self.engine.now_ms
        self.apply(node, node.core.leave(now))
        # Truth flips now: from here on the mesh should report it left. Its own view no longer
        # counts (it is leaving), but its process keeps running to flush the announcement.
        node.state = LEFT
        self.up_count -= 1
        self._drop_views(idx)
        self.subjects[idx].left_ms = now
        self.at(now + self.leave_flush_ms, self._finish_leave, idx, node.generation)

    def _finish_leave(self, idx: int, generation: int) -> None:
        node = self.nodes[idx]
        if node.generation == generation and node.state == LEFT:
            self._remember_incarnation(node)
            node.core = None
            node.generation += 1

    def pause(self, idx: int, until_ms: int) -> None:
        """Freeze host ``idx`` until ``until_ms`` (a GC pause, SIGSTOP, a stalled VM): every
        packet, stream leg and timer due meanwhile waits, in order, and is handled when it wakes."""
        node = self.nodes[idx]
        node.paused_until_ms = max(node.paused_until_ms, until_ms)
        self.paused = True

    def _deferred(self, idx: int, kind: int, a: Any, b: Any, c: Any) -> bool:
        """True when host ``idx`` is paused: the event is put back for when it wakes."""
        until = self.nodes[idx].paused_until_ms
        if until <= self.engine.now_ms:
            return False
        self.engine.schedule(until, kind, a, b, c)
        return True

    def set_slow(self, idx: int, packet_lag_ms: int, timer_lag_ms: int) -> None:
        node = self.nodes[idx]
        node.packet_lag_ms = packet_lag_ms
        node.timer_lag_ms = timer_lag_ms

    def _stop(self, node: SimNode, new_state: int) -> None:
        self._remember_incarnation(node)
        node.state = new_state
        node.core = None
        node.generation += 1
        self.up_count -= 1
        self._drop_views(node.idx)

    def _remember_incarnation(self, node: SimNode) -> None:
        if node.core is not None:
            inc = node.core.local_member().incarnation
            if inc < node.last_incarnation:
                self.ledger.incarnation_regressions.append(
                    (self.engine.now_ms, node.idx, node.idx, node.last_incarnation, inc)
                )
            node.last_incarnation = max(node.last_incarnation, inc)

    def _drop_views(self, idx: int) -> None:
        view = self.views[idx]
        if view is None:
            return
        n_view = self.n_view
        for s, code in enumerate(view):
            if code != NO_VIEW:
                n_view[code & 3][s] -= 1
        self.views[idx] = None

    # -- effects -----------------------------------------------------------------------------

    def apply(self, node: SimNode, effects: list[Any]) -> None:
        """Carry out a core's effects for ``node`` in order (order matters for determinism)."""
        for eff in effects:
            tp = type(eff)
            if tp is SendPacket:
                self._send(node, eff.to, eff.data)
            elif tp is SetTimer:
                self.engine.schedule(eff.at_ms + node.timer_lag_ms, K_TIMER, node.idx,
                                     node.generation, eff.timer)  # fmt: skip
            elif tp is MemberChanged:
                self._member_changed(node, eff.member, eff.previous)
                if node.attachment is not None:
                    node.attachment.on_member_changed(node, eff.member, eff.previous,
                                                      self.engine.now_ms)  # fmt: skip
            elif tp is StartPushPull:
                self._start_push_pull(node, eff.to, eff.join)
            elif tp is MemberReaped:
                self._member_reaped(node, eff.name)
            elif tp is UserMessage:
                if node.attachment is not None:
                    node.attachment.on_user_message(node, eff.src, eff.payload,
                                                    self.engine.now_ms)  # fmt: skip
            else:
                raise TypeError(f"unknown effect {eff!r}")

    def _send(self, node: SimNode, to: Address, data: bytes) -> None:
        net = self.network
        st = net.stats
        size = len(data)
        st.sent += 1
        st.sent_bytes += size
        node.sent += 1
        now = self.engine.now_ms
        sec = now // 1000
        per_s = self.sent_per_s
        while len(per_s) <= sec:
            per_s.append(0)
        per_s[sec] += 1
        if size > net.max_packet_bytes:
            st.dropped_oversize += 1
            return
        dst = self.by_address.get(to)
        if dst is None:
            st.dropped_unroutable += 1
            return
        src = node.idx
        if net.impaired and not net.link_up(src, dst):
            st.dropped_partition += 1
            return
        rng = net.rng
        if net.loss and rng.random() < net.loss:
            st.dropped_loss += 1
            return
        lag = self.nodes[dst].packet_lag_ms
        if lag:
            lag = int(lag * (0.5 + self.rng.random()))
        self.engine.schedule(now + net.latency(src, dst) + lag, K_PACKET, dst, src, data)
        if net.duplicate and rng.random() < net.duplicate:
            st.duplicated += 1
            self.engine.schedule(now + net.latency(src, dst) + lag, K_PACKET, dst, src, data)

    def _on_packet(self, dst: int, src: int, data: bytes) -> None:
        if self.paused and self._deferred(dst, K_PACKET, dst, src, data):
            return
        node = self.nodes[dst]
        net_stats = self.network.stats
        if node.core is None:
            net_stats.dropped_down += 1
            return
        net_stats.delivered += 1
        engine = self.engine
        engine.trace(K_PACKET, src, dst, len(data))
        effects = node.core.handle_packet(self.nodes[src].address, data, engine.now_ms)
        if effects:
            self.apply(node, effects)

    def _on_timer(self, idx: int, generation: int, timer: object) -> None:
        if self.paused and self._deferred(idx, K_TIMER, idx, generation, timer):
            return
        node = self.nodes[idx]
        if node.generation != generation or node.core is None:
            return
        engine = self.engine
        engine.trace(K_TIMER, idx, 0, 0)
        effects = node.core.handle_timer(timer, engine.now_ms)
        if effects:
            self.apply(node, effects)

    # -- push-pull (TCP-like) ----------------------------------------------------------------

    def _leg_delay(self, src: int, dst: int) -> int:
        lag = self.nodes[dst].packet_lag_ms
        if lag:
            lag = int(lag * (0.5 + self.rng.random()))
        return self.network.latency(src, dst) + lag

    def _start_push_pull(
        self, node: SimNode, to: Address, join: bool, data: bytes | None = None
    ) -> None:
        assert node.core is not None
        now = self.engine.now_ms
        self.network.stats.streams += 1
        dst = self.by_address.get(to)
        if data is None:
            data = node.core.push_pull_payload(join)
        ticket = (node.generation, now, data)
        if dst is None or not self.network.link_up(node.idx, dst):
            self.engine.schedule(now + self.tcp_timeout_ms, K_PP_FAIL, node.idx, to, ticket)
            return
        self.engine.schedule(now + self._leg_delay(node.idx, dst), K_PP_REQUEST, node.idx, dst,
                             ticket)  # fmt: skip

    def _on_pp_request(self, src: int, dst: int, ticket: tuple[int, int, bytes]) -> None:
        if self.paused and self._deferred(dst, K_PP_REQUEST, src, dst, ticket):
            return
        engine = self.engine
        peer = self.nodes[dst]
        initiator = self.nodes[src]
        _gen, started, data = ticket
        if peer.core is None or peer.state != UP:
            engine.schedule(started + self.tcp_timeout_ms, K_PP_FAIL, src, peer.address, ticket)
            return
        engine.trace(K_PP_REQUEST, src, dst, len(data))
        reply, effects = peer.core.handle_push_pull_request(initiator.address, data,
                                                            engine.now_ms)  # fmt: skip
        if effects:
            self.apply(peer, effects)
        if not self.network.link_up(dst, src):
            engine.schedule(started + self.tcp_timeout_ms, K_PP_FAIL, src, peer.address, ticket)
            return
        engine.schedule(engine.now_ms + self._leg_delay(dst, src), K_PP_REPLY, src, dst,
                        (ticket[0], started, reply))  # fmt: skip

    def _on_pp_reply(self, src: int, dst: int, ticket: tuple[int, int, bytes]) -> None:
        if self.paused and self._deferred(src, K_PP_REPLY, src, dst, ticket):
            return
        node = self.nodes[src]
        generation, started, reply = ticket
        if node.generation != generation or node.core is None:
            return
        engine = self.engine
        peer_addr = self.nodes[dst].address
        if engine.now_ms - started > self.tcp_timeout_ms:
            # The reply came back, but after the read deadline: the runtime would have given up.
            self.network.stats.streams_failed += 1
            self.apply(node, node.core.push_pull_failed(peer_addr, engine.now_ms))
            return
        engine.trace(K_PP_REPLY, dst, src, len(reply))
        self.apply(node, node.core.handle_push_pull_reply(peer_addr, reply, engine.now_ms))

    def _on_pp_fail(self, src: int, to: Address, ticket: tuple[int, int, bytes]) -> None:
        if self.paused and self._deferred(src, K_PP_FAIL, src, to, ticket):
            return
        node = self.nodes[src]
        if node.generation != ticket[0] or node.core is None:
            return
        self.network.stats.streams_failed += 1
        self.engine.trace(K_PP_FAIL, src, self.by_address.get(to, -1), 0)
        self.apply(node, node.core.push_pull_failed(to, self.engine.now_ms))

    # -- what a captured host sends besides its core's traffic (simulations/captured.py) ---------

    def send_from(self, idx: int, to: Address, data: bytes) -> None:
        """A datagram from host ``idx``'s address, through the network like any other."""
        self._send(self.nodes[idx], to, data)

    def push_pull_from(self, idx: int, to: Address, data: bytes) -> None:
        """A push-pull request from host ``idx`` carrying ``data``; the reply goes to its core."""
        self._start_push_pull(self.nodes[idx], to, False, data)

    # -- attachment plumbing -----------------------------------------------------------------

    def start_exchange(self, node: SimNode, to: Address, data: bytes, token: object) -> None:
        now = self.engine.now_ms
        dst = self.by_address.get(to)
        ticket = (node.generation, now, data, token)
        if dst is None or not self.network.link_up(node.idx, dst):
            self.engine.schedule(now + self.tcp_timeout_ms, K_EX_FAIL, node.idx, dst, ticket)
            return
        self.engine.schedule(now + self._leg_delay(node.idx, dst), K_EX_REQUEST, node.idx, dst,
                             ticket)  # fmt: skip

    def _on_ex_request(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        if self.paused and self._deferred(dst, K_EX_REQUEST, src, dst, ticket):
            return
        engine = self.engine
        peer = self.nodes[dst]
        generation, started, data, token = ticket
        if peer.attachment is None or peer.state != UP or not self.network.link_up(dst, src):
            engine.schedule(started + self.tcp_timeout_ms, K_EX_FAIL, src, dst, ticket)
            return
        engine.trace(K_EX_REQUEST, src, dst, len(data))
        reply = peer.attachment.handle_exchange(peer, self.nodes[src].address, data,
                                                engine.now_ms)  # fmt: skip
        engine.schedule(engine.now_ms + self._leg_delay(dst, src), K_EX_REPLY, src, dst,
                        (generation, started, reply, token))  # fmt: skip

    def _on_ex_reply(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        if self.paused and self._deferred(src, K_EX_REPLY, src, dst, ticket):
            return
        node = self.nodes[src]
        generation, started, reply, token = ticket
        if node.generation != generation or node.attachment is None:
            return
        now = self.engine.now_ms
        if now - started > self.tcp_timeout_ms:
            node.attachment.on_exchange_failed(node, token, now)
            return
        self.engine.trace(K_EX_REPLY, dst, src, len(reply))
        node.attachment.on_exchange_reply(node, token, reply, now)

    def _on_ex_fail(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        if self.paused and self._deferred(src, K_EX_FAIL, src, dst, ticket):
            return
        node = self.nodes[src]
        if node.generation != ticket[0] or node.attachment is None:
            return
        node.attachment.on_exchange_failed(node, ticket[3], self.engine.now_ms)

    def _on_att_timer(self, idx: int, generation: int, token: object) -> None:
        if self.paused and self._deferred(idx, K_ATT_TIMER, idx, generation, token):
            return
        node = self.nodes[idx]
        if node.generation != generation or node.attachment is None:
            return
        node.attachment.on_timer(node, token, self.engine.now_ms)

    # -- actions and samples -----------------------------------------------------------------

    def _on_action(self, action: Callable[..., None], args: tuple[Any, ...], _c: Any) -> None:
        self.engine.trace(K_ACTION, 0, 0, 0)
        action(*args)

    def _on_sample(self, _a: Any, _b: Any, _c: Any) -> None:
        now = self.engine.now_ms
        wrong, suspect = self.view_errors()
        self.samples.append((now, wrong, suspect, self.up_count))
        sec = now // 1000
        while len(self.up_per_s) <= sec:
            self.up_per_s.append(self.up_count)
        if self.on_sample is not None:
            self.on_sample(now)
        self.engine.schedule(now + self.sample_ms, K_SAMPLE)

    def view_errors(self) -> tuple[int, int]:
        """(wrong views, suspect views of up subjects) over all live observer/subject pairs.

        A view is wrong when a live observer does not see an UP subject as alive, or still sees
        a crashed or departed subject as alive or suspect. O(subjects), not O(pairs).
        """
        alive, suspect = self.n_view[V_ALIVE], self.n_view[V_SUSPECT]
        observers = self.up_count
        wrong = 0
        suspect_up = 0
        for s, node in enumerate(self.nodes):
            st = node.state
            if st == UP:
                wrong += observers - 1 - alive[s]
                suspect_up += suspect[s]
            elif st != NOT_STARTED:
                wrong += alive[s] + suspect[s]
        return wrong, suspect_up

    # -- the observer ledger -----------------------------------------------------------------

    def _member_changed(self, observer: SimNode, member: Member, previous: object) -> None:
        s = self.by_name.get(member.name)
        o = observer.idx
        if s is None:
            self.ledger.strangers.append((self.engine.now_ms, o, member.name))
            return
        if s == o:
            if member.incarnation > self.signed_max[o]:
                self.signed_max[o] = member.incarnation
            return
        view = self.views[o]
        if view is None:  # a leaving node's last words do not count as a view
            return
        ledger = self.ledger
        ledger.changes += 1
        code = _STATE_CODE[member.state]
        inc = member.incarnation
        n_view = self.n_view
        if s >= len(view):  # a host added after this observer booted
            view.extend([NO_VIEW] * (len(self.nodes) - len(view)))
        old = view[s]
        if old != NO_VIEW:
            if inc < old >> 2:
                ledger.incarnation_regressions.append((self.engine.now_ms, o, s, old >> 2, inc))
            n_view[old & 3][s] -= 1
        view[s] = inc << 2 | code
        n_view[code][s] += 1
        subject = self.nodes[s]
        if inc > self.signed_max[s] + 1 or member.address != subject.address:
            what = f"incarnation {inc} (it signed {self.signed_max[s]}) at {member.address}"
            ledger.forged.append((self.engine.now_ms, o, s, what))
        if code == V_ALIVE:
            return
        now = self.engine.now_ms
        rec = self.subjects[s]
        if subject.state == UP:
            if now < rec.stale_until_ms or inc < subject.incarnation_at_boot:
                return
            if code == V_LEFT:
                ledger.forged.append((now, o, s, "a leave it never announced"))
                return
            if code == V_DEAD:
                ledger.false_dead.append((now, o, s))
            elif code == V_SUSPECT:
                ledger.false_suspect += 1
        elif subject.state == DOWN and rec.crashed_ms is not None:
            if rec.first_suspect_ms is None:
                rec.first_suspect_ms = now
            if code >= V_DEAD and rec.first_dead_ms is None:
                rec.first_dead_ms = now
            if rec.all_dead_ms is None and n_view[V_ALIVE][s] + n_view[V_SUSPECT][s] == 0:
                rec.all_dead_ms = now

    def _member_reaped(self, observer: SimNode, name: str) -> None:
        s = self.by_name.get(name)
        view = self.views[observer.idx]
        if s is None or view is None:
            return
        self.ledger.reaps += 1
        old = view[s] if s < len(view) else NO_VIEW
        if old != NO_VIEW:
            view[s] = NO_VIEW
            self.n_view[old & 3][s] -= 1
            rec = self.subjects[s]
            if (
                self.nodes[s].state == DOWN
                and rec.all_dead_ms is None
                and self.n_view[V_ALIVE][s] + self.n_view[V_SUSPECT][s] == 0
            ):
                rec.all_dead_ms = self.engine.now_ms

    # -- running -----------------------------------------------------------------------------

    def run_until(self, end_ms: int, step_ms: int = 1_000) -> None:
        engine = self.engine
        t = engine.now_ms
        while t < end_ms:
            t = min(end_ms, t + step_ms)
            engine.run_until(t)

    def up_nodes(self) -> list[int]:
        return [n.idx for n in self.nodes if n.state == UP]

    def random_seeds(self, k: int, exclude: int = -1) -> list[int]:
        """``k`` random UP hosts to join through (the cluster's own rng: replayable)."""
        pool = [i for i in self.up_nodes() if i != exclude]
        if len(pool) <= k:
            return pool
        return self.rng.sample(pool, k)
