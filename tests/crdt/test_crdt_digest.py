"""The digest: equal roots mean identical documents; the old XOR-of-64-bit-hashes could be fooled.

Issue 11: "two replicas with different values can be made to look in sync". The old root was the
XOR of a 64-bit hash per entry. XOR is linear: among 65 choices of value there is always a subset
whose hash differences cancel, and Gaussian elimination over GF(2) finds it in microseconds. The
first test builds such a pair of documents (same keys, same dots, different values) and shows the
old root equal and the Merkle root different.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
from crdt_helpers import T0, new_doc, sign

from gossipmesh.crdt.digest import MerkleDigest, bucket_of
from gossipmesh.crdt.document import Delta, Entry
from gossipmesh.crdt.entries import pack
from gossipmesh.crdt.hlc import Timestamp

SLOTS = 80  # more than 64: a linear dependency among the 64-bit differences must exist


def old_entry_hash(e: Entry) -> int:
    """The share of an entry in the pre-issue-11 root (crdt/entries.py ``entry_hash``)."""
    parts = ("e", e.key, e.writer, e.counter, tuple(e.hlc), e.context, e.value, e.suspect)
    raw = msgpack.packb(parts, use_bin_type=True)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def old_root(entries: list[Entry]) -> int:
    """The old root of documents with the same dots: their context shares are equal, so only
    the entries' XOR can differ."""
    root = 0
    for e in entries:
        root ^= old_entry_hash(e)
    return root


def entry(slot: int, value: Any) -> Entry:
    return Entry(f"route/r{slot}", "w@1", slot + 1, Timestamp(T0, 0), (), pack({"v": value}))


def cancelling_subset(diffs: list[int]) -> list[int]:
    """Indices of a non-empty subset of ``diffs`` whose XOR is 0 (Gaussian elimination)."""
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (vector, mask of the indices it uses)
    for i, d in enumerate(diffs):
        vec, mask = d, 1 << i
        while vec:
            top = vec.bit_length() - 1
            if top not in basis:
                basis[top] = (vec, mask)
                break
            bvec, bmask = basis[top]
            vec, mask = vec ^ bvec, mask ^ bmask
        else:
            return [j for j in range(len(diffs)) if mask >> j & 1]
    raise AssertionError("no dependency among more vectors than bits")


def test_the_old_xor_root_is_fooled_by_chosen_values_and_the_merkle_root_is_not() -> None:
    a_entries = [entry(i, "operator") for i in range(SLOTS)]
    b_choice = [entry(i, "attacker") for i in range(SLOTS)]
    diffs = [
        old_entry_hash(a) ^ old_entry_hash(b) for a, b in zip(a_entries, b_choice, strict=True)
    ]
    flip = set(cancelling_subset(diffs))
    b_entries = [b_choice[i] if i in flip else a_entries[i] for i in range(SLOTS)]
    assert flip and a_entries != b_entries
    assert old_root(a_entries) == old_root(b_entries)  # the old digest says "in sync"
    a, b = new_doc(), new_doc()
    a.merge(Delta(tuple(sign(e) for e in a_entries)), T0)
    b.merge(Delta(tuple(sign(e) for e in b_entries)), T0)
    assert a.known_maps() == b.known_maps()  # the same dots everywhere ...
    assert a.root_hash != b.root_hash  # ... and yet the roots differ, as they must
    differing = {k for k, h in a.bucket_hashes().items() if b.bucket_hashes()[k] != h}
    assert differing == {bucket_of(f"route/r{i}") for i in flip}


def test_equal_roots_iff_equal_entries_and_known_maps() -> None:
    x, y = MerkleDigest(), MerkleDigest()
    e = sign(entry(1, "a"))
    x.update(e.key, {"w@1": 2}, [e])
    y.update(e.key, {"w@1": 2}, [e])
    assert x.root == y.root
    y.update(e.key, {"w@1": 3}, [e])  # same entries, a different known map
    assert x.root != y.root
    y.update(e.key, {"w@1": 2}, [e])
    assert x.root == y.root
    y.update(e.key, {}, [])  # a key with nothing known drops out
    assert y.root == MerkleDigest().root and y.bucket_hashes() == {}
    assert x.keys_in([bucket_of(e.key), 999]) == [e.key]


def test_tombstones_count_through_the_known_map_only() -> None:
    t = sign(Entry("route/x", "w@1", 2, Timestamp(T0, 0), (("w@1", 1),), None))
    x, y = MerkleDigest(), MerkleDigest()
    x.update(t.key, {"w@1": 2}, [t])
    y.update(t.key, {"w@1": 2}, [])  # collected: the known map stays
    assert x.root == y.root
