"""One SwimNode driven by hand: each test feeds packets and timers and reads the effects."""

from __future__ import annotations

import random

import pytest
from swim_auth import alive, authority, dead, shapes, suspect

from gossipmesh.errors import LimitExceededError
from gossipmesh.ids import Address
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import (
    Effect,
    MemberChanged,
    SendPacket,
    SetTimer,
    StartPushPull,
    UserMessage,
)
from gossipmesh.swim.member import MAX_META_BYTES, MemberState
from gossipmesh.swim.messages import (
    Ack,
    Alive,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    User,
    decode_packet_messages,
    encode,
)
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.timers import Timer, TimerKind
from gossipmesh.wire import encode_packet

A = Address("10.0.0.1", 7946)


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7946)


def packet(*msgs: Message) -> bytes:
    return encode_packet([encode(m) for m in msgs])


def sent(effects: list[Effect]) -> list[tuple[Address, list[Message]]]:
    return [
        (e.to, decode_packet_messages(e.data, 65_507)) for e in effects if isinstance(e, SendPacket)
    ]


def timers(effects: list[Effect], kind: TimerKind) -> list[SetTimer]:
    return [
        e
        for e in effects
        if isinstance(e, SetTimer) and isinstance(e.timer, Timer) and e.timer.kind is kind
    ]


def make_node(n_peers: int = 4, config: SwimConfig | None = None) -> SwimNode:
    node = SwimNode(
        "a", A, config or SwimConfig.lan(), random.Random(7), 0, authority=authority("a")
    )
    node.start(0)
    for i in range(n_peers):
        node.handle_packet(addr(i + 2), packet(alive(f"p{i}", 0, addr(i + 2))), 0)
    return node


def fire(node: SwimNode, effects: list[Effect], kind: TimerKind) -> tuple[list[Effect], int]:
    (st,) = timers(effects, kind)
    return node.handle_timer(st.timer, st.at_ms), st.at_ms


def probe_timer(node: SwimNode) -> SetTimer:
    (st,) = timers(node.start(0), TimerKind.PROBE)  # re-arming makes earlier probe timers stale
    return st


def start_probe(node: SwimNode, now: int = 1000) -> tuple[list[Effect], Address, Ping]:
    eff = node.handle_timer(probe_timer(node).timer, now)
    pings = [(to, m) for to, msgs in sent(eff) for m in msgs if isinstance(m, Ping)]
    assert len(pings) == 1
    return eff, pings[0][0], pings[0][1]


def test_ack_ends_probe_and_lowers_awareness() -> None:
    node = make_node()
    node._state.awareness.apply_delta(2)
    eff, to, ping = start_probe(node)
    node.handle_packet(to, packet(Ack(ping.seq)), 1010)
    assert node.health_score == 1
    assert node.stats["probes.ok"] == 1
    end, at = fire(node, eff, TimerKind.PROBE_END)
    assert not any(isinstance(e, MemberChanged) for e in end)  # a stale end: nothing happens
    assert all(m.state is MemberState.ALIVE for m in node.members())


def test_failed_probe_asks_relays_then_suspects_and_missed_nacks_raise_awareness() -> None:
    node = make_node(n_peers=5)
    eff, to, ping = start_probe(node)
    eff2, _ = fire(node, eff, TimerKind.PROBE_TIMEOUT)
    reqs = [(dst, m) for dst, msgs in sent(eff2) for m in msgs if isinstance(m, PingReq)]
    assert len(reqs) == 3  # indirect_checks
    assert all(m.target == ping.target and m.seq == ping.seq for _, m in reqs)
    assert to not in [dst for dst, _ in reqs]
    # One relay nacks: it is alive and could not reach the target. Two stay silent.
    node.handle_packet(reqs[0][0], packet(Nack(ping.seq)), 1600)
    end, _ = fire(node, eff, TimerKind.PROBE_END)
    assert node.health_score == 2  # +1 per missed nack
    changes = [e for e in end if isinstance(e, MemberChanged)]
    assert [(c.member.name, c.member.state) for c in changes] == [
        (ping.target, MemberState.SUSPECT)
    ]
    assert timers(end, TimerKind.SUSPICION)


def test_all_nacks_received_means_the_target_not_us() -> None:
    node = make_node(n_peers=5)
    eff, _, ping = start_probe(node)
    eff2, _ = fire(node, eff, TimerKind.PROBE_TIMEOUT)
    for dst, _msgs in sent(eff2):
        node.handle_packet(dst, packet(Nack(ping.seq)), 1600)
    fire(node, eff, TimerKind.PROBE_END)
    assert node.health_score == 0
    assert node.member(ping.target).state is MemberState.SUSPECT  # type: ignore[union-attr]


def test_failed_probe_without_relays_counts_one() -> None:
    node = make_node(n_peers=1)
    eff, _, _ = start_probe(node)
    fire(node, eff, TimerKind.PROBE_TIMEOUT)
    fire(node, eff, TimerKind.PROBE_END)
    assert node.health_score == 1


def test_indirect_ack_completes_probe_without_lowering_awareness() -> None:
    node = make_node()
    node._state.awareness.apply_delta(1)
    eff, _, ping = start_probe(node)
    eff2, _ = fire(node, eff, TimerKind.PROBE_TIMEOUT)
    relay = sent(eff2)[0][0]
    node.handle_packet(relay, packet(Ack(ping.seq)), 1700)
    assert node.stats["probes.ok_indirect"] == 1
    fire(node, eff, TimerKind.PROBE_END)
    assert node.health_score == 1
    assert all(m.state is MemberState.ALIVE for m in node.members())


def test_awareness_scales_probe_interval_and_timeout() -> None:
    cfg = SwimConfig.lan()
    node = make_node(config=cfg)
    node._state.awareness.apply_delta(3)
    eff, _, _ = start_probe(node, now=1000)
    assert [t.at_ms for t in timers(eff, TimerKind.PROBE)] == [1000 + 4 * cfg.probe_interval_ms]
    assert [t.at_ms for t in timers(eff, TimerKind.PROBE_TIMEOUT)] == [
        1000 + 4 * cfg.probe_timeout_ms
    ]
    assert [t.at_ms for t in timers(eff, TimerKind.PROBE_END)] == [1000 + 4 * cfg.probe_interval_ms]


def test_relay_forwards_ack_or_sends_nack() -> None:
    node = make_node()
    origin, target = addr(2), addr(9)
    eff = node.handle_packet(origin, packet(PingReq(77, "t", target, None)), 0)
    ((to, msgs),) = sent(eff)
    ping = msgs[0]
    assert to == target and isinstance(ping, Ping) and ping.target == "t"
    back = node.handle_packet(target, packet(Ack(ping.seq)), 5)
    ((to, msgs),) = sent(back)
    assert to == origin and msgs[0] == Ack(77)
    # A second relay request that the target never answers ends in a nack to the origin.
    eff = node.handle_packet(origin, packet(PingReq(78, "t", target, None)), 10)
    nack_eff, _ = fire(node, eff, TimerKind.INDIRECT)
    assert sent(nack_eff)[0][0] == origin
    assert Nack(78) in sent(nack_eff)[0][1]


def test_ping_for_another_name_is_not_acked() -> None:
    node = make_node()
    assert sent(node.handle_packet(addr(2), packet(Ping(1, "someone-else")), 0)) == []
    assert node.stats["drop.ping.wrong_target"] == 1


def test_buddy_ping_to_a_suspect_is_refuted_in_the_ack() -> None:
    node = make_node()
    eff = node.handle_packet(addr(2), packet(Ping(5, "a", suspect_incarnation=0)), 0)
    ((to, msgs),) = sent(eff)
    assert to == addr(2)
    assert msgs[0] == Ack(5)
    assert ("alive", "a", 1, A, b"") in shapes(msgs)  # the refutation rides the ack
    assert node.incarnation == 1
    assert node.stats["refutes"] == 1
    assert node.health_score == 1  # having to refute is a hint that we are slow


def test_an_ack_to_a_member_we_suspect_or_hold_dead_tells_it_so() -> None:
    node = make_node()
    node.handle_packet(addr(3), packet(suspect("p0", 0, "p1")), 0)
    assert node.member("p0").state is MemberState.SUSPECT  # type: ignore[union-attr]
    eff = node.handle_packet(addr(2), packet(Ping(7, "a", None, "p0")), 10)
    ((to, msgs),) = sent(eff)
    assert to == addr(2)
    assert msgs[0] == Ack(7) and ("suspect", "p0", 0, "a") in shapes(msgs)
    assert node.stats["suspicions.told"] == 1
    # One we hold dead is told so (it refutes and comes back, however long ago it died).
    node.handle_packet(addr(3), packet(dead("p1", 0, "p3")), 20)
    ((_, msgs),) = sent(node.handle_packet(addr(3), packet(Ping(8, "a", None, "p1")), 30))
    assert msgs[0] == Ack(8) and ("dead", "p1", 0, "a", False) in shapes(msgs)
    assert node.stats["deaths.told"] == 1
    # A prober we do not suspect, or one that does not name itself, gets a plain ack.
    for ping in (Ping(8, "a", None, "p2"), Ping(9, "a")):
        ((_, msgs),) = sent(node.handle_packet(addr(4), packet(ping), 20))
        assert not any(isinstance(m, Suspect) and m.source == "a" for m in msgs)


def test_suspect_rumour_about_self_is_refuted_with_higher_incarnation() -> None:
    node = make_node()
    node.handle_packet(addr(2), packet(suspect("a", 1, "p0")), 0)
    assert node.incarnation == 2
    node.handle_packet(addr(2), packet(dead("a", 3, "p0")), 0)
    assert node.incarnation == 4
    assert node.local_member().state is MemberState.ALIVE
    node.handle_packet(addr(2), packet(suspect("a", 3, "p0")), 0)  # old news: ignored
    assert node.incarnation == 4


def test_a_stale_accusation_about_self_gossips_our_incarnation_again() -> None:
    node = make_node()
    node.handle_packet(addr(2), packet(suspect("a", 1, "p0")), 0)
    assert node.incarnation == 2
    while len(node._state.broadcasts):  # the refutation was spent, say into a partition
        node._state.broadcasts.get(10_000, 1)
    score = node.health_score
    node.handle_packet(addr(3), packet(dead("a", 1, "p1")), 0)  # someone never heard it
    assert node.incarnation == 2  # nothing new to out-bid ...
    assert node.health_score == score  # ... and no fresh evidence against us
    assert node.stats["refutes.reasserted"] == 1
    eff, _, _ = start_probe(node)
    carried = [m for _, msgs in sent(eff) for m in msgs if isinstance(m, Alive)]
    assert ("alive", "a", 2, A, b"") in shapes(carried)  # ... but the refutation travels again


def test_confirmations_shrink_the_suspicion_deadline() -> None:
    # memberlist's numbers: n = 10 live: min 4 s, max 24 s, k = 2, no confirmation probes.
    node = make_node(n_peers=9, config=SwimConfig.memberlist("lan"))
    eff = node.handle_packet(addr(2), packet(suspect("p5", 0, "p0")), 1000)
    (st,) = timers(eff, TimerKind.SUSPICION)
    assert st.at_ms == 1000 + 24_000
    eff = node.handle_packet(addr(3), packet(suspect("p5", 0, "p0")), 2000)  # same accuser again
    assert timers(eff, TimerKind.SUSPICION) == []
    eff = node.handle_packet(addr(3), packet(suspect("p5", 0, "p1")), 2000)
    (st1,) = timers(eff, TimerKind.SUSPICION)
    assert st1.at_ms == 1000 + 11_381  # 24 - log(2)/log(3) * 20 s, floored to the ms
    eff = node.handle_packet(addr(4), packet(suspect("p5", 0, "p2")), 3000)
    (st2,) = timers(eff, TimerKind.SUSPICION)
    assert st2.at_ms == 1000 + 4_000
    # An early firing of the long timer (a runtime may be early-ish) does not kill yet...
    assert node.handle_timer(st.timer, 4_999) == []
    assert node.member("p5").state is MemberState.SUSPECT  # type: ignore[union-attr]
    # ...the shortest deadline does.
    out = node.handle_timer(st2.timer, st2.at_ms)
    assert node.member("p5").state is MemberState.DEAD  # type: ignore[union-attr]
    assert any(isinstance(e, MemberChanged) and e.member.state is MemberState.DEAD for e in out)
    assert node.handle_timer(st.timer, st.at_ms) == []  # the late long timer is stale now


def test_alive_with_higher_incarnation_clears_suspicion_and_revives_dead() -> None:
    node = make_node()
    eff = node.handle_packet(addr(2), packet(suspect("p1", 0, "p0")), 0)
    (st,) = timers(eff, TimerKind.SUSPICION)
    node.handle_packet(addr(3), packet(alive("p1", 1, addr(3))), 10)
    assert node.member("p1").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert node.handle_timer(st.timer, st.at_ms) == []  # stale: the suspicion is gone
    node.handle_packet(addr(3), packet(dead("p1", 1, "p0")), 20)
    assert node.member("p1").state is MemberState.DEAD  # type: ignore[union-attr]
    node.handle_packet(addr(3), packet(alive("p1", 1, addr(3))), 30)  # same incarnation: no
    assert node.member("p1").state is MemberState.DEAD  # type: ignore[union-attr]
    node.handle_packet(addr(3), packet(alive("p1", 1000, addr(3))), 40)  # new boot epoch
    m = node.member("p1")
    assert m is not None and m.state is MemberState.ALIVE and m.incarnation == 1000


def test_left_needs_the_member_itself() -> None:
    node = make_node()
    node.handle_packet(addr(2), packet(dead("p0", 0, "p0", left=True)), 0)
    node.handle_packet(addr(2), packet(dead("p1", 0, "p0", left=True)), 0)  # not its own word
    assert node.member("p0").state is MemberState.LEFT  # type: ignore[union-attr]
    assert node.member("p1").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert node.stats["reject.leave_not_own"] == 1


def test_reap_timer_forgets_after_dead_reap_ms() -> None:
    cfg = SwimConfig.lan(dead_reap_ms=60_000, reconnect_timeout_ms=30_000)
    node = make_node(config=cfg)
    eff = node.handle_packet(addr(2), packet(dead("p0", 0, "p1")), 100)
    (st,) = timers(eff, TimerKind.REAP)
    assert st.at_ms == 60_100
    out = node.handle_timer(st.timer, st.at_ms)
    assert node.member("p0") is None
    assert [type(e).__name__ for e in out] == ["MemberReaped"]


def test_update_meta_bumps_incarnation_and_is_bounded() -> None:
    node = make_node()
    out = node.update_meta(b"svc=web", 5)
    assert node.incarnation == 1
    assert node.local_member().meta == b"svc=web"
    assert any(isinstance(e, MemberChanged) and e.member.name == "a" for e in out)
    with pytest.raises(LimitExceededError):
        node.update_meta(b"x" * (MAX_META_BYTES + 1), 6)
    assert node.local_member().meta == b"svc=web"


def test_user_messages_are_delivered_once_and_relayed() -> None:
    node = make_node()
    p = packet(User(b"delta-1", relay=True))
    out = node.handle_packet(addr(2), p, 0)
    assert [e for e in out if isinstance(e, UserMessage)] == [UserMessage(addr(2), b"delta-1")]
    assert node.handle_packet(addr(3), p, 1) == []
    assert node.stats["user.duplicate"] == 1
    assert node.broadcast_queue_len >= 1  # re-gossiped


def test_gossiped_copy_is_relayed_even_after_a_direct_copy_was_delivered() -> None:
    # An eager push (direct, not relayed) often arrives before the gossip of the same payload.
    # The gossip must still travel on, or the members the eager push missed never hear it.
    node = make_node()
    before = node.broadcast_queue_len
    out = node.handle_packet(addr(2), packet(User(b"delta-2", relay=False)), 0)
    assert [e for e in out if isinstance(e, UserMessage)] == [UserMessage(addr(2), b"delta-2")]
    assert node.broadcast_queue_len == before  # a direct copy is not relayed
    out = node.handle_packet(addr(3), packet(User(b"delta-2", relay=True)), 1)
    assert not [e for e in out if isinstance(e, UserMessage)]  # delivered once only
    assert node.broadcast_queue_len == before + 1
    assert node.stats["user.relayed_late"] == 1
    node.handle_packet(addr(4), packet(User(b"delta-2", relay=True)), 2)
    assert node.broadcast_queue_len == before + 1  # relayed once only
    assert node.stats["user.duplicate"] == 1


def test_user_dedupe_cache_is_bounded() -> None:
    node = make_node(config=SwimConfig.lan(user_dedupe_max=16))
    for i in range(100):
        node.handle_packet(addr(2), packet(User(b"m%d" % i, relay=False)), i)

    def delivered_again(i: int) -> bool:
        out = node.handle_packet(addr(3), packet(User(b"m%d" % i, relay=False)), 200)
        return any(isinstance(e, UserMessage) for e in out)

    # The 16 most recent payloads are remembered (duplicates); the 17th most recent, and so
    # every older one, has been forgotten, so it is delivered again.
    assert not delivered_again(84) and not delivered_again(99)
    assert delivered_again(83)


def test_send_user_message_goes_direct_and_oversize_is_refused() -> None:
    node = make_node(n_peers=6)
    out = node.send_user_message(b"hello", 3, 0)
    dsts = sent(out)
    assert len({d for d, _ in dsts}) == 3
    assert all(User(b"hello", relay=False) in msgs for _, msgs in dsts)
    with pytest.raises(LimitExceededError):
        node.send_user_message(b"x" * 2000, 1, 0)
    with pytest.raises(LimitExceededError):
        node.queue_broadcast(b"x" * 2000, 0)


def test_join_starts_push_pull_per_seed() -> None:
    node = SwimNode("a", A, SwimConfig.lan(), random.Random(1), 0, authority=authority("a"))
    out = node.join([addr(2), A, addr(3)], 0)
    assert out == [StartPushPull(addr(2), True), StartPushPull(addr(3), True)]


def test_push_pull_merges_remote_dead_as_suspect_and_refutes_about_self() -> None:
    node = make_node()
    other = SwimNode(
        "p0", addr(2), SwimConfig.lan(), random.Random(2), 0, authority=authority("p0")
    )
    other.handle_packet(A, packet(alive("p1", 0, addr(3)), alive("a", 0, A)), 0)
    other.handle_packet(A, packet(dead("p1", 0, "a"), dead("a", 0, "p1")), 0)
    reply, _ = other.handle_push_pull_request(A, node.push_pull_payload(False), 10)
    node.handle_push_pull_reply(addr(2), reply, 10)
    assert node.member("p1").state is MemberState.SUSPECT  # type: ignore[union-attr]
    assert node.incarnation == 1  # told it was dead: refuted
    # The peer learned our refutation in the next exchange.
    reply2, _ = other.handle_push_pull_request(A, node.push_pull_payload(False), 20)
    assert other.member("a").state is MemberState.ALIVE  # type: ignore[union-attr]


def test_bad_push_pull_is_dropped_and_counted() -> None:
    node = make_node()
    before = node.members()
    reply, eff = node.handle_push_pull_request(addr(2), b"\x01\xff\xff", 0)
    assert reply == b"" and eff == []
    assert node.handle_push_pull_reply(addr(2), b"garbage", 0) == []
    assert node.members() == before
    assert sum(v for k, v in node.stats.items() if k.startswith("drop.push_pull.")) == 2


def test_leave_announces_left_and_stops_probing() -> None:
    node = make_node()
    out = node.leave(0)
    assert node.local_member().state is MemberState.LEFT
    dsts = sent(out)
    assert dsts and all(("dead", "a", 0, "a", True) in shapes(msgs) for _, msgs in dsts)
    eff = node.handle_timer(probe_timer(node).timer, 1000)
    assert not [m for _, msgs in sent(eff) for m in msgs if isinstance(m, Ping)]
    node.handle_packet(addr(2), packet(suspect("a", 0, "p0")), 0)
    assert node.incarnation == 0  # a leaving node does not fight rumours


def test_stale_and_foreign_timers_are_ignored() -> None:
    node = make_node()
    old = probe_timer(node)
    probe_timer(node)  # re-arm: `old` is now stale
    assert node.handle_timer(old.timer, 5000) == []
    assert node.handle_timer("not a timer", 5000) == []
    assert node.handle_timer(Timer(TimerKind.SUSPICION, 999, "p0", 0), 5000) == []
    assert node.stats["timers.stale"] >= 2
