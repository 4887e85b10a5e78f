"""The array-based member table answers exactly as the dict-based one it replaced, and gives its
process-wide numbers back.

Each test drives ``MemberTable`` and the old ``DictMemberTable`` (``dict_table.py``) with the same
random operations and the same seeded ``Random``: every return value must be the very same
object, every order (``values``, the probe order, ``random_members``) the same, so the two
consume the same random draws. That is what keeps seeded simulator runs identical.
"""

from __future__ import annotations

import gc
import random

import pytest
from dict_table import DictMemberTable
from swim_numbers import hold_past_two_bytes

from gossipmesh.ids import Address, Millis
from gossipmesh.swim.member import Member, MemberState, Proof, interned_member
from gossipmesh.swim.membership import MemberTable
from gossipmesh.swim.numbering import NAMES, SNAPSHOTS, Numbering

STATES = list(MemberState)
PROOF = Proof(b"cert", 0, b"sig")


def snapshot(rng: random.Random, name: str, shared: bool) -> Member:
    args = (name, Address("10.0.0.1", 7946), rng.randrange(4), rng.choice(STATES), b"", PROOF)
    # Equal snapshots are usually one interned object; an equal but distinct one must be
    # told apart by the table too (it is keyed by identity).
    return interned_member(*args) if shared else Member(*args)


ACCEPTS = [
    lambda m: True,
    lambda m: m.state is MemberState.ALIVE,
    lambda m: m.state in (MemberState.DEAD, MemberState.LEFT),
]


def same(a: object, b: object) -> None:
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        assert all(x is y for x, y in zip(a, b, strict=True))
    else:
        assert a is b


def drive(seed: int, steps: int, names: list[str], local: Member) -> None:
    ops = random.Random(seed)
    new, old = MemberTable(local, random.Random(seed)), DictMemberTable(local, random.Random(seed))
    for step in range(steps):
        now = Millis(step)
        name = ops.choice(names)
        op = ops.random()
        if op < 0.45:
            m = snapshot(ops, name, ops.random() < 0.8)
            same(new.put(m, now), old.put(m, now))
        elif op < 0.55:
            same(new.remove(name), old.remove(name))
        elif op < 0.75:
            same(new.next_probe_target(), old.next_probe_target())
        elif op < 0.9:
            k, accept = ops.randrange(5), ops.choice(ACCEPTS)
            same(new.random_members(k, accept), old.random_members(k, accept))
        else:
            same(new.get(name), old.get(name))
            assert (name in new) == (name in old)
        same(list(new.values()), list(old.values()))
        assert len(new) == len(old) and new.live_count == old.live_count
        assert new.gone_names() == old.gone_names()
        assert new.gone_since(name) == old.gone_since(name)


def local_member(name: str) -> Member:
    return interned_member(name, Address("10.0.0.9", 7946), 0, MemberState.ALIVE, b"", PROOF)


@pytest.mark.parametrize("seed", range(12))
def test_array_table_answers_as_the_dict_table(seed: int) -> None:
    names = [f"m{i}" for i in range(25)] + ["local"]
    drive(seed, 3_000, names, local_member("local"))


def test_tables_share_numbers_and_give_them_back() -> None:
    gc.collect()
    held_names, held_snapshots = len(NAMES.numbers), len(SNAPSHOTS.numbers)
    tables = []
    rng = random.Random(7)
    for t in range(4):
        table = MemberTable(local_member(f"h{t}"), random.Random(t))
        for i in range(30):
            table.put(snapshot(rng, f"shared{i}", True), Millis(0))
        for i in range(0, 30, 3):
            table.remove(f"shared{i}")  # reaped: the name stays held until the probe rebuild
        tables.append(table)
    assert len(NAMES.numbers) >= held_names + 30
    del table
    tables.clear()
    gc.collect()
    assert (len(NAMES.numbers), len(SNAPSHOTS.numbers)) == (held_names, held_snapshots)


def test_numbers_past_two_bytes_widen_the_arrays() -> None:
    names = hold_past_two_bytes(NAMES, lambda i: f"filler{i}")
    snapshots = hold_past_two_bytes(SNAPSHOTS, lambda i: local_member(f"f{i}"))
    try:
        drive(99, 1_500, [f"w{i}" for i in range(20)] + ["wide-local"], local_member("wide-local"))
        table = MemberTable(local_member("wide-local"), random.Random(1))
        table.put(local_member("w1"), Millis(0))
        assert table._sid.typecode == table._ins.typecode == "i"
    finally:
        for n in names:
            NAMES.release(n)
        for n in snapshots:
            SNAPSHOTS.release(n)


def test_numbering_reuses_freed_numbers() -> None:
    numbering: Numbering[str] = Numbering(str)
    a, b = numbering.acquire("a"), numbering.acquire("b")
    assert a != b and 0 not in (a, b) and numbering.acquire("a") == a
    numbering.release(a)
    assert numbering.lookup("a") == a  # one holder left
    numbering.release(a)
    assert numbering.lookup("a") == 0 and numbering.items[a] is None
    assert numbering.acquire("c") == a  # the freed number, handed out again
    assert len(numbering) == 3
