"""The fault model: what can go wrong, scheduled on the virtual clock and written down.

Theory of operation
-------------------
A ``FaultPlan`` turns "crash 3 nodes at t=40 s" into cluster actions scheduled on the engine, and
records each one in ``log`` so a report can say exactly what was done and when. Faults are events
like any other, so they are part of the trace hash and replay with the seed.

Which nodes suffer is chosen with the plan's own child rng (``derive_rng(seed, "faults")``), never
with the network's or a core's, so asking for one more victim does not perturb packet loss.

The kinds, and what they model:

- ``crash``: the process vanishes (kill -9, power loss). No leave message; in-flight replies void.
- ``restart``: boot a crashed host again under the same name and address, either *with data*
  (it remembers its incarnation and comes back one higher, refuting any rumour of its death at
  once) or *without* (incarnation 0: it must learn of its own death and out-bid it).
- ``leave``: graceful shutdown: the core announces "left", the process flushes, then exits.
- ``join``: a brand-new host boots and joins through random live seeds.
- ``partition`` / ``heal``: named groups stop hearing each other, both ways or one way.
- ``flap``: one link goes down and up with a period, a bad cable or an overloaded switch port.
- ``slow``: a CPU-starved host: its inbound handling lags (see cluster.py), optionally healed.
- ``loss``: change the network-wide loss rate at a given time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulations.cluster import Cluster
from simulations.engine import derive_rng


@dataclass(slots=True)
class FaultPlan:
    cluster: Cluster
    log: list[tuple[int, str]] = field(default_factory=list)
    last_fault_ms: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = derive_rng(self.cluster.seed, "faults")

    def note(self, at_ms: int, text: str) -> None:
        """Log ``text`` at ``at_ms``; a scenario's own events (churn, writes) are logged here too."""
        self.log.append((at_ms, text))
        self.last_fault_ms = max(self.last_fault_ms, at_ms)

    def pick(self, k: int, among: Sequence[int] | None = None) -> list[int]:
        """``k`` distinct victims (sorted), drawn from the plan's own rng."""
        pool = list(among) if among is not None else self.cluster.up_nodes()
        if k > len(pool):
            raise ValueError(f"cannot pick {k} nodes out of {len(pool)}")
        return sorted(self.rng.sample(pool, k))

    def crash(self, nodes: Sequence[int], at_ms: int) -> None:
        for i in nodes:
            self.cluster.at(at_ms, self.cluster.crash, i)
        self.note(at_ms, f"crash {len(nodes)}: {self._names(nodes)}")

    def restart(self, nodes: Sequence[int], at_ms: int, with_data: bool = True) -> None:
        c = self.cluster
        for i in nodes:
            c.at(at_ms, self._restart_one, i, with_data)
        self.note(at_ms, f"restart {'with' if with_data else 'without'} data: {self._names(nodes)}")

    def _restart_one(self, idx: int, with_data: bool) -> None:
        c = self.cluster
        c.boot(idx, c.random_seeds(3, exclude=idx), with_data=with_data)

    def leave(self, nodes: Sequence[int], at_ms: int) -> None:
        for i in nodes:
            self.cluster.at(at_ms, self.cluster.leave, i)
        self.note(at_ms, f"leave: {self._names(nodes)}")

    def join(self, count: int, at_ms: int) -> list[int]:
        c = self.cluster
        new = [c.add_node().idx for _ in range(count)]
        for i in new:
            c.at(at_ms, self._join_one, i)
        self.note(at_ms, f"join {count} new")
        return new

    def _join_one(self, idx: int) -> None:
        c = self.cluster
        c.boot(idx, c.random_seeds(3, exclude=idx))

    def partition(
        self,
        groups: dict[str, Sequence[int]],
        at_ms: int,
        heal_at_ms: int | None,
        symmetric: bool = True,
        name: str = "split",
    ) -> None:
        """Split into named groups; with two groups ``a, b`` and ``symmetric=False`` only
        ``a -> b`` is cut (b keeps hearing a)."""
        c = self.cluster
        names = list(groups)
        if len(names) < 2:
            raise ValueError("a partition needs at least two groups")

        def start() -> None:
            for g in names:
                c.network.assign(list(groups[g]), g)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    c.network.partition(f"{name}:{a}|{b}", a, b, symmetric=symmetric)

        def heal() -> None:
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    c.network.heal(f"{name}:{a}|{b}")

        c.at(at_ms, start)
        sizes = "/".join(str(len(groups[g])) for g in names)
        kind = "symmetric" if symmetric else f"asymmetric ({names[0]} -> others cut)"
        self.note(at_ms, f"partition {name} {sizes} {kind}")
        if heal_at_ms is not None:
            c.at(heal_at_ms, heal)
            self.note(heal_at_ms, f"heal {name}")

    def flap(self, src: int, dst: int, start_ms: int, stop_ms: int, period_ms: int) -> None:
        """Link ``src <-> dst`` alternates down/up every ``period_ms`` until ``stop_ms``."""
        c = self.cluster
        t, down = start_ms, True
        while t < stop_ms:
            c.at(t, c.network.set_link, src, dst, not down)
            c.at(t, c.network.set_link, dst, src, not down)
            t += period_ms
            down = not down
        c.at(stop_ms, c.network.set_link, src, dst, True)
        c.at(stop_ms, c.network.set_link, dst, src, True)
        self.note(start_ms, f"flap {self._names([src, dst])} every {period_ms} ms")
        self.note(stop_ms, "flap ends")

    def slow(
        self,
        nodes: Sequence[int],
        at_ms: int,
        packet_lag_ms: int,
        timer_lag_ms: int,
        until_ms: int | None = None,
    ) -> None:
        c = self.cluster
        for i in nodes:
            c.at(at_ms, c.set_slow, i, packet_lag_ms, timer_lag_ms)
            if until_ms is not None:
                c.at(until_ms, c.set_slow, i, 0, 0)
        self.note(
            at_ms,
            f"slow {self._names(nodes)}: packets +{packet_lag_ms} ms, timers +{timer_lag_ms} ms",
        )
        if until_ms is not None:
            self.note(until_ms, "slow nodes recover")

    def loss(self, rate: float, at_ms: int) -> None:
        net = self.cluster.network

        def set_loss() -> None:
            net.loss = rate

        self.cluster.at(at_ms, set_loss)
        self.note(at_ms, f"loss -> {rate:g}")

    def _names(self, nodes: Sequence[int]) -> str:
        names = [self.cluster.nodes[i].name for i in nodes]
        if len(names) > 6:
            return ", ".join(names[:6]) + f", … ({len(names)} in all)"
        return ", ".join(names)
