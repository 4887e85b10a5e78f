"""Replication decisions for the config document, as pure functions (sans-IO).

Theory of operation
-------------------
The replica core (``replica.py``) takes its decisions with these functions; they are kept apart,
pure and small, so each can be tested with a table. Every runtime (the agent, the simulator)
drives that one core, with its own clock and a seeded ``random.Random``:

- ``plan_spread``: how a new delta leaves this node. A delta that fits a gossip packet rides SWIM's
  piggyback queue (which relays it cluster-wide) *and* goes at once, as a direct user message, to
  ``fanout`` random members (eager push: spread time is then a few network round trips, not
  gossip rounds). A delta too large for a packet goes over TCP streams to ``fanout`` members.
- ``plan_forward``: a node that merged something new re-sends only the new part, eagerly, to a
  smaller fanout. A node that learned nothing forwards nothing, so the epidemic dies out by itself
  once every node has the delta (each node forwards a given delta at most once).
- ``sync_interval_ms``: the anti-entropy period, scaled up with cluster size the way memberlist
  scales push-pull (beyond 32 nodes, ×⌈log2(n/32)⌉+1): total sync traffic then grows like n·log n
  instead of n², while a missed delta is still repaired within a few periods.
- ``sync_on_member_change``: which membership changes deserve an immediate sync (a member that
  joined, or came back alive after being suspect or dead, i.e. a healed partition).

Nothing here reads a clock, a socket or the global ``random``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A delta this small (encoded, plus the 1-byte tag) goes over UDP; larger ones over TCP. The SWIM
# packet is 1400 bytes by default, and a user message also carries framing and compound-packet
# overhead, so ~1000 bytes leaves room to piggyback next to membership rumours.
DEFAULT_GOSSIP_MAX_BYTES = 1000
DEFAULT_EAGER_FANOUT = 3
DEFAULT_FORWARD_FANOUT = 2
DEFAULT_SYNC_INTERVAL_MS = 3000
DEFAULT_GC_GRACE_MS = 3600 * 1000
SYNC_SCALE_THRESHOLD = 32  # memberlist's pushPullScaleThreshold


class Rng(Protocol):
    """The slice of ``random.Random`` used here (the core may not import ``random`` itself)."""

    def uniform(self, a: float, b: float) -> float: ...

    def getrandbits(self, k: int) -> int: ...

    def sample(self, population: Sequence[Any], k: int) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Spread:
    """How to send one delta: ``gossip`` (queue on SWIM's piggyback broadcast), ``udp_fanout``
    direct user messages to random alive members, ``stream_fanout`` TCP pushes."""

    gossip: bool
    udp_fanout: int
    stream_fanout: int


def plan_spread(
    encoded_bytes: int,
    gossip_max_bytes: int = DEFAULT_GOSSIP_MAX_BYTES,
    fanout: int = DEFAULT_EAGER_FANOUT,
) -> Spread:
    """A fresh local delta: gossip + eager UDP when it fits a packet, else TCP to ``fanout``."""
    if encoded_bytes <= gossip_max_bytes:
        return Spread(gossip=True, udp_fanout=fanout, stream_fanout=0)
    return Spread(gossip=False, udp_fanout=0, stream_fanout=fanout)


def plan_forward(
    encoded_bytes: int,
    gossip_max_bytes: int = DEFAULT_GOSSIP_MAX_BYTES,
    fanout: int = DEFAULT_FORWARD_FANOUT,
) -> Spread:
    """The new part of a merged delta: eager only (the original broadcast already relays itself)."""
    if encoded_bytes <= gossip_max_bytes:
        return Spread(gossip=False, udp_fanout=fanout, stream_fanout=0)
    return Spread(gossip=False, udp_fanout=0, stream_fanout=fanout)


def sync_interval_ms(base_ms: int, cluster_size: int) -> int:
    """Anti-entropy period for a cluster of ``cluster_size`` (memberlist's pushPullScale)."""
    if cluster_size <= SYNC_SCALE_THRESHOLD:
        return base_ms
    multiplier = math.ceil(math.log2(cluster_size) - math.log2(SYNC_SCALE_THRESHOLD)) + 1
    return base_ms * multiplier


def jittered_ms(interval_ms: int, rng: Rng) -> int:
    """The interval ±25%, so nodes started together do not sync in lockstep."""
    return max(1, int(interval_ms * rng.uniform(0.75, 1.25)))


def sync_on_member_change(state: str, previous: str | None) -> bool:
    """Sync at once with a member that is new, or alive again after suspect, dead or left (a
    partition heal or a restart: the other side's writes are waiting). States are
    ``MemberState`` values ("alive", "suspect", "dead", "left"); ``previous`` is None for a member
    seen for the first time."""
    if previous is None:
        return True
    return state == "alive" and previous in ("suspect", "dead", "left")


def pick_peers(candidates: Sequence[str], k: int, rng: Rng) -> list[str]:
    """``k`` distinct random candidates (all of them when there are fewer)."""
    pool = sorted(set(candidates))  # sorted: the same rng state picks the same peers anywhere
    return rng.sample(pool, min(k, len(pool)))


__all__ = [
    "Rng",
    "Spread",
    "jittered_ms",
    "pick_peers",
    "plan_forward",
    "plan_spread",
    "sync_interval_ms",
    "sync_on_member_change",
]
