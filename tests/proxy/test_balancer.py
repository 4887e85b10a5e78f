"""Balancers: policies, weights, panic threshold, ring-hash stability. No sockets."""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.proxy.balancer import (
    DECAY_NS,
    DEFAULT_RTT_NS,
    Balancer,
    EndpointState,
    available,
    build_ring,
    eligible_mask,
    peak_ewma_cost,
    ring_lookup,
)


def states(n: int, weights: list[int] | None = None) -> list[EndpointState]:
    ws = weights or [1] * n
    return [EndpointState(("n", f"10.0.0.{i}", 80), ws[i]) for i in range(n)]


def test_round_robin_cycles() -> None:
    sts = states(3)
    b = Balancer("round_robin", [1, 1, 1])
    rng = random.Random(1)
    assert [b.pick(sts, rng, 0, False) for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_least_request_prefers_idle() -> None:
    sts = states(2)
    sts[0].inflight = 10
    b = Balancer("least_request", [1, 1])
    rng = random.Random(2)
    assert all(b.pick(sts, rng, 0, False) == 1 for _ in range(50))


def test_peak_ewma_prefers_fast_and_jumps_to_peaks() -> None:
    sts = states(2)
    sts[0].observe_rtt(100_000_000, 0)  # 100 ms
    sts[1].observe_rtt(1_000_000, 0)  # 1 ms
    b = Balancer("peak_ewma", [1, 1])
    rng = random.Random(3)
    assert all(b.pick(sts, rng, 0, False) == 1 for _ in range(50))
    # A peak is taken at once; a lower sample only decays it.
    sts[1].observe_rtt(500_000_000, 1)
    assert sts[1].ewma_ns == 500_000_000
    sts[1].observe_rtt(1_000_000, 2)
    assert sts[1].ewma_ns > 400_000_000
    # In-flight multiplies the cost: (in-flight + 1) x the latency estimate, per unit of weight.
    idle = peak_ewma_cost(sts[0], 0)
    assert idle == 100_000_000
    sts[0].inflight = 3
    assert peak_ewma_cost(sts[0], 0) == 4 * idle
    heavy = EndpointState(("n", "10.0.0.9", 80), weight=2)
    heavy.observe_rtt(100_000_000, 0)
    heavy.inflight = 3
    assert peak_ewma_cost(heavy, 0) == 2 * idle
    # A never-measured endpoint costs the default estimate; a measured one's estimate decays
    # with the time since its last sample (by 1/e after DECAY_NS).
    assert peak_ewma_cost(EndpointState(("n", "10.0.0.8", 80)), 0) == DEFAULT_RTT_NS
    sts[0].inflight = 0
    assert abs(peak_ewma_cost(sts[0], DECAY_NS) - idle / math.e) < 1


def test_ejected_endpoints_avoided_until_panic() -> None:
    sts = states(4)
    b = Balancer("round_robin", [1] * 4)
    rng = random.Random(4)
    sts[0].ejected_until_ns = 1000
    picks = {b.pick(sts, rng, 0, True) for _ in range(20)}
    assert 0 not in picks
    # 3 of 4 ejected: fewer than half healthy -> panic, balance across all.
    sts[1].ejected_until_ns = sts[2].ejected_until_ns = 1000
    picks = {b.pick(sts, rng, 0, True) for _ in range(20)}
    assert picks == {0, 1, 2, 3}
    # Ejection ends by time.
    picks = {b.pick(sts, rng, 2000, True) for _ in range(20)}
    assert picks == {0, 1, 2, 3}


def test_tried_endpoints_skipped_then_reused_when_nothing_left() -> None:
    sts = states(3)
    for policy in ("round_robin", "least_request", "peak_ewma", "ring_hash"):
        ring = build_ring([s.key for s in sts], [1, 1, 1])
        b = Balancer(policy, [1, 1, 1], ring)
        rng = random.Random(5)
        for _ in range(20):
            assert b.pick(sts, rng, 0, False, tried=[0, 1], hash_key=b"k") == 2
        assert b.pick(sts, rng, 0, False, tried=[0, 1, 2], hash_key=b"k") in (0, 1, 2)


def test_empty_cluster() -> None:
    assert Balancer("least_request", []).pick([], random.Random(), 0, False) == -1


@settings(max_examples=20, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=5),
    policy=st.sampled_from(["round_robin", "least_request"]),
    seed=st.integers(0, 2**32),
)
def test_endpoint_weights_honoured(weights: list[int], policy: str, seed: int) -> None:
    sts = states(len(weights), weights)
    b = Balancer(policy, weights)
    rng = random.Random(seed)
    n = 6000
    counts = Counter(b.pick(sts, rng, 0, False) for _ in range(n))
    total = sum(weights)
    if policy == "round_robin":
        for i, w in enumerate(weights):
            assert abs(counts[i] / n - w / total) < 0.05, (weights, counts)
    else:
        # P2C with nothing in flight is a weighted draw of two: heavier endpoints win more.
        heaviest = max(range(len(weights)), key=lambda i: weights[i])
        lightest = min(range(len(weights)), key=lambda i: weights[i])
        if weights[heaviest] > weights[lightest]:
            assert counts[heaviest] > counts[lightest]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=3, max_value=12), seed=st.integers(0, 2**32))
def test_ring_hash_stable_under_membership_change(n: int, seed: int) -> None:
    rng = random.Random(seed)
    keys = [("node", f"10.0.{i}.{rng.randrange(255)}", 80 + i) for i in range(n)]
    before = build_ring(keys, [1] * n)
    added = ("node", "10.9.9.9", 9999)
    after = build_ring([*keys, added], [1] * (n + 1))
    samples = [rng.randbytes(8) for _ in range(3000)]
    moved = 0
    for k in samples:
        a = ring_lookup(before, k)
        b = ring_lookup(after, k)
        if b == n:  # went to the new endpoint: fine and expected for ~1/(n+1)
            moved += 1
        else:
            # Old endpoints keep their indices, so the same index is the same endpoint.
            assert a == b, "a key moved between two endpoints that both stayed"
    share = moved / len(samples)
    assert abs(share - 1 / (n + 1)) < 0.6 / (n + 1) + 0.02, share


def test_ring_hash_same_key_same_endpoint() -> None:
    sts = states(5)
    ring = build_ring([s.key for s in sts], [1] * 5)
    b = Balancer("ring_hash", [1] * 5, ring)
    rng = random.Random(6)
    first = b.pick(sts, rng, 0, False, hash_key=b"user-42")
    assert all(b.pick(sts, rng, 0, False, hash_key=b"user-42") == first for _ in range(10))
    # The owner ejected: the key walks to the next endpoint, consistently.
    sts[first].ejected_until_ns = 10
    second = b.pick(sts, rng, 0, True, hash_key=b"user-42")
    assert second != first
    assert b.pick(sts, rng, 0, True, hash_key=b"user-42") == second


def test_down_endpoints_stay_out_while_another_is_left_even_in_panic():
    sts = states(4)
    sts[0].down_until_ns = 1000
    for s in sts[1:]:
        s.ejected_until_ns = 1000  # panic (1 of 4 un-ejected): ejection is ignored...
    assert eligible_mask(sts, 10, None) == [False, True, True, True]  # ...but not "down"
    for s in sts:
        s.ejected_until_ns = 0
        s.down_until_ns = 1000
    assert eligible_mask(sts, 10, None) is None  # all down: nothing better is known
    assert eligible_mask(sts, 1000, None) is None  # and the marks pass
    assert available(sts[0], 1000) and not available(sts[0], 999)
