"""Token buckets per source address: how much verification work gossip from one sender may cost.

Theory of operation
-------------------
Checking a claim costs a signature verification (~90 µs) and, for a certificate we have not seen,
a chain verification (~250 µs); a packet of 1,400 bytes carries at most about a dozen claims, so
one packet costs at most ~1 ms however hostile. What must be bounded is the *rate*: a sender
(a captured node holds the gossip key) can send thousands of packets a second. Each source
address gets a bucket of ``burst`` tokens refilled at ``rate_per_s``; every claim that needs
checking takes one, and a claim that finds the bucket empty is dropped unchecked (counted by the
caller). Old news never reaches a bucket: it is recognised from the incarnation alone.

Time is the caller's ``now_ms``. At most ``max_sources`` buckets are kept, least recently used
evicted first, so spoofing many source addresses costs memory no more than one bucket each up to
the bound (and a new bucket starts full, which is what makes spoofing still pay ``burst`` per
address: the bound on memory is the point here, the packet rate bounds the rest).
"""

from __future__ import annotations

from gossipmesh.ids import Address, Millis


class _Bucket:
    __slots__ = ("at_ms", "tokens")

    def __init__(self, tokens: float, at_ms: Millis) -> None:
        self.tokens = tokens
        self.at_ms = at_ms


class SourceBudget:
    """Per-source token buckets (see the module docstring)."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate_per_ms")

    def __init__(self, rate_per_s: int, burst: int, max_sources: int) -> None:
        self.rate_per_ms = rate_per_s / 1000
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[Address, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: Address, now_ms: Millis) -> bool:
        """Spend one token of ``source``'s bucket; False (nothing spent) if it is empty."""
        buckets = self._buckets
        b = buckets.pop(source, None)
        if b is None:
            if len(buckets) >= self.max_sources:
                del buckets[next(iter(buckets))]  # the least recently used
            b = _Bucket(self.burst, now_ms)
        elif now_ms > b.at_ms:
            b.tokens = min(self.burst, b.tokens + (now_ms - b.at_ms) * self.rate_per_ms)
            b.at_ms = now_ms
        buckets[source] = b  # re-inserted: most recently used last
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True
