"""The pure pieces of the SWIM core: suspicion timeout, awareness, broadcast queue, config, purity."""

from __future__ import annotations

import gc
import random

import pytest

from gossipmesh.errors import UsageError
from gossipmesh.ids import Address
from gossipmesh.swim.awareness import Awareness
from gossipmesh.swim.broadcast import BroadcastQueue, retransmit_limit
from gossipmesh.swim.budget import SourceBudget
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.member import Member, MemberState, interned_member
from gossipmesh.swim.membership import MemberTable
from gossipmesh.swim.push_pull import push_pull_scale_ms
from gossipmesh.swim.suspicion import Suspicion, suspicion_bounds_ms, suspicion_timeout_ms

# --- Lifeguard suspicion timeout (memberlist's suspicion_test.go cases, as totals in ms) ---------


@pytest.mark.parametrize(
    ("confirmations", "expected_ms"),
    [
        (0, 30_000),
        (1, 16_000),  # 30 - log(2)/log(4) * 28
        (2, 7_810),  # 30 - log(3)/log(4) * 28, floored to the ms
        (3, 2_000),
        (4, 2_000),
        (5, 2_000),
    ],
)
def test_suspicion_timeout_shrinks_logarithmically_to_min(
    confirmations: int, expected_ms: int
) -> None:
    # k=3 expected confirmations, min 2 s, max 30 s (memberlist TestSuspicion_remainingSuspicionTime)
    assert suspicion_timeout_ms(confirmations, 3, 2_000, 30_000) == expected_ms


def test_suspicion_timeout_without_expected_confirmations_is_min() -> None:
    assert suspicion_timeout_ms(0, 0, 4_000, 24_000) == 4_000


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (4_000, 24_000)),  # log10 floors at 1 so tiny clusters still wait a while
        (5, (4_000, 24_000)),
        (10, (4_000, 24_000)),
        (20, (5_204, 31_224)),
        (100, (8_000, 48_000)),
        (1000, (12_000, 72_000)),
    ],
)
def test_suspicion_bounds_scale_with_log10_n(n: int, expected: tuple[int, int]) -> None:
    assert suspicion_bounds_ms(4, 6, n, 1000) == expected


def test_suspicion_counts_only_distinct_sources_and_not_the_accuser() -> None:
    s = Suspicion(token=1, source="a", k=3, min_ms=2_000, max_ms=30_000, start_ms=1_000)
    assert s.deadline_ms == 31_000
    assert not s.confirm("a")  # the accuser cannot confirm itself
    assert s.confirm("b")
    assert s.deadline_ms == 17_000
    assert not s.confirm("b")  # the same source twice counts once
    assert s.deadline_ms == 17_000
    assert s.confirm("c")
    assert s.confirm("d")
    assert s.deadline_ms == 3_000
    assert not s.confirm("e")  # past k, nothing more to gain
    assert s.confirmations == 3


# --- Lifeguard awareness ------------------------------------------------------------------------


def test_awareness_is_clamped_and_scales_timeouts() -> None:
    a = Awareness(8)
    assert a.apply_delta(-1) == 0
    assert a.scale(500) == 500
    assert a.apply_delta(3) == 3
    assert a.scale(1000) == 4000
    assert a.apply_delta(100) == 7
    assert a.scale(1000) == 8000
    assert a.apply_delta(-2) == 5


# --- broadcast queue ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "limit"), [(1, 4), (2, 4), (9, 4), (10, 8), (99, 8), (100, 12), (1000, 16)]
)
def test_retransmit_limit_is_lambda_ceil_log10(n: int, limit: int) -> None:
    # λ=4: 4 * ceil(log10(n + 1))
    assert retransmit_limit(4, n) == limit


def test_broadcast_sent_exactly_limit_times() -> None:
    q = BroadcastQueue(100)
    q.queue(b"x" * 10, "a")
    sent = 0
    for _ in range(20):
        sent += len(q.get(1000, 3))
    assert sent == 3
    assert len(q) == 0


def test_news_sent_to_its_own_subject_is_not_spent() -> None:
    q = BroadcastQueue(100)
    q.queue(b"suspect-x", "x")
    q.queue(b"confirm-x-by-y", ("x", "y"))
    q.queue(b"alive-z", "z")
    # Packets to x itself: everything rides, only z's news is spent.
    assert [len(q.get(1000, 3, subject="x")) for _ in range(5)] == [3, 3, 3, 2, 2]
    assert not q.has_key("z") and q.transmits("x") == q.transmits(("x", "y")) == 0
    for _ in range(3):  # packets to anyone else spend it
        q.get(1000, 3, subject="w")
    assert len(q) == 0


def test_broadcast_least_transmitted_first_and_newest_first() -> None:
    q = BroadcastQueue(100)
    q.queue(b"old-----", "a")
    assert q.get(1000, 10) == [b"old-----"]
    q.queue(b"new1----", "b")
    q.queue(b"new2----", "c")
    # Room for two 8-byte items: both fresh ones (0 transmits) beat the once-sent one; newest first.
    assert q.get(17, 10) == [b"new2----", b"new1----"]
    assert q.transmits("a") == q.transmits("b") == q.transmits("c") == 1


def test_newer_news_about_a_member_replaces_older() -> None:
    q = BroadcastQueue(100)
    q.queue(b"suspect-b", "b")
    q.get(1000, 10)
    q.queue(b"alive-b", "b")
    assert len(q) == 1
    assert q.transmits("b") == 0
    assert q.get(1000, 10) == [b"alive-b"]


def test_user_payloads_never_invalidate_each_other() -> None:
    q = BroadcastQueue(100)
    q.queue(b"one")
    q.queue(b"two")
    assert len(q) == 2


def test_broadcast_queue_depth_is_bounded_dropping_most_sent_oldest() -> None:
    q = BroadcastQueue(16)
    q.queue(b"sent-a", "a")
    q.get(1000, 10)
    for i in range(20):
        q.queue(b"fresh", f"m{i}")
    assert len(q) == 16
    assert q.dropped == 5
    assert not q.has_key("a")  # the one already transmitted goes first
    assert not q.has_key("m0")


def test_broadcasts_respect_the_byte_budget() -> None:
    q = BroadcastQueue(1000)
    for i in range(100):
        q.queue(b"z" * 50, f"m{i}")
    got = q.get(1000, 10)
    assert sum(map(len, got)) <= 1000
    assert len(got) == 20


# --- membership order ---------------------------------------------------------------------------


def _member(name: str, state: MemberState = MemberState.ALIVE) -> Member:
    return Member(name, Address("10.0.0.1", 1), 0, state, b"")


def test_probe_order_visits_every_live_member_once_per_round_and_skips_dead() -> None:
    t = MemberTable(_member("me"), random.Random(3))
    for i in range(10):
        t.put(_member(f"m{i}"), 0)
    t.put(_member("m3", MemberState.DEAD), 0)
    t.put(_member("m4", MemberState.LEFT), 0)
    assert t.live_count == 9
    first_round = [t.next_probe_target() for _ in range(8)]
    names = [m.name for m in first_round if m is not None]
    assert sorted(names) == sorted(f"m{i}" for i in range(10) if i not in (3, 4))
    second_round = {m.name for m in (t.next_probe_target() for _ in range(8)) if m is not None}
    assert len(second_round) == 8


def test_random_members_excludes_self_and_filters() -> None:
    t = MemberTable(_member("me"), random.Random(1))
    for i in range(30):
        t.put(_member(f"m{i}", MemberState.DEAD if i % 10 else MemberState.ALIVE), 0)
    got = t.random_members(5, lambda m: m.state is MemberState.ALIVE)
    assert sorted(m.name for m in got) == ["m0", "m10", "m20"]
    assert all(m.name != "me" for m in t.random_members(50, lambda m: True))


def test_a_member_reaped_and_back_before_the_rebuild_is_listed_once() -> None:
    t = MemberTable(_member("me"), random.Random(5))
    for i in range(6):
        t.put(_member(f"m{i}"), 0)
    first = t.next_probe_target()  # builds the first round's order
    t.put(_member("m2", MemberState.DEAD), 100)
    assert t.gone_since("m2") == 100
    t.remove("m2")
    assert t.gone_since("m2") is None
    t.put(_member("m2"), 200)  # back within the same round
    rest = [t.next_probe_target() for _ in range(5)]
    names = [m.name for m in [first, *rest] if m is not None]
    assert sorted(names) == [f"m{i}" for i in range(6)]  # one round: each exactly once
    assert len(t._order) == 6


def test_nodes_that_agree_share_one_snapshot_and_the_intern_table_holds_none_alive() -> None:
    addr = Address("10.0.0.9", 7946)
    a = interned_member("x" * 3, addr, 4, MemberState.ALIVE, b"m")
    b = interned_member("".join(["x", "xx"]), Address("10.0.0.9", 7946), 4, MemberState.ALIVE, b"m")
    assert a is b
    assert interned_member("xxx", addr, 5, MemberState.ALIVE, b"m") is not a
    assert a == Member("xxx", addr, 4, MemberState.ALIVE, b"m")
    import weakref

    ref = weakref.ref(a)
    del a, b
    gc.collect()
    assert ref() is None  # weakly held: a member no table holds is freed


# --- push-pull scaling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "mult"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6), (10_000, 10)]
)
def test_push_pull_interval_scales_like_memberlist(n: int, mult: int) -> None:
    assert push_pull_scale_ms(30_000, n) == mult * 30_000


# --- config -------------------------------------------------------------------------------------


def test_memberlist_compatible_presets_carry_memberlists_numbers() -> None:
    lan, wan, local = (SwimConfig.memberlist(p) for p in ("lan", "wan", "local"))
    assert (lan.probe_interval_ms, lan.probe_timeout_ms, lan.suspicion_mult) == (1000, 500, 4)
    assert (lan.suspicion_confirmations, lan.confirm_probe_fanout) == (2, 0)  # k = α - 2
    assert (wan.suspicion_mult, wan.suspicion_max_timeout_mult) == (6, 6)
    assert (wan.suspicion_confirmations, wan.confirm_probe_fanout) == (4, 0)
    assert (local.suspicion_mult, local.suspicion_max_timeout_mult) == (3, 6)
    assert (local.suspicion_confirmations, local.confirm_probe_fanout) == (1, 0)
    # The documented spelling of the same thing.
    assert lan == SwimConfig.lan(
        suspicion_mult=4,
        suspicion_max_timeout_mult=6,
        suspicion_confirmations=2,
        confirm_probe_fanout=0,
    )
    # memberlist's timeouts at n = 20: min 5.2 s, max 31.2 s, and 2 confirmations reach the min.
    lo, hi = suspicion_bounds_ms(
        lan.suspicion_mult, lan.suspicion_max_timeout_mult, 20, lan.probe_interval_ms
    )
    assert (lo, hi) == (5_204, 31_224)
    assert suspicion_timeout_ms(1, lan.suspicion_confirmations, lo, hi) == 14_807
    assert suspicion_timeout_ms(2, lan.suspicion_confirmations, lo, hi) == 5_204
    assert SwimConfig.memberlist("wan", gossip_nodes=2).gossip_nodes == 2
    with pytest.raises(UsageError):
        SwimConfig.memberlist("moon")


def test_presets_halve_alpha_and_keep_the_lone_accusers_wait() -> None:
    for name in ("lan", "wan", "local"):
        new, old = SwimConfig.preset(name), SwimConfig.memberlist(name)
        # A lone accuser (no confirmation) waits exactly as long as in memberlist...
        assert (
            new.suspicion_mult * new.suspicion_max_timeout_mult
            == old.suspicion_mult * old.suspicion_max_timeout_mult
        ), name
        # ...a confirmed suspicion resolves sooner, and confirmations are actively sought.
        assert new.suspicion_mult < old.suspicion_mult, name
        assert new.suspicion_confirmations == 3 and new.confirm_probe_fanout == 6, name
        # Everything but the suspicion settings is memberlist's.
        same = new.replace(
            suspicion_mult=old.suspicion_mult,
            suspicion_max_timeout_mult=old.suspicion_max_timeout_mult,
            suspicion_confirmations=old.suspicion_confirmations,
            confirm_probe_fanout=0,
        )
        assert same == old, name
    lan = SwimConfig.lan()
    assert (lan.suspicion_mult, lan.suspicion_max_timeout_mult) == (2, 12)
    assert (SwimConfig.wan().suspicion_mult, SwimConfig.local().suspicion_mult) == (3, 2)
    assert SwimConfig.local().suspicion_max_timeout_mult == 9
    # n = 20: min 2.6 s (half memberlist's 5.2 s), max 31.2 s (memberlist's).
    assert suspicion_bounds_ms(2, 12, 20, 1000) == (2_602, 31_224)


def test_presets_carry_memberlists_timing() -> None:
    lan, wan, local = SwimConfig.lan(), SwimConfig.wan(), SwimConfig.local()
    assert (lan.probe_interval_ms, lan.probe_timeout_ms, lan.indirect_checks) == (1000, 500, 3)
    assert (lan.gossip_interval_ms, lan.gossip_nodes, lan.push_pull_interval_ms) == (200, 3, 30_000)
    assert (
        lan.suspicion_max_timeout_mult,
        lan.awareness_max_multiplier,
        lan.packet_size_bytes,
    ) == (12, 8, 1400)
    assert (wan.probe_interval_ms, wan.probe_timeout_ms, wan.retransmit_mult) == (5000, 3000, 4)
    assert (wan.gossip_interval_ms, wan.gossip_nodes, wan.gossip_to_dead_ms) == (500, 4, 60_000)
    assert (local.probe_timeout_ms, local.indirect_checks, local.retransmit_mult) == (200, 1, 2)
    assert (local.gossip_interval_ms, local.push_pull_interval_ms, local.gossip_to_dead_ms) == (
        100,
        15_000,
        15_000,
    )
    assert SwimConfig.preset("wan") == wan
    assert SwimConfig.wan(gossip_nodes=2).gossip_nodes == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"probe_timeout_ms": 1000},  # not below the interval
        {"probe_interval_ms": 0},
        {"packet_size_bytes": 100},
        {"dead_reap_ms": 1000},  # reaped before the reconnect window ends
        {"gossip_nodes": -1},
        {"suspicion_mult": True},  # a bool is not an int here
    ],
)
def test_config_rejects_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        SwimConfig(**bad)  # type: ignore[arg-type]


def test_unknown_preset_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        SwimConfig.preset("moon")


# --- verification budget ------------------------------------------------------------------------


def test_each_source_has_its_own_token_bucket_refilled_with_time() -> None:
    a, b = Address("10.0.0.1", 1), Address("10.0.0.2", 1)
    budget = SourceBudget(rate_per_s=10, burst=3, max_sources=8)
    assert [budget.take(a, 0) for _ in range(4)] == [True, True, True, False]
    assert budget.take(b, 0)  # another source is not affected
    assert not budget.take(a, 50)  # half a token after 50 ms at 10/s
    assert budget.take(a, 100)  # one token after 100 ms
    assert [budget.take(a, 10_000) for _ in range(4)] == [True, True, True, False]  # capped


def test_the_budget_keeps_a_bounded_number_of_sources() -> None:
    budget = SourceBudget(rate_per_s=1, burst=1, max_sources=4)
    first = Address("10.0.0.1", 1)
    assert budget.take(first, 0) and not budget.take(first, 0)
    for i in range(2, 7):
        budget.take(Address(f"10.0.0.{i}", 1), 0)
    assert len(budget) == 4
    assert budget.take(first, 0)  # it was evicted, least recently used, and starts anew


def test_an_item_with_a_later_form_switches_to_it_after_its_first_transmits() -> None:
    q = BroadcastQueue(16)
    q.queue(b"F" * 100, "m1", later=b"c" * 10, later_after=2)
    assert q.get(1000, 5) == [b"F" * 100]
    assert q.get(1000, 5) == [b"F" * 100]
    assert q.get(1000, 5) == [b"c" * 10]  # the third and later sends use the short form
    assert q.transmits("m1") == 3
