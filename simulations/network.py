"""The simulated network: latency, loss, duplication, size limit, partitions and link flaps.

Theory of operation
-------------------
The network decides the fate of every datagram at the moment it is *sent*: dropped (loss, a
partition, an oversize packet) or delivered after a sampled one-way latency, perhaps twice
(duplication). Deciding at send time keeps the model to one random draw sequence per packet and
means a packet already in flight when a partition starts still arrives, as on a real wire.
Reordering is not a separate knob: it falls out of the latency jitter, since two packets on the
same link that draw different delays swap places.

Latency is ``base_ms + jitter`` with a lognormal jitter whose *median* is ``jitter_ms``. A lognormal
has the long right tail real networks show (most packets quick, a few very late), which is what
stresses a timeout-based failure detector; ``sigma`` sets how long that tail is. Times are whole
milliseconds because the cores take ``int`` milliseconds; a sub-millisecond LAN rounds to 1 ms,
which is far below every SWIM timeout and does not change a result.

Links can be given their own latency model by group pair (``set_link_latency``), e.g. to put two
data centres 40 ms apart.

Partitions are named, between named groups of node indices, and directed: a symmetric partition
blocks both directions, an asymmetric one only ``a -> b`` (so ``b`` still hears ``a``). Several
can be active at once; a link is up when no active partition blocks it. Flaps are single links
toggled by the fault schedule. The fast path (no partitions, no flaps) is one truthiness test.

Limits: a datagram above ``max_packet_bytes`` is dropped and counted, never delivered; the core is
supposed to respect the limit itself, so a non-zero count is a core bug worth reporting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way delay ``base_ms + lognormal(median=jitter_ms, sigma)``, at least 1 ms."""

    base_ms: float = 1.0
    jitter_ms: float = 0.5
    sigma: float = 0.6

    def sampler(self, rng: random.Random) -> Callable[[], int]:
        """A zero-argument function returning one delay in whole ms; bound here for speed."""
        base = self.base_ms
        if self.jitter_ms <= 0:
            fixed = max(1, round(base))
            return lambda: fixed
        mu = math.log(self.jitter_ms)
        sigma = self.sigma
        # ``rng.lognormvariate(mu, sigma)`` is ``exp(rng.normalvariate(mu, sigma))``; calling
        # the two directly draws the same numbers and saves a Python call per packet.
        normal = rng.normalvariate
        exp = math.exp

        def sample() -> int:
            d = int(base + exp(normal(mu, sigma)) + 0.5)
            return d if d > 0 else 1

        return sample


PROFILE_LATENCY = {
    # A switched LAN: ~1 ms with a short tail.
    "lan": Latency(base_ms=1.0, jitter_ms=0.5, sigma=0.6),
    # Between regions: tens of ms with a longer tail.
    "wan": Latency(base_ms=40.0, jitter_ms=10.0, sigma=0.7),
    # Loopback.
    "local": Latency(base_ms=1.0, jitter_ms=0.0, sigma=0.0),
}


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    sent_bytes: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_oversize: int = 0
    dropped_down: int = 0
    dropped_unroutable: int = 0
    duplicated: int = 0
    streams: int = 0
    streams_failed: int = 0


@dataclass(slots=True)
class Partition:
    name: str
    blocked: set[tuple[int, int]] = field(default_factory=set)  # directed (src_group, dst_group)


class Network:
    """Decides each packet's fate. Groups are small ints; every node starts in group 0."""

    def __init__(
        self,
        rng: random.Random,
        latency: Latency,
        loss: float = 0.0,
        duplicate: float = 0.0,
        max_packet_bytes: int = 1400,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        if not 0.0 <= duplicate < 1.0:
            raise ValueError(f"duplicate must be in [0, 1), got {duplicate}")
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.max_packet_bytes = max_packet_bytes
        self.stats = NetworkStats()
        self._default_latency = latency.sampler(rng)
        self._link_latency: dict[tuple[int, int], Callable[[], int]] = {}
        self.group_of: list[int] = []
        self.group_names: dict[str, int] = {"default": 0}
        self._partitions: dict[str, Partition] = {}
        self._blocked_groups: set[tuple[int, int]] = set()
        self._blocked_links: set[tuple[int, int]] = set()
        # True when any partition or flap is active: the per-packet fast path checks only this.
        self.impaired = False

    # -- topology ----------------------------------------------------------------------------

    def add_node(self) -> int:
        self.group_of.append(0)
        return len(self.group_of) - 1

    def group_id(self, name: str) -> int:
        if name not in self.group_names:
            self.group_names[name] = len(self.group_names)
        return self.group_names[name]

    def assign(self, nodes: list[int], group: str) -> None:
        gid = self.group_id(group)
        for i in nodes:
            self.group_of[i] = gid

    def set_link_latency(self, src_group: str, dst_group: str, latency: Latency) -> None:
        key = (self.group_id(src_group), self.group_id(dst_group))
        self._link_latency[key] = latency.sampler(self.rng)

    # -- faults ------------------------------------------------------------------------------

    def partition(self, name: str, a: str, b: str, symmetric: bool = True) -> None:
        """Block ``a -> b`` (and ``b -> a`` when symmetric) until ``heal(name)``."""
        ga, gb = self.group_id(a), self.group_id(b)
        p = Partition(name)
        p.blocked.add((ga, gb))
        if symmetric:
            p.blocked.add((gb, ga))
        self._partitions[name] = p
        self._rebuild()

    def heal(self, name: str) -> None:
        self._partitions.pop(name, None)
        self._rebuild()

    def heal_all(self) -> None:
        self._partitions.clear()
        self._blocked_links.clear()
        self._rebuild()

    def set_link(self, src: int, dst: int, up: bool) -> None:
        """Flap one directed link."""
        if up:
            self._blocked_links.discard((src, dst))
        else:
            self._blocked_links.add((src, dst))
        self._rebuild()

    def _rebuild(self) -> None:
        self._blocked_groups = set()
        for p in self._partitions.values():
            self._blocked_groups |= p.blocked
        self.impaired = bool(self._blocked_groups or self._blocked_links)

    def active_partitions(self) -> list[str]:
        return sorted(self._partitions)

    # -- per packet --------------------------------------------------------------------------

    def link_up(self, src: int, dst: int) -> bool:
        if not self.impaired:
            return True
        if (src, dst) in self._blocked_links:
            return False
        g = self.group_of
        return (g[src], g[dst]) not in self._blocked_groups

    def latency(self, src: int, dst: int) -> int:
        if self._link_latency:
            g = self.group_of
            special = self._link_latency.get((g[src], g[dst]))
            if special is not None:
                return special()
        return self._default_latency()
