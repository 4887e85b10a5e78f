"""The document's digest: a Merkle tree over SHA-256, with 256 buckets of keys (sans-IO).

Theory of operation
-------------------
Anti-entropy needs a summary such that equal summaries mean identical documents, whatever values
an adversary chooses. The old summary, an XOR of 64-bit hashes, was not one: XOR is linear, so
entries can be chosen whose hashes cancel. This one is a hash tree:

- a **leaf** per key: ``H(key, known map, sorted hashes of the counted entries)``. The known map
  (writer -> highest counter integrated for that key) is part of it, so two replicas that hold the
  same entries but would skip different incoming ones do not compare equal. Tombstones count only
  through the known map (unless marked suspect, which changes winners): replicas that collected a
  tombstone at slightly different moments still agree;
- a **bucket** ``b`` (the first byte of ``H(key)``) hashes the leaves of its keys in key order;
- the **root** hashes the 256 bucket hashes.

Finding a different document with an equal root means finding a SHA-256 collision. Buckets are
recomputed lazily, only the ones whose keys changed, so a digest after a write costs one bucket
and the root, not the whole document. ``bucket_hashes`` gives the non-empty buckets, so a sync
can find which ones differ and exchange only their keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from gossipmesh.crdt.entries import Entry, pack

BUCKETS = 256
EMPTY = bytes(32)


def bucket_of(key: str) -> int:
    return hashlib.sha256(key.encode()).digest()[0]


def leaf_hash(key: str, known: Mapping[str, int], entries: Iterable[Entry]) -> bytes:
    counted = sorted(e.content_hash() for e in entries if e.value is not None or e.suspect)
    return hashlib.sha256(pack([key, sorted(known.items()), counted])).digest()


class MerkleDigest:
    """Leaves, buckets and root of one document, kept up to date by ``update``."""

    __slots__ = ("_buckets", "_dirty", "_leaves", "_root")

    def __init__(self) -> None:
        self._leaves: list[dict[str, bytes]] = [{} for _ in range(BUCKETS)]
        self._buckets: list[bytes] = [EMPTY] * BUCKETS
        self._dirty: set[int] = set()
        self._root: bytes | None = None

    def update(self, key: str, known: Mapping[str, int], entries: Iterable[Entry]) -> None:
        """The key's known map or entries changed (a key with neither drops out)."""
        b = bucket_of(key)
        if not known:
            self._leaves[b].pop(key, None)
        else:
            self._leaves[b][key] = leaf_hash(key, known, entries)
        self._dirty.add(b)
        self._root = None

    def _bucket(self, b: int) -> bytes:
        if b in self._dirty:
            leaves = self._leaves[b]
            if leaves:
                h = hashlib.sha256()
                for key in sorted(leaves):
                    h.update(leaves[key])
                self._buckets[b] = h.digest()
            else:
                self._buckets[b] = EMPTY
            self._dirty.discard(b)
        return self._buckets[b]

    @property
    def root(self) -> bytes:
        if self._root is None:
            h = hashlib.sha256(b"gossipmesh/config-digest/v1")
            for b in range(BUCKETS):
                h.update(self._bucket(b))
            self._root = h.digest()
        return self._root

    def bucket_hashes(self) -> dict[int, bytes]:
        """Every non-empty bucket's hash."""
        return {b: self._bucket(b) for b in range(BUCKETS) if self._leaves[b]}

    def keys_in(self, buckets: Iterable[int]) -> list[str]:
        out: list[str] = []
        for b in sorted(set(buckets)):
            if 0 <= b < BUCKETS:
                out += sorted(self._leaves[b])
        return out


__all__ = ["BUCKETS", "MerkleDigest", "bucket_of", "leaf_hash"]
