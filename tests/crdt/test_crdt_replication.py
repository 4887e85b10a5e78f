"""The pure replication decisions the agent and the simulator share (crdt/replication.py)."""

from __future__ import annotations

import random

import pytest

from gossipmesh.crdt import replication as p
from gossipmesh.swim.member import MemberState, event_kind


def test_spread_small_deltas_by_gossip_and_eager_udp_large_ones_by_tcp() -> None:
    assert p.plan_spread(500) == p.Spread(gossip=True, udp_fanout=3, stream_fanout=0)
    assert p.plan_spread(1001) == p.Spread(gossip=False, udp_fanout=0, stream_fanout=3)
    assert p.plan_forward(500) == p.Spread(gossip=False, udp_fanout=2, stream_fanout=0)
    assert p.plan_forward(5000, fanout=3) == p.Spread(gossip=False, udp_fanout=0, stream_fanout=3)


@pytest.mark.parametrize(("n", "mult"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6)])
def test_sync_interval_scales_like_memberlist_push_pull(n: int, mult: int) -> None:
    assert p.sync_interval_ms(3000, n) == 3000 * mult


@pytest.mark.parametrize(
    ("state", "previous", "sync"),
    [("alive", None, True), ("suspect", None, True), ("alive", "dead", True),
     ("alive", "left", True), ("alive", "suspect", True), ("suspect", "alive", False),
     ("alive", "alive", False), ("dead", "suspect", False), ("left", "alive", False)],
)  # fmt: skip
def test_sync_on_join_and_on_return_from_suspect_or_dead(
    state: str, previous: str | None, sync: bool
) -> None:
    assert p.sync_on_member_change(state, previous) is sync


def test_sync_trigger_is_join_or_alive_again_in_the_agents_event_terms() -> None:
    """The rule in the words the agent logs: a ``join`` event, or ``alive`` after suspect/dead."""
    states: list[MemberState | None] = [None, *MemberState]
    for previous in states:
        for state in MemberState:
            kind = event_kind(previous, state)
            prev = previous.value if previous is not None else None
            expected = kind == "join" or (kind == "alive" and prev in ("suspect", "dead"))
            assert p.sync_on_member_change(state.value, prev) is expected, (previous, state)


def test_peer_choice_is_deterministic_for_a_seed() -> None:
    peers = ["n3", "n1", "n2", "n1"]
    assert p.pick_peers(peers, 2, random.Random(7)) == p.pick_peers(
        peers[::-1], 2, random.Random(7)
    )
    assert sorted(p.pick_peers(peers, 9, random.Random(1))) == ["n1", "n2", "n3"]
    assert 750 <= p.jittered_ms(1000, random.Random(3)) <= 1250
