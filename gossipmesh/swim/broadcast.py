"""Transmit-limited piggyback queue: infection-style dissemination with bounded memory.

Theory of operation
-------------------
Membership news (alive, suspect, dead) and user payloads are not sent on their own: they ride
in the spare bytes of packets we send anyway (pings, acks, gossip rounds). Each queued item is
sent at most ``retransmit_limit(λ, n) = λ * ceil(log10(n + 1))`` times; SWIM's analysis shows
that is enough for an epidemic to reach everyone with high probability while the cost per member
stays logarithmic.

A rumour riding a packet to its own subject is not counted as a transmit (``subject``): that member
is the one that cannot pass it on when the rumour is true (it is failing), yet in a 3-node cluster
(limit 2) the suspect's own packets used to spend a whole suspicion before the only other member
heard it, so no confirmation ever came and every such death took the maximum timeout.

Items are picked least-transmitted first (fresh news spreads fastest), newest first among equals
(like memberlist's btree order). Newer news about a member *replaces* older news about it: items
are keyed by member name, so an ``alive`` refutation removes the ``suspect`` it refutes instead of
both travelling. User payloads get unique keys and never invalidate each other.

Storage is one deque per transmit count plus a dict from key to the live item. Picking pops the
low buckets from their newest end and stops when the packet is full or after ``SCAN_LIMIT`` looks,
so the per-packet cost does not grow with the queue. (Dicts were tried first: deleting their
newest entries leaves dummies that every reversed walk must skip, which made a 1000-node join
storm spend most of its time here.) The queue holds at most ``max_depth`` items;
beyond that the most-transmitted, oldest items are dropped (they have already spread the most).
"""

from __future__ import annotations

import math
from collections import deque

# How many queued items one packet may look at before giving up on filling its last bytes.
SCAN_LIMIT = 64
# Smallest message we could still squeeze in; below this, stop looking.
MIN_MESSAGE_BYTES = 4


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """λ·⌈log10(n+1)⌉, at least 1 (memberlist's ``retransmitLimit``)."""
    return max(1, retransmit_mult * math.ceil(math.log10(n + 1)))


class _Item:
    __slots__ = ("data", "key", "later", "later_after", "live", "transmits")

    def __init__(self, key: object, data: bytes, later: bytes | None, later_after: int) -> None:
        self.key = key
        self.data = data
        self.later = later  # a shorter form to send once ``later_after`` transmits are done
        self.later_after = later_after
        self.transmits = 0
        self.live = True  # False once replaced, pruned or sent `limit` times


class BroadcastQueue:
    __slots__ = ("_buckets", "_entries", "_index", "_next_id", "dropped", "max_depth")

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        # One deque per transmit count, newest on the right. Replaced items are only flagged
        # (deleting from the middle of a deque is O(n)) and skipped when they surface.
        self._buckets: list[deque[_Item]] = [deque()]
        self._index: dict[object, _Item] = {}
        self._entries = 0  # deque entries, dead ones included; compacted past a bound
        self._next_id = 0
        self.dropped = 0  # items pruned because the queue was full

    def __len__(self) -> int:
        return len(self._index)

    def queue(
        self, data: bytes, key: object = None, later: bytes | None = None, later_after: int = 0
    ) -> None:
        """Queue ``data``; an item with the same ``key`` (a member name) is replaced. With
        ``later``, the item is sent as ``data`` ``later_after`` times, then as ``later``."""
        if key is None:
            self._next_id += 1
            key = ("user", self._next_id)
        old = self._index.get(key)
        if old is not None:
            old.live = False
        item = _Item(key, data, later, later_after)
        self._index[key] = item
        self._buckets[0].append(item)
        self._entries += 1
        if len(self._index) > self.max_depth:
            self._prune()
        if self._entries > 2 * self.max_depth + 64:
            self._compact()

    def _prune(self) -> None:
        # Drop from the most-transmitted bucket, oldest first: that news has spread the most.
        index = self._index
        for bucket in reversed(self._buckets):
            while bucket and len(index) > self.max_depth:
                item = bucket.popleft()
                self._entries -= 1
                if item.live:
                    item.live = False
                    del index[item.key]
                    self.dropped += 1
            if len(index) <= self.max_depth:
                return

    def _compact(self) -> None:
        for i, bucket in enumerate(self._buckets):
            self._buckets[i] = deque(item for item in bucket if item.live)
        self._entries = sum(len(b) for b in self._buckets)

    def get(self, budget_bytes: int, limit: int, subject: str | None = None) -> list[bytes]:
        """Take items whose total size fits ``budget_bytes``, counting one transmit for each
        except news about ``subject``, the member the packet goes to."""
        if not self._index or budget_bytes < MIN_MESSAGE_BYTES:
            return []
        picked: list[_Item] = []
        remaining = budget_bytes
        scanned = 0
        entries = self._entries
        for bucket in self._buckets:
            if not bucket:
                continue
            skipped: list[_Item] = []
            while bucket and scanned < SCAN_LIMIT and remaining >= MIN_MESSAGE_BYTES:
                item = bucket.pop()
                entries -= 1
                if not item.live:
                    continue
                scanned += 1
                size = len(item.data)
                if size <= remaining:
                    picked.append(item)
                    remaining -= size
                else:
                    skipped.append(item)
            if skipped:
                skipped.reverse()
                bucket.extend(skipped)
                entries += len(skipped)
            if remaining < MIN_MESSAGE_BYTES or scanned >= SCAN_LIMIT:
                break
        out = [item.data for item in picked]  # before any item switches to its ``later`` form
        buckets = self._buckets
        index = self._index
        for item in picked:
            key = item.key
            if subject is not None and (
                key == subject or (type(key) is tuple and key[0] == subject)
            ):
                buckets[item.transmits].append(item)  # back where it was: not spent
                entries += 1
                continue
            t = item.transmits + 1
            item.transmits = t
            if item.later is not None and t >= item.later_after:
                item.data, item.later = item.later, None
            if t >= limit:
                item.live = False
                del index[item.key]
                continue
            if t >= len(buckets):
                buckets.append(deque())
            buckets[t].append(item)
            entries += 1
        self._entries = entries
        return out

    def drop(self, key: object) -> None:
        """Forget the item queued under ``key``, if any (news made stale by newer news that is
        not keyed the same)."""
        item = self._index.pop(key, None)
        if item is not None:
            item.live = False

    def has_key(self, key: object) -> bool:
        return key in self._index

    def transmits(self, key: object) -> int | None:
        item = self._index.get(key)
        return None if item is None else item.transmits
