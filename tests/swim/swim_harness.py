"""A tiny deterministic world for SwimNode tests: a virtual clock, a network and timers.

Every effect a node returns is turned into an event on one heap ordered by (time, sequence):
``SendPacket`` is delivered ``latency_ms`` later unless the node is down or a drop rule says no;
``StartPushPull`` runs the whole TCP exchange synchronously at the current instant; ``SetTimer``
fires at its time. Nothing sleeps; ``run_for`` advances virtual time as fast as Python goes.

Slow nodes: ``delay_packet(src, dst, datagram)`` may add milliseconds to one datagram's delivery,
and ``slow_nodes`` uses it to model members whose packet handling lags (a GC pause, an
overloaded host): every datagram *to* a slow node is handled 300..800 ms (say) late, so its acks,
its forwarded acks and its refutations all leave late.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swim_auth import authority

from gossipmesh.ids import Address
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
from gossipmesh.swim.member import Member, MemberState
from gossipmesh.swim.node import SwimNode

DropRule = Callable[[str, str], bool]  # (src name, dst name) -> drop?


@dataclass
class Event:
    at_ms: int
    node: str
    effect: Effect


@dataclass
class World:
    config: SwimConfig = field(default_factory=SwimConfig.lan)
    seed: int = 1
    latency_ms: int = 1
    now_ms: int = 0
    nodes: dict[str, SwimNode] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    drop: DropRule | None = None
    # Finer rule for UDP only: (src, dst, datagram) -> drop?
    drop_packet: Callable[[str, str, bytes], bool] | None = None
    # Extra delivery delay in ms for one datagram: (src, dst, datagram) -> ms (0 for none).
    delay_packet: Callable[[str, str, bytes], int] | None = None
    log: list[Event] = field(default_factory=list)
    user_messages: dict[str, list[bytes]] = field(default_factory=dict)
    max_packet_seen: int = 0
    _heap: list[tuple[int, int, str, Any]] = field(default_factory=list)
    _seq: int = 0
    _by_addr: dict[Address, str] = field(default_factory=dict)
    _epoch: dict[str, int] = field(default_factory=dict)  # bumps on restart: old timers die

    # --- building ---------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        incarnation: int = 0,
        meta: bytes = b"",
        config: SwimConfig | None = None,
        join: str | None = None,
        start: bool = True,
    ) -> SwimNode:
        index = len(self._by_addr) + 1 if name not in self.nodes else None
        addr = self.address_of(name) if name in self.nodes else Address(f"10.0.0.{index}", 7946)
        rng = random.Random(f"{self.seed}:{name}:{self._epoch.get(name, 0)}")
        node = SwimNode(
            name,
            addr,
            config or self.config,
            rng,
            self.now_ms,
            meta=meta,
            incarnation=incarnation,
            authority=authority(name),
        )
        self.nodes[name] = node
        self._by_addr[addr] = name
        self.down.discard(name)
        if start:
            self.apply(name, node.start(self.now_ms))
        if join is not None:
            self.apply(name, node.join([self.address_of(join)], self.now_ms))
        return node

    def cluster(self, n: int, **kw: Any) -> list[SwimNode]:
        """``n`` nodes named n0..n{n-1}, each joining through n0, then settle for 5 s."""
        nodes = [self.add("n0", **kw)]
        for i in range(1, n):
            nodes.append(self.add(f"n{i}", join="n0", **kw))
        self.run_for(5_000)
        return nodes

    def address_of(self, name: str) -> Address:
        return self.nodes[name].address

    # --- faults -----------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """The process dies: it neither sends, receives nor fires timers."""
        self.down.add(name)
        self._epoch[name] = self._epoch.get(name, 0) + 1

    def restart(self, name: str, *, incarnation: int, join: str) -> SwimNode:
        return self.add(name, incarnation=incarnation, join=join)

    def partition(self, *groups: set[str]) -> None:
        side = {n: i for i, g in enumerate(groups) for n in g}
        self.drop = lambda s, d: side.get(s, -1) != side.get(d, -2)

    def heal(self) -> None:
        self.drop = None

    def slow_nodes(self, names: set[str], lo_ms: int, hi_ms: int, rng: random.Random) -> None:
        """Datagrams to ``names`` are handled ``lo_ms..hi_ms`` (uniform) late."""
        self.delay_packet = lambda s, d, data: rng.randint(lo_ms, hi_ms) if d in names else 0

    # --- running ----------------------------------------------------------------------------------

    def _push(self, at_ms: int, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, kind, payload))

    def apply(self, name: str, effects: list[Effect]) -> None:
        epoch = self._epoch.get(name, 0)
        for eff in effects:
            t = type(eff)
            if t is SendPacket:
                assert isinstance(eff, SendPacket)
                size = len(eff.data)
                self.max_packet_seen = max(self.max_packet_seen, size)
                assert size <= self.nodes[name].config.packet_size_bytes, size
                at_ms = self.now_ms + self.latency_ms
                if self.delay_packet is not None:
                    dst = self._by_addr.get(eff.to)
                    if dst is not None:
                        at_ms += self.delay_packet(name, dst, eff.data)
                self._push(at_ms, "packet", (name, eff.to, eff.data))
            elif t is SetTimer:
                assert isinstance(eff, SetTimer)
                assert eff.at_ms >= self.now_ms
                self._push(eff.at_ms, "timer", (name, epoch, eff.timer))
            elif t is StartPushPull:
                assert isinstance(eff, StartPushPull)
                self._push(self.now_ms, "push_pull", (name, eff.to, eff.join))
            else:
                self.log.append(Event(self.now_ms, name, eff))
                if t is UserMessage:
                    assert isinstance(eff, UserMessage)
                    self.user_messages.setdefault(name, []).append(eff.payload)

    def _blocked(self, src: str, dst: str | None) -> bool:
        if dst is None or src in self.down or dst in self.down:
            return True
        return self.drop is not None and self.drop(src, dst)

    def step(self) -> None:
        at_ms, _, kind, payload = heapq.heappop(self._heap)
        self.now_ms = at_ms
        if kind == "timer":
            name, epoch, timer = payload
            if name in self.down or epoch != self._epoch.get(name, 0):
                return
            self.apply(name, self.nodes[name].handle_timer(timer, at_ms))
        elif kind == "packet":
            src, to, data = payload
            dst = self._by_addr.get(to)
            if self._blocked(src, dst):
                return
            assert dst is not None
            if self.drop_packet is not None and self.drop_packet(src, dst, data):
                return
            self.apply(dst, self.nodes[dst].handle_packet(self.address_of(src), data, at_ms))
        else:
            src, to, join = payload
            if src in self.down:
                return
            node = self.nodes[src]
            dst = self._by_addr.get(to)
            if self._blocked(src, dst) or (dst is not None and self._blocked(dst, src)):
                self.apply(src, node.push_pull_failed(to, at_ms))
                return
            assert dst is not None
            reply, effects = self.nodes[dst].handle_push_pull_request(
                node.address, node.push_pull_payload(join), at_ms
            )
            self.apply(dst, effects)
            self.apply(src, node.handle_push_pull_reply(to, reply, at_ms))

    def run_until(self, t_ms: int) -> None:
        while self._heap and self._heap[0][0] <= t_ms:
            self.step()
        self.now_ms = max(self.now_ms, t_ms)

    def run_for(self, ms: int) -> None:
        self.run_until(self.now_ms + ms)

    def run_until_true(
        self, pred: Callable[[], bool], limit_ms: int, check_every_ms: int = 100
    ) -> int:
        """Advance until ``pred()`` holds; return the virtual time it took. Fails past the limit."""
        start = self.now_ms
        while not pred():
            if self.now_ms - start > limit_ms:
                raise AssertionError(f"condition not reached within {limit_ms} ms")
            self.run_for(check_every_ms)
        return self.now_ms - start

    # --- views ------------------------------------------------------------------------------------

    def up(self) -> list[str]:
        return [n for n in self.nodes if n not in self.down]

    def state(self, observer: str, name: str) -> MemberState | None:
        m = self.nodes[observer].member(name)
        return None if m is None else m.state

    def member(self, observer: str, name: str) -> Member | None:
        return self.nodes[observer].member(name)

    def all_see(
        self, name: str, state: MemberState | None, observers: list[str] | None = None
    ) -> bool:
        obs = [o for o in (observers or self.up()) if o != name]
        return all(self.state(o, name) is state for o in obs)

    def all_alive(self) -> bool:
        up = self.up()
        return all(self.state(o, n) is MemberState.ALIVE for o in up for n in up)

    def changes(self, name: str | None = None) -> list[tuple[int, str, str, MemberState]]:
        """(time, observer, member, new state) for every MemberChanged, optionally about one name."""
        out = []
        for ev in self.log:
            eff = ev.effect
            if isinstance(eff, MemberChanged) and (name is None or eff.member.name == name):
                out.append((ev.at_ms, ev.node, eff.member.name, eff.member.state))
        return out

    def reaped(self) -> list[tuple[str, str]]:
        return [(ev.node, ev.effect.name) for ev in self.log if isinstance(ev.effect, MemberReaped)]
