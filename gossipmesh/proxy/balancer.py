"""Load balancing: which endpoint of a cluster serves this try. Deterministic given the injected rng.

Theory of operation
-------------------
The table gives a cluster's endpoints; the proxy keeps one mutable ``EndpointState`` per endpoint
key (in-flight count, latency estimate, outlier state) that survives table swaps. ``pick`` takes
the cluster's states in table order and returns an index, or -1 when there is nothing to pick.
Time is one instant in nanoseconds, ``now_ns``, on the proxy's clock (clock.py).

Candidates. Endpoints ejected by outlier detection, endpoints down (a connect to them failed in
the last ``DOWN_NS``, here or at their agent: ``down_until_ns``) and endpoints already tried by
this request are left out. Panic threshold (Envoy's): if fewer than half of the cluster is
un-ejected, ejection is ignored and all endpoints are candidates — the detector may be wrong, and
overloading the few survivors turns a partial outage into a total one. A connect failure is not
an opinion, so down endpoints stay out while any other remains. Endpoints already tried are only
reused when nothing else is left. ``available`` is the same test for one endpoint, which the
route uses to let a destination with none yield its share (routing.py).

Policies:

- ``round_robin``: a per-cluster counter walks the candidates (weights honoured by a weighted
  draw when the cluster is weighted; an exact smooth-WRR adds state for no practical gain).
- ``least_request``: power of two choices — two distinct random candidates, the one with fewer
  requests in flight (divided by weight) wins. O(1) and avoids the herd that "global least" makes.
- ``peak_ewma``: as Linkerd: cost = EWMA latency × (in-flight + 1). The EWMA jumps to any sample
  above it (peak-sensitive, so a slowing endpoint is shunned at once) and decays toward lower
  samples with time constant ``DECAY_NS``; an endpoint never measured costs ``DEFAULT_RTT_NS`` so a
  new one is tried but not flooded.
- ``ring_hash``: ketama-style consistent hashing of a request header onto a ring of virtual nodes
  (``VNODES_PER_WEIGHT`` per unit of weight, 64-bit blake2b points). Adding or removing one endpoint
  moves only the keys on its arcs (~1/n), so caches behind the service stay warm. A key landing on
  an ejected or tried endpoint walks clockwise to the next eligible one.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from random import Random

DECAY_NS = 10_000_000_000  # Linkerd's default peak-EWMA decay: 10 s
# After a failed connect an endpoint is presumed down this long: the failure detector needs
# seconds to declare a host dead, and every request meanwhile would try it again. Short, because
# a refused connect can also be a restart: the next request after it tries again.
DOWN_NS = 1_000_000_000
DEFAULT_RTT_NS = 30_000_000  # assumed latency of a never-measured endpoint: 30 ms
VNODES_PER_WEIGHT = 100
MAX_VNODES_PER_ENDPOINT = 10_000


class EndpointState:
    """Proxy-local, mutable facts about one endpoint (shared by every cluster containing it)."""

    __slots__ = (
        "key",
        "weight",
        "inflight",
        "ewma_ns",
        "ewma_at_ns",
        "consecutive_failures",
        "ejected_until_ns",
        "down_until_ns",
        "times_ejected",
        "connections",
    )

    def __init__(self, key: tuple[str, str, int], weight: int = 1) -> None:
        self.key = key
        self.weight = max(1, weight)
        self.inflight = 0
        self.ewma_ns = 0.0  # 0 = never measured
        self.ewma_at_ns = 0
        self.consecutive_failures = 0
        self.ejected_until_ns = 0
        self.down_until_ns = 0  # a connect to it failed: presumed down until then
        self.times_ejected = 0
        self.connections = 0

    def __repr__(self) -> str:
        return (
            f"EndpointState({self.key}, inflight={self.inflight}, ewma_ms={self.ewma_ns / 1e6:.2f},"
            f" ejected_until_ns={self.ejected_until_ns}, times_ejected={self.times_ejected})"
        )

    def observe_rtt(self, rtt_ns: int, now_ns: int) -> None:
        """Peak-EWMA update (Linkerd's ``PeakEwma``)."""
        if self.ewma_ns == 0.0 or rtt_ns > self.ewma_ns:
            self.ewma_ns = float(rtt_ns)
        else:
            elapsed = max(0, now_ns - self.ewma_at_ns)
            w = math.exp(-elapsed / DECAY_NS)
            self.ewma_ns = self.ewma_ns * w + rtt_ns * (1.0 - w)
        self.ewma_at_ns = now_ns


@dataclass(frozen=True, slots=True)
class Ring:
    points: tuple[int, ...]  # sorted hash points
    owners: tuple[int, ...]  # index into the cluster's endpoints for each point


def hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def build_ring(keys: Sequence[tuple[str, str, int]], weights: Sequence[int]) -> Ring:
    """Points depend only on each endpoint's own key, which is what makes the ring stable."""
    pairs: list[tuple[int, int]] = []
    for i, (key, w) in enumerate(zip(keys, weights, strict=True)):
        label = f"{key[0]}|{key[1]}|{key[2]}#".encode()
        for v in range(min(MAX_VNODES_PER_ENDPOINT, max(1, w) * VNODES_PER_WEIGHT)):
            pairs.append((hash64(label + str(v).encode()), i))
    pairs.sort()
    return Ring(tuple(p for p, _ in pairs), tuple(o for _, o in pairs))


def ring_lookup(ring: Ring, key: bytes, eligible: Sequence[bool] | None = None) -> int:
    """Owner of the first point clockwise of hash(key) whose endpoint is eligible; -1 if none."""
    points = ring.points
    n = len(points)
    if n == 0:
        return -1
    i = bisect_left(points, hash64(key))
    if eligible is None:
        return ring.owners[i % n]
    for step in range(n):
        owner = ring.owners[(i + step) % n]
        if eligible[owner]:
            return owner
    return -1


def available(s: EndpointState, now_ns: int) -> bool:
    """Neither ejected nor down at ``now_ns``."""
    return s.ejected_until_ns <= now_ns and s.down_until_ns <= now_ns


def eligible_mask(
    states: Sequence[EndpointState], now_ns: int, tried: Sequence[int] | None
) -> list[bool] | None:
    """Which endpoints may be picked; None means all (the common, allocation-free case)."""
    n = len(states)
    mask = [s.ejected_until_ns <= now_ns for s in states]
    healthy = sum(mask)
    if healthy * 2 < n:  # panic: fewer than half healthy, ignore ejection
        mask = [True] * n
    up = [m and s.down_until_ns <= now_ns for m, s in zip(mask, states, strict=True)]
    if any(up):  # down endpoints stay out while another is left
        mask = up
    if tried:
        with_tried = mask
        mask = list(mask)
        for i in tried:
            mask[i] = False
        if not any(mask):  # every eligible endpoint already tried: allow a repeat
            mask = with_tried
    if all(mask):
        return None
    return mask


class Balancer:
    """Per-cluster picker. Mutable state is only the round-robin cursor."""

    __slots__ = ("policy", "weighted", "ring", "_rr", "_cum")

    def __init__(self, policy: str, weights: Sequence[int], ring: Ring | None = None) -> None:
        self.policy = policy
        self.ring = ring
        self._rr = 0
        self.weighted = len(set(weights)) > 1
        cum: list[int] = []
        total = 0
        for w in weights:
            total += max(1, w)
            cum.append(total)
        self._cum = cum

    def _draw(self, n: int, rng: Random) -> int:
        if self.weighted:
            return bisect_right(self._cum, rng.random() * self._cum[-1])
        return rng.randrange(n)

    def pick(
        self,
        states: Sequence[EndpointState],
        rng: Random,
        now_ns: int,
        any_ejected: bool,
        tried: Sequence[int] | None = None,
        hash_key: bytes | None = None,
    ) -> int:
        """An index into ``states``, or -1. ``any_ejected``: some endpoint may still be ejected
        at ``now_ns`` (False lets the common case skip building the eligibility mask)."""
        n = len(states)
        if n == 0:
            return -1
        mask = eligible_mask(states, now_ns, tried) if (any_ejected or tried) else None
        if n == 1:
            return 0
        policy = self.policy
        if policy == "ring_hash" and self.ring is not None:
            key = hash_key if hash_key is not None else rng.randbytes(8)
            return ring_lookup(self.ring, key, mask)
        if policy == "round_robin":
            if not self.weighted:
                for _ in range(n):
                    i = self._rr % n
                    self._rr += 1
                    if mask is None or mask[i]:
                        return i
                return -1
            return self._draw_eligible(n, rng, mask)
        # Power of two choices, for least_request and peak_ewma.
        if mask is None and not self.weighted:
            # Two distinct draws without a loop, from one 64-bit draw (its two halves): the hot
            # path's pick, where ``randrange`` cost two Python-level calls a draw. ``n * h >>
            # 32`` for a uniform 32-bit ``h`` is uniform to within n / 2**32.
            r = rng.getrandbits(64)
            a = n * (r >> 32) >> 32
            b = (n - 1) * (r & 0xFFFFFFFF) >> 32
            if b >= a:
                b += 1
        else:
            a = self._draw_eligible(n, rng, mask)
            b = a
            for _ in range(4):  # bounded resampling keeps the pick O(1)
                b = self._draw_eligible(n, rng, mask)
                if b != a:
                    break
            if a == b or a < 0:
                return a
        sa, sb = states[a], states[b]
        if policy == "peak_ewma":
            return a if peak_ewma_cost(sa, now_ns) <= peak_ewma_cost(sb, now_ns) else b
        return a if sa.inflight * sb.weight <= sb.inflight * sa.weight else b

    def _draw_eligible(self, n: int, rng: Random, mask: Sequence[bool] | None) -> int:
        if mask is None:
            return self._draw(n, rng)
        # Rejection sampling stays cheap while most endpoints are eligible; fall back to a scan.
        for _ in range(8):
            i = self._draw(n, rng)
            if mask[i]:
                return i
        choices = [i for i in range(n) if mask[i]]
        return rng.choice(choices) if choices else -1


def peak_ewma_cost(s: EndpointState, now_ns: int) -> float:
    """Latency estimate (decayed to now) × (in-flight + 1), per unit of weight."""
    if s.ewma_ns == 0.0:
        rtt = float(DEFAULT_RTT_NS)
    else:
        elapsed = max(0, now_ns - s.ewma_at_ns)
        rtt = s.ewma_ns * math.exp(-elapsed / DECAY_NS)
    return rtt * (s.inflight + 1) / s.weight
