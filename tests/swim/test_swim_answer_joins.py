"""``SwimNode.answer_joins`` leaves every fresh core exactly as the join path would.

The join path: a just-started core calls ``join([seed])``, gets the seed's
``push_pull_payload(False)`` through ``handle_push_pull_reply`` and fires every MERGE timer it
asks for (what the simulator's warm start did for every host). ``answer_joins`` must give the
same core: the same members (the very snapshots), in the same insertion order, the same probe
order, the same random draws, counters and timer tokens. Both worlds are built from the same
seeds and compared through what a core shows and does: its members, its injected generator's
state, its counters, the timers it arms and the members it probes, round after round.
"""

from __future__ import annotations

import gc
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from swim_auth import authority, suspect
from swim_numbers import hold_past_two_bytes

from gossipmesh.errors import UsageError
from gossipmesh.ids import Address
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import MemberChanged, SendPacket, SetTimer
from gossipmesh.swim.member import MemberState
from gossipmesh.swim.messages import encode
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.numbering import NAMES, SNAPSHOTS
from gossipmesh.swim.timers import TimerKind
from gossipmesh.wire import encode_packet


def _address(i: int) -> Address:
    return Address(f"10.9.{i >> 8}.{i & 255}", 7946)


def _core(name: str, i: int, cfg: SwimConfig, seed: int, incarnation: int = 0) -> SwimNode:
    core = SwimNode(name, _address(i), cfg, random.Random(seed), 0, incarnation=incarnation,
                    authority=authority(name))  # fmt: skip
    core.start(0)  # booted, as every simulated host is before it joins
    return core


def _join_path(core: SwimNode, seed: SwimNode) -> list[Any]:
    """``core`` joins through ``seed``: the reply merged, its MERGE timers fired at once."""
    core.join([seed.address], 0)
    return _merge(core, seed)


def _merge(core: SwimNode, peer: SwimNode) -> list[Any]:
    """``core`` merges ``peer``'s state (its MERGE timers fired at once): the members changed."""
    effects = core.handle_push_pull_reply(peer.address, peer.push_pull_payload(False), 0)
    changed = []
    while True:
        changed += [e.member for e in effects if type(e) is MemberChanged]
        merge = [
            e.timer for e in effects if type(e) is SetTimer and e.timer.kind is TimerKind.MERGE
        ]
        if not merge:
            return changed
        effects = core.handle_timer(merge[0], 0)


def _shown(core: SwimNode, rng: random.Random) -> Any:
    """What a core shows, then what it does for a few probe rounds (timers, probe targets)."""
    # The very snapshots, but our own (each world's core signed its own claim).
    members = [(m.name, m.incarnation, m.address) if m.name == core.name else id(m)
               for m in core.members()]  # fmt: skip
    seen: list[Any] = [members, rng.getstate(), dict(core.stats), core.live_count, core.merging]
    effects = core.start(0)
    for _ in range(2 * len(core.members()) + 2):
        timers = [e for e in effects if type(e) is SetTimer]
        seen += [(e.timer.kind, e.timer.token, e.at_ms) for e in timers]
        seen += [e.to for e in effects if type(e) is SendPacket]
        probe = [e for e in timers if e.timer.kind is TimerKind.PROBE]
        if not probe:
            break
        effects = core.handle_timer(probe[0].timer, probe[0].at_ms)
    seen.append(rng.getstate())
    return seen


def _holders() -> tuple[list[int], list[int]]:
    return list(NAMES.refs), list(SNAPSHOTS.refs)


def _moved(before: list[int], after: list[int]) -> dict[int, int]:
    """Number -> how many holders it gained (or lost) between two readings."""
    before = before + [0] * (len(after) - len(before))
    return {n: a - b for n, (b, a) in enumerate(zip(before, after, strict=False)) if a != b}


@st.composite
def clusters(draw: st.DrawFn) -> Any:
    known = draw(st.integers(1, 9))  # members the seed holds besides itself
    order = draw(st.permutations(range(known)))
    # Fresh cores: some of the seed's members (at the incarnation it holds or a later boot),
    # some it has never heard of.
    fresh = draw(st.lists(st.tuples(st.integers(0, known + 3), st.integers(0, 2),
                                    st.integers(0, 2**32)), min_size=1, max_size=5,
                          unique_by=lambda f: f[0]))  # fmt: skip
    chunk_checks = draw(st.integers(1, 6))
    chunk_records = draw(st.integers(1, 9))
    return known, order, fresh, chunk_checks, chunk_records, draw(st.integers(0, 2**32))


@settings(max_examples=60, deadline=None)
@given(clusters())
def test_answer_joins_is_the_join_path(cluster: Any) -> None:
    _check_against_the_join_path(cluster)


def test_answer_joins_is_the_join_path_with_numbers_past_two_bytes() -> None:
    # Every name and snapshot numbered above 16 bits: the tables' arrays are the wide ones.
    gc.collect()
    # One fresh core's name keeps a small number (held by this keeper), so its table starts
    # narrow while the seed's is wide.
    keeper = _core("ajw0-0", 1, SwimConfig(), 1)
    names = hold_past_two_bytes(NAMES, lambda i: f"aj-filler{i}")
    try:
        for k, cluster in enumerate([
            (5, [3, 0, 4, 1, 2], [(0, 0, 7), (2, 1, 8), (7, 0, 9)], 2, 3, 11),
            (1, [0], [(0, 0, 1), (3, 0, 2)], 1, 1, 12),
        ]):  # fmt: skip
            assert NAMES.lookup(f"ajw{k}-seed") == 0  # numbered afresh: past two bytes
            _check_against_the_join_path(cluster, prefix=f"ajw{k}")
        assert 0 < NAMES.lookup(keeper.name) <= 0xFFFF
    finally:
        for n in names:
            NAMES.release(n)


def _check_against_the_join_path(cluster: Any, prefix: str = "aj") -> None:
    known, order, fresh, chunk_checks, chunk_records, seed = cluster
    cfg = replace(SwimConfig(), merge_chunk_verifications=chunk_checks,
                  merge_chunk_records=chunk_records)  # fmt: skip
    # The seed learns its members (their first boot, incarnation 0) in a random order.
    seed_core = _core(f"{prefix}-seed", 0, cfg, seed)
    members = [_core(f"{prefix}-{i}", i + 1, cfg, seed + i) for i in range(known)]
    for i in order:
        _merge(seed_core, members[i])
    learned = seed_core.members()
    assert len(learned) == known + 1

    def world() -> tuple[list[SwimNode], list[random.Random]]:
        cores, rngs = [], []
        for i, incarnation, rng_seed in fresh:
            rng = random.Random(rng_seed)
            name = f"{prefix}-{i}"
            core = SwimNode(name, _address(i + 1), cfg, rng, 0, incarnation=incarnation,
                            authority=authority(name))  # fmt: skip
            core.start(0)
            cores.append(core)
            rngs.append(rng)
        return cores, rngs

    # The process-wide holder counts (``numbering.py``) must move as the join path moves them;
    # no collection may run between the readings (cores are cyclic garbage when dropped).
    gc.collect()
    gc.disable()
    try:
        counts = [_holders()]
        joined, joined_rngs = world()
        changes = [_join_path(core, seed_core) for core in joined]
        counts.append(_holders())
        answered, answered_rngs = world()
        seed_core.answer_joins(answered, 0)
        counts.append(_holders())
    finally:
        gc.enable()
    (names0, snaps0), (names1, snaps1), (names2, snaps2) = counts
    assert _moved(names0, names1) == _moved(names1, names2)
    # Snapshots: the shared ones move alike; each world's own (one per fresh core) once.
    shared = {SNAPSHOTS.lookup(m) for m in learned}
    moved_a, moved_b = _moved(snaps0, snaps1), _moved(snaps1, snaps2)
    assert {k: v for k, v in moved_a.items() if k in shared} == {
        k: v for k, v in moved_b.items() if k in shared
    }
    assert sum(moved_a.values()) == sum(moved_b.values())
    assert seed_core.members() == learned  # the seed itself is unchanged
    for a, b, ra, rb, changed in zip(joined, answered, joined_rngs, answered_rngs, changes,
                                     strict=True):  # fmt: skip
        assert [m for m in b.members() if m.name != b.name] == changed
        assert _shown(a, ra) == _shown(b, rb)


def test_a_state_with_a_suspect_is_refused_unchanged() -> None:
    cfg = SwimConfig()
    seed_core = _core("aj-s-seed", 0, cfg, 1)
    for i in (1, 2):
        _merge(seed_core, _core(f"aj-s-{i}", i, cfg, i + 1))
    accusation = encode(suspect("aj-s-1", 0, by="aj-s-2"))
    seed_core.handle_packet(_address(2), encode_packet([accusation]), 0)
    held = seed_core.member("aj-s-1")
    assert held is not None and held.state is MemberState.SUSPECT
    fresh = _core("aj-s-3", 3, cfg, 4)
    before = (fresh.members(), dict(fresh.stats))
    with pytest.raises(UsageError):
        seed_core.answer_joins([fresh], 0)
    assert (fresh.members(), dict(fresh.stats)) == before


def test_a_core_that_knows_others_is_refused_unchanged() -> None:
    cfg = SwimConfig()
    seed_core = _core("aj-f-seed", 0, cfg, 1)
    a = _core("aj-f-1", 1, cfg, 2)
    b = _core("aj-f-2", 2, cfg, 3)
    _merge(seed_core, a)
    _merge(b, a)  # b is not fresh
    c = _core("aj-f-3", 3, cfg, 4)
    before = (b.members(), c.members(), dict(c.stats))
    with pytest.raises(UsageError):
        seed_core.answer_joins([c, b], 0)
    assert (b.members(), c.members(), dict(c.stats)) == before


def test_news_about_the_fresh_core_itself_is_refused() -> None:
    cfg = SwimConfig()
    seed_core = _core("aj-n-seed", 0, cfg, 1)
    old = _core("aj-n-1", 1, cfg, 2, incarnation=3)
    _merge(seed_core, old)
    restarted = _core("aj-n-1", 1, cfg, 5, incarnation=1)  # behind what the seed holds
    with pytest.raises(UsageError):
        seed_core.answer_joins([restarted], 0)


def test_no_runtime_but_the_simulator_calls_it() -> None:
    # The shortcut skips signature checks the caller vouches for: only the simulator, which
    # runs every core over one trust store, may call it; nothing in the agent reaches it.
    package = Path(__file__).resolve().parents[2] / "gossipmesh"
    callers = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
               if "answer_joins" in p.read_text(encoding="utf-8")]  # fmt: skip
    assert sorted(callers) == ["swim/membership.py", "swim/node.py", "swim/push_pull.py"]
