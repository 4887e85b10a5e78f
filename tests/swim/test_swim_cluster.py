"""Whole clusters of SwimNodes in the virtual world of ``swim_harness``: behaviour end to end."""

from __future__ import annotations

from swim_auth import suspect
from swim_harness import World

from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import MemberChanged
from gossipmesh.swim.member import MemberState
from gossipmesh.swim.messages import Ping, decode_packet_messages, encode
from gossipmesh.swim.suspicion import suspicion_bounds_ms
from gossipmesh.wire import encode_packet

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


def test_join_through_one_seed_all_alive() -> None:
    w = World()
    w.cluster(8)
    assert w.all_alive()
    assert all(len(n.members()) == 8 for n in w.nodes.values())
    assert w.max_packet_seen <= 1400


def test_crashed_node_is_suspected_then_dead_everywhere_within_bound() -> None:
    cfg = SwimConfig.lan()
    w = World(config=cfg)
    w.cluster(8)
    w.crash("n3")
    took = w.run_until_true(lambda: w.all_see("n3", DEAD), limit_ms=60_000)
    # Detection: every live member probes everyone within one round (n - 1 probes), then the
    # suspicion runs at most its maximum.
    _, max_ms = suspicion_bounds_ms(
        cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, 8, cfg.probe_interval_ms
    )
    assert took <= 8 * cfg.probe_interval_ms + max_ms
    # With confirmations from the other members, it is far quicker than the maximum.
    assert took <= 8 * cfg.probe_interval_ms + max_ms // 2
    states = [s for _, _, _, s in w.changes("n3")]
    assert SUSPECT in states and states.index(SUSPECT) < states.index(DEAD)
    # No false positives on the living.
    assert all(w.state(o, n) is ALIVE for o in w.up() for n in w.up())


def inject(w: World, at: str, *msgs: object) -> None:
    """Deliver hand-made rumours to one node, as if a peer had gossiped them."""
    data = encode_packet([encode(m) for m in msgs])  # type: ignore[arg-type]
    w.apply(at, w.nodes[at].handle_packet(w.address_of("n0"), data, w.now_ms))


def first_message(data: bytes) -> object:
    return decode_packet_messages(data, 65_507)[0]


def test_false_suspicion_of_a_live_node_is_refuted() -> None:
    w = World()
    w.cluster(6)
    inject(w, "n1", suspect("n4", 0, "n1"))
    assert w.state("n1", "n4") is SUSPECT
    w.run_until_true(w.all_alive, limit_ms=5_000, check_every_ms=10)
    assert w.nodes["n4"].stats["refutes"] == 1
    # Confirmation probes tell n4 within a few ms, so its refutation may overtake the rumour:
    # members that never held it suspect learn incarnation 1 by gossip a moment later.
    w.run_for(2_000)
    assert all(w.member(o, "n4").incarnation == 1 for o in w.up())  # type: ignore[union-attr]
    w.run_for(30_000)
    assert all(w.state(o, "n4") is ALIVE for o in w.up())


def test_indirect_probe_saves_a_member_behind_one_bad_link() -> None:
    w = World()
    w.cluster(6)
    w.drop = lambda s, d: {s, d} == {"n1", "n4"}
    w.run_for(30_000)
    assert w.nodes["n1"].stats["probes.ok_indirect"] >= 1
    assert all(state is not DEAD for _, _, _, state in w.changes("n4"))


def test_buddy_system_suspect_refutes_on_the_probe_itself() -> None:
    w = World()
    w.cluster(4)
    # n1 suspects n2, and of n1's packets only its pings to n2 get through: the suspicion can
    # reach n2 only as the flag on n1's probe.
    w.drop_packet = lambda s, d, data: (
        s == "n1" and (d != "n2" or not isinstance(first_message(data), Ping))
    )
    inject(w, "n1", suspect("n2", 0, "n1"))
    target = w.nodes["n2"]
    w.run_until_true(lambda: target.stats["refutes"] > 0, limit_ms=10_000, check_every_ms=10)
    assert target.stats["refutes.buddy"] == 1
    w.drop_packet = None
    # n1 was mute for seconds, so depending on the seed the others may have declared it dead
    # meanwhile; the cluster must still end whole (at worst via push-pull or reconnect).
    w.run_until_true(w.all_alive, limit_ms=90_000)


def test_lost_nacks_raise_awareness_of_a_node_with_a_bad_link() -> None:
    w = World()
    w.cluster(6)
    w.crash("n5")
    # n0's inbound link loses everything except the nacks never arrive either: n0 is "sick".
    w.drop = lambda s, d: d == "n0"
    w.run_for(5_000)
    assert w.nodes["n0"].health_score >= 1
    w.heal()


def test_reaping_forgets_dead_members_after_dead_reap_ms() -> None:
    cfg = SwimConfig.lan(dead_reap_ms=40_000, reconnect_timeout_ms=20_000)
    w = World(config=cfg)
    w.cluster(5)
    w.crash("n2")
    w.run_until_true(lambda: w.all_see("n2", DEAD), limit_ms=60_000)
    assert w.reaped() == []
    w.run_for(41_000)
    assert sorted(w.reaped()) == [(o, "n2") for o in sorted(w.up())]
    assert all(w.member(o, "n2") is None for o in w.up())


def test_reconnect_heals_a_partition_where_each_half_declared_the_other_dead() -> None:
    # No periodic push-pull and a short gossip-to-the-dead window: only reconnect can heal this.
    cfg = SwimConfig.lan(
        push_pull_interval_ms=0, gossip_to_dead_ms=2_000, reconnect_interval_ms=5_000
    )
    w = World(config=cfg)
    w.cluster(6)
    left, right = {"n0", "n1", "n2"}, {"n3", "n4", "n5"}
    w.partition(left, right)
    w.run_until_true(
        lambda: (
            all(w.state(a, b) is DEAD for a in left for b in right)
            and all(w.state(b, a) is DEAD for a in left for b in right)
        ),
        limit_ms=120_000,
    )
    w.run_for(10_000)  # well past gossip-to-the-dead
    w.heal()
    took = w.run_until_true(w.all_alive, limit_ms=120_000)
    assert sum(n.stats["reconnect.attempts"] for n in w.nodes.values()) >= 1
    assert took < 120_000


def test_restart_with_higher_incarnation_rejoins_alive() -> None:
    w = World()
    w.cluster(5)
    w.crash("n3")
    w.run_until_true(lambda: w.all_see("n3", DEAD), limit_ms=60_000)
    w.restart("n3", incarnation=1_000, join="n0")  # per-boot epoch
    w.run_until_true(w.all_alive, limit_ms=20_000)
    assert all(w.member(o, "n3").incarnation >= 1_000 for o in w.up())  # type: ignore[union-attr]


def test_restart_with_same_incarnation_refutes_its_own_death() -> None:
    w = World()
    w.cluster(5)
    w.crash("n3")
    w.run_until_true(lambda: w.all_see("n3", DEAD), limit_ms=60_000)
    w.restart("n3", incarnation=0, join="n0")
    w.run_until_true(w.all_alive, limit_ms=30_000)


def test_leave_is_seen_as_left_not_dead() -> None:
    w = World()
    w.cluster(6)
    w.apply("n2", w.nodes["n2"].leave(w.now_ms))
    w.run_for(1_000)
    w.crash("n2")  # the process exits after flushing
    w.run_until_true(lambda: w.all_see("n2", LEFT), limit_ms=10_000)
    w.run_for(30_000)
    assert w.all_see("n2", LEFT)


def test_meta_update_spreads() -> None:
    w = World()
    w.cluster(6)
    w.apply("n4", w.nodes["n4"].update_meta(b'{"svc":"web"}', w.now_ms))

    def spread() -> bool:
        return all(getattr(w.member(o, "n4"), "meta", None) == b'{"svc":"web"}' for o in w.up())

    w.run_until_true(spread, limit_ms=5_000)
    assert any(
        isinstance(ev.effect, MemberChanged)
        and ev.node == "n0"
        and ev.effect.member.name == "n4"
        and ev.effect.member.meta
        for ev in w.log
    )


def test_broadcast_user_payload_reaches_everyone_once() -> None:
    w = World()
    w.cluster(10)
    w.nodes["n3"].queue_broadcast(b"config-delta-7", w.now_ms)
    w.run_for(10_000)
    for name in w.up():
        got = w.user_messages.get(name, [])
        assert got.count(b"config-delta-7") == (0 if name == "n3" else 1), name


def test_direct_user_message_reaches_fanout_members() -> None:
    w = World()
    w.cluster(10)
    w.apply("n1", w.nodes["n1"].send_user_message(b"hi", 3, w.now_ms))
    w.run_for(100)
    assert sum(1 for got in w.user_messages.values() if b"hi" in got) == 3


def test_lossy_network_no_false_deaths() -> None:
    import random as _random

    rnd = _random.Random(99)
    w = World()
    w.cluster(10)
    w.drop = lambda s, d: rnd.random() < 0.05  # 5% loss everywhere
    w.run_for(60_000)
    assert all(w.state(o, n) is not DEAD for o in w.up() for n in w.up())


def test_same_seed_same_trace() -> None:
    def trace(seed: int) -> list[tuple[int, str, str, MemberState]]:
        w = World(seed=seed)
        w.cluster(6)
        w.crash("n2")
        w.run_for(30_000)
        return w.changes()

    assert trace(5) == trace(5)


def test_three_nodes_confirm_each_others_suspicion_of_a_dead_member() -> None:
    # In a 3-node cluster the survivors are each other's only confirmation. Each must hear the
    # other's accusation: a suspicion spent on packets to the dead member (transmit limit 2), or
    # replaced in the queue by the other's relayed accusation, left both at the 20 s maximum.
    cfg = SwimConfig.local()
    lo, hi = suspicion_bounds_ms(
        cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, 3, cfg.probe_interval_ms
    )
    worst = 0
    for seed in range(1, 31):
        w = World(config=cfg, seed=seed)
        w.cluster(3)
        w.run_for(3_000 + seed * 37)
        w.crash("n2")
        took = w.run_until_true(lambda w=w: w.all_see("n2", DEAD), limit_ms=60_000)
        worst = max(worst, took)
    assert worst < lo + 4 * cfg.probe_interval_ms < hi, (worst, lo, hi)
