"""``take_ring``: the SIGHUP reload makes the live ring equal the file's, in place."""

from __future__ import annotations

import os

import pytest

from gossipmesh.agent.reload import take_ring
from gossipmesh.crypto import MAX_KEYS, Keyring


def keys(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([0, 1], [2, 0]),  # rotated: a new primary, the old one kept for decrypting
        ([0, 1, 2], [1]),  # removals, the primary among them
        ([0], [0]),  # unchanged
    ],
)
def test_ring_takes_the_files_keys_and_primary(old: list[int], new: list[int]) -> None:
    pool = keys(3)
    ring = Keyring([pool[i] for i in old])
    take_ring(ring, Keyring([pool[i] for i in new]))
    assert ring.primary == pool[new[0]] and sorted(ring.keys()) == sorted(pool[i] for i in new)


@pytest.mark.parametrize("shared", [0, 1, MAX_KEYS - 1])
def test_a_full_ring_takes_another_full_ring(shared: int) -> None:
    old = keys(MAX_KEYS)
    fresh = old[1 : 1 + shared] + keys(MAX_KEYS - shared)  # the old primary is never kept
    ring = Keyring(old)
    take_ring(ring, Keyring(fresh))
    assert ring.primary == fresh[0] and sorted(ring.keys()) == sorted(fresh)
