"""A cluster of real SWIM cores wired to the engine and the simulated network.

Theory of operation
-------------------
Each simulated host (``SimNode``, ``hosts.py``) owns one real, sans-IO ``SwimNode`` and the
``Cluster`` plays the runtime the core's effect contract (``gossipmesh/swim/effects.py``) asks
for, exactly as the trio agent does:

- ``SendPacket`` bytes go through ``Network`` (loss, partitions, latency) and arrive as a
  ``handle_packet(src, data, now_ms)`` call; the bytes are the real wire encoding, so codec bugs
  and size-limit bugs surface here rather than in production.
- ``SetTimer`` becomes a heap event. A node carries a *generation*, bumped on every crash and
  restart, and each timer remembers the generation it was set in, so a dead process's timers never
  fire into its successor. (The core re-checks its own tokens too; this is the runtime's half.)
- ``StartPushPull`` becomes a TCP-like exchange (``streams.py``): the request travels one way, the
  peer's handler runs, the reply travels back; if either leg is blocked or the peer is down the
  initiator gets ``push_pull_failed`` after the TCP timeout, as a real connect/read timeout would.
- ``MemberChanged`` / ``MemberReaped`` update the *observer ledger* (``views.py``): for every live
  observer the state and incarnation it believes each subject has, with per-subject counts, so
  "is every view whole?" is a sum over subjects, not a scan of N^2 pairs. The same events drive
  detection times and false positives.
- ``UserMessage`` goes to the node's *attachment*, a second per-node core such as the config CRDT
  (``hosts.py`` describes the hook).

Signatures are real (DESIGN-11 D3): every host's core gets a ``MembershipAuthority`` over its own
node certificate, issued by the cluster's in-process CA (``identity.py``), and verification is
memoised across hosts (a pure function: behaviour-neutral). ``wall_ms`` is what the certificates
are checked against: a fixed epoch plus the virtual time.

Ground truth is changed here and only here (``boot``, ``crash``, ``leave``): a node is UP, DOWN
(crashed), LEFT, or not yet started. Checkers compare the ledger with the truth.

Slow nodes model a CPU-starved process: every inbound packet and push-pull leg is handed to the
core ``packet_lag_ms`` (±50 % jitter) late and every timer ``timer_lag_ms`` late. The node acts on
stale input, its acks leave late and its own probes see acks "too late" - the situation Lifeguard
was designed for. A *paused* host (``pause``: a GC pause, SIGSTOP, a stalled VM) handles nothing
until it wakes: every packet, stream leg and timer due meanwhile is put back, in order, to the
moment it resumes.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from typing import Any

from gossipmesh.ids import Address
from gossipmesh.swim.effects import (
    MemberChanged,
    MemberReaped,
    SendPacket,
    SetTimer,
    StartPushPull,
    UserMessage,
)
from simulations.engine import Engine, derive_rng
from simulations.events import K_ACTION, K_ATT_TIMER, K_PACKET, K_SAMPLE, K_TIMER
from simulations.hosts import (
    DOWN,
    LEFT,
    UP,
    AttachmentFactory,
    CoreFactory,
    SimNode,
    default_core_factory,
)
from simulations.identity import EPOCH_MS, SimIdentities
from simulations.network import Network
from simulations.streams import Streams
from simulations.views import Ledger, ObserverLedger, SubjectRecord


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
        # The same by host alone: a str caches its hash, while hashing an ``Address`` (a
        # dataclass) is a Python call, and ``_send`` looks up every packet's destination.
        self.by_host: dict[str, int] = {}
        self.by_name: dict[str, int] = {}
        self.rng = derive_rng(seed, "cluster")  # lag jitter and seed choice
        # What every live observer believes (views.py); its flat-array layout is what lets
        # 10,000 hosts fit in memory. ``views``, ``n_view``, ``subjects``, ``signed_max`` and
        # ``ledger`` below read through to it.
        self.observed = ObserverLedger(self.engine, self.nodes, self.by_name)
        self.up_count = 0
        # Series sampled every sample_ms: (t, wrong views, suspect views of live subjects, up).
        self.samples: list[tuple[int, int, int, int]] = []
        self.sent_per_s: list[int] = []  # packets sent in each virtual second
        self.up_per_s: list[int] = []
        self.on_sample: Callable[[int], None] | None = None
        e = self.engine
        e.register(K_PACKET, self._on_packet)
        e.register(K_TIMER, self._on_timer)
        e.register(K_ACTION, self._on_action)
        e.register(K_SAMPLE, self._on_sample)
        e.register(K_ATT_TIMER, self._on_att_timer)
        self.streams = Streams(self)  # push-pull and exchange legs register their own kinds
        e.schedule(0, K_SAMPLE)

    # -- the observer ledger, read through (views.py) ----------------------------------------

    @property
    def views(self) -> list[MutableSequence[int] | None]:
        return self.observed.views

    @property
    def n_view(self) -> list[list[int]]:
        return self.observed.n_view

    @property
    def subjects(self) -> list[SubjectRecord]:
        return self.observed.subjects

    @property
    def signed_max(self) -> list[int]:
        return self.observed.signed_max

    @property
    def ledger(self) -> Ledger:
        return self.observed.ledger

    def view_errors(self) -> tuple[int, int]:
        """(wrong views, suspect views of up subjects): ``ObserverLedger.view_errors``."""
        return self.observed.view_errors(self.up_count)

    # -- building ----------------------------------------------------------------------------

    def add_node(self, name: str | None = None) -> SimNode:
        idx = len(self.nodes)
        name = name or f"node-{idx:05d}"
        # 10.x.y.z: unique per index, stable, and looks like a real address in traces.
        address = Address(f"10.{(idx >> 16) & 255}.{(idx >> 8) & 255}.{idx & 255}", 7946)
        node = SimNode(idx, name, address, self)
        self.nodes.append(node)
        self.by_address[address] = idx
        self.by_host[address.host] = idx
        self.by_name[name] = idx
        self.observed.add_subject()
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
        # On a restart, rumours of the previous life may still be travelling; they are not false
        # positives.
        self.observed.host_booted(idx, now + self.stale_window_ms if restart else None)
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
        self.observed.host_crashed(idx, self.engine.now_ms)

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
        self.observed.drop_views(idx)
        self.observed.host_left(idx, now)
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

    def deferred(self, idx: int, kind: int, a: Any, b: Any, c: Any) -> bool:
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
        self.observed.drop_views(node.idx)

    def _remember_incarnation(self, node: SimNode) -> None:
        if node.core is not None:
            inc = node.core.local_member().incarnation
            if inc < node.last_incarnation:
                self.observed.ledger.incarnation_regressions.append(
                    (self.engine.now_ms, node.idx, node.idx, node.last_incarnation, inc)
                )
            node.last_incarnation = max(node.last_incarnation, inc)

    # -- effects -----------------------------------------------------------------------------

    def apply(self, node: SimNode, effects: list[Any]) -> None:
        """Carry out a core's effects for ``node`` in order (order matters for determinism)."""
        for eff in effects:
            tp = type(eff)
            if tp is SetTimer:  # first: most effects are timers (about four to every packet)
                self.engine.schedule(eff.at_ms + node.timer_lag_ms, K_TIMER, node.idx,
                                     node.generation, eff.timer)  # fmt: skip
            elif tp is SendPacket:
                self._send(node, eff.to, eff.data)
            elif tp is MemberChanged:
                self.observed.member_changed(node, eff.member)
                if node.attachment is not None:
                    node.attachment.on_member_changed(node, eff.member, eff.previous,
                                                      self.engine.now_ms)  # fmt: skip
            elif tp is StartPushPull:
                self.streams.start_push_pull(node, eff.to, eff.join)
            elif tp is MemberReaped:
                self.observed.member_reaped(node, eff.name)
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
        dst = self.by_host.get(to.host)  # ``by_address.get(to)``, cheaper (see ``by_host``)
        if dst is None or self.nodes[dst].address.port != to.port:
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
        if self.paused and self.deferred(dst, K_PACKET, dst, src, data):
            return
        node = self.nodes[dst]
        net_stats = self.network.stats
        if node.core is None:
            net_stats.dropped_down += 1
            return
        net_stats.delivered += 1
        engine = self.engine
        engine.record((engine.now_ms, K_PACKET, src, dst, len(data)))
        effects = node.core.handle_packet(self.nodes[src].address, data, engine.now_ms)
        if effects:
            self.apply(node, effects)

    def _on_timer(self, idx: int, generation: int, timer: object) -> None:
        if self.paused and self.deferred(idx, K_TIMER, idx, generation, timer):
            return
        node = self.nodes[idx]
        if node.generation != generation or node.core is None:
            return
        engine = self.engine
        engine.record((engine.now_ms, K_TIMER, idx, 0, 0))
        effects = node.core.handle_timer(timer, engine.now_ms)
        if effects:
            self.apply(node, effects)

    # -- what a captured host sends besides its core's traffic (simulations/captured.py) ---------

    def send_from(self, idx: int, to: Address, data: bytes) -> None:
        """A datagram from host ``idx``'s address, through the network like any other."""
        self._send(self.nodes[idx], to, data)

    def push_pull_from(self, idx: int, to: Address, data: bytes) -> None:
        """A push-pull request from host ``idx`` carrying ``data``; the reply goes to its core."""
        self.streams.start_push_pull(self.nodes[idx], to, False, data)

    # -- attachment timers (exchanges are stream legs: streams.py) ----------------------------

    def set_attachment_timer(self, node: SimNode, token: object, at_ms: int) -> None:
        """``host.set_timer``: delivered to the attachment as ``on_timer``, late on a slow host."""
        self.engine.schedule(at_ms + node.timer_lag_ms, K_ATT_TIMER, node.idx, node.generation,
                             token)  # fmt: skip

    def _on_att_timer(self, idx: int, generation: int, token: object) -> None:
        if self.paused and self.deferred(idx, K_ATT_TIMER, idx, generation, token):
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
