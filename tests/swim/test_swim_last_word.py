"""Last-word probes capped (issue 19): who takes the last word at once, who waits the grace, and
what ends the wait. One node by hand in a 102-member cluster, with a seeded rng whose dice we
set (``Dice``), so every branch is taken on purpose; one statistical check of the draw.
"""

from __future__ import annotations

import random

import pytest
from swim_auth import alive, authority, dead, suspect

from gossipmesh.errors import UsageError
from gossipmesh.ids import Address
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, SendPacket, SetTimer
from gossipmesh.swim.member import MemberState
from gossipmesh.swim.messages import Message, Ping, decode_packet_messages, encode
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.timers import TimerKind
from gossipmesh.wire import encode_packet

A = Address("10.0.0.1", 7946)
PEERS = 101  # 102 live members: 100 could confirm, so a draw succeeds with p = 6 / 100
SUSPECT_NAME = "p3"


class Dice(random.Random):
    """A seeded rng whose ``random()`` (the draws for confirmation and last-word probes) says
    what the test sets; shuffles and samples still come from the seeded stream."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.roll: float | None = None

    def random(self) -> float:
        return super().random() if self.roll is None else self.roll


def peer(i: int) -> Address:
    return Address(f"10.0.1.{i}", 7946)


def packet(*msgs: Message) -> bytes:
    return encode_packet([encode(m) for m in msgs])


def pings_to(effects: list[Effect], target: str) -> list[Ping]:
    return [
        m
        for e in effects
        if isinstance(e, SendPacket)
        for m in decode_packet_messages(e.data, 65_507)
        if isinstance(m, Ping) and m.target == target
    ]


def timers(effects: list[Effect], kind: TimerKind) -> list[SetTimer]:
    return [e for e in effects if isinstance(e, SetTimer) and e.timer.kind is kind]  # type: ignore[attr-defined]


def big_node(rng: random.Random, config: SwimConfig | None = None) -> SwimNode:
    node = SwimNode("a", A, config or SwimConfig.lan(), rng, 0, authority=authority("a"))
    for i in range(PEERS):  # two claims with certificates fill a packet: one at a time
        node.handle_packet(peer(i), packet(alive(f"p{i}", 0, peer(i))), 0)
    assert node.live_count == PEERS + 1
    return node


def state(node: SwimNode, name: str) -> MemberState:
    m = node.member(name)
    assert m is not None
    return m.state


def hear_confirmed_suspicion(node: SwimNode) -> SetTimer:
    """p0 accuses p3 and p1, p2, p4 confirm (K = 3): we hold only their word. Returns the timer
    of the deadline they bring (the suspicion minimum after the first accusation)."""
    out = node.handle_packet(peer(0), packet(suspect(SUSPECT_NAME, 0, "p0")), 1000)
    for i in (1, 2, 4):
        out += node.handle_packet(peer(i), packet(suspect(SUSPECT_NAME, 0, f"p{i}")), 1100)
    assert node.stats["confirmations"] == 3
    assert pings_to(out, SUSPECT_NAME) == []  # the dice said no confirmation probe
    return min(timers(out, TimerKind.SUSPICION), key=lambda e: e.at_ms)


def defer_last_word(node: SwimNode, rng: Dice) -> tuple[SetTimer, SetTimer]:
    """The deadline comes and the draw says wait: returns (deadline timer, grace timer)."""
    rng.roll = 0.99  # 0.99 * 100 >= 6: neither a confirmation probe nor a last word at once
    deadline = hear_confirmed_suspicion(node)
    out = node.handle_timer(deadline.timer, deadline.at_ms)
    assert pings_to(out, SUSPECT_NAME) == []
    assert state(node, SUSPECT_NAME) is MemberState.SUSPECT
    assert node.stats["last_word.deferred"] == 1 and node.stats.get("confirm_probes.final", 0) == 0
    (grace,) = timers(out, TimerKind.SUSPICION)
    assert grace.at_ms == deadline.at_ms + node.config.last_word_grace_ms
    return deadline, grace


def test_a_member_that_loses_the_draw_waits_the_grace_then_takes_its_last_word() -> None:
    rng = Dice(1)
    node = big_node(rng)
    _, grace = defer_last_word(node, rng)
    # Nobody's verdict came: at the end of the grace we probe, carrying the suspicion.
    out = node.handle_timer(grace.timer, grace.at_ms)
    (final,) = pings_to(out, SUSPECT_NAME)
    assert final.suspect_incarnation == 0
    assert node.stats["confirm_probes.final"] == 1 and node.stats["last_word.after_grace"] == 1
    # ...and only its silence kills it, as without the cap.
    (end,) = timers(out, TimerKind.CONFIRM_END)
    node.handle_timer(end.timer, end.at_ms)
    assert state(node, SUSPECT_NAME) is MemberState.DEAD


def test_a_member_that_wins_the_draw_takes_its_last_word_at_once() -> None:
    rng = Dice(2)
    node = big_node(rng)
    rng.roll = 0.99
    deadline = hear_confirmed_suspicion(node)
    rng.roll = 0.05  # 0.05 * 100 < 6
    out = node.handle_timer(deadline.timer, deadline.at_ms)
    assert len(pings_to(out, SUSPECT_NAME)) == 1
    assert node.stats["confirm_probes.final"] == 1 and node.stats.get("last_word.deferred", 0) == 0


def test_the_verdict_of_others_ends_the_wait_without_a_probe() -> None:
    # "dead" from a member whose last word failed: we take it, and the grace timer is stale.
    rng = Dice(3)
    node = big_node(rng)
    _, grace = defer_last_word(node, rng)
    node.handle_packet(peer(1), packet(dead(SUSPECT_NAME, 0, "p1")), grace.at_ms - 100)
    assert state(node, SUSPECT_NAME) is MemberState.DEAD
    out = node.handle_timer(grace.timer, grace.at_ms)
    assert pings_to(out, SUSPECT_NAME) == [] and node.stats.get("confirm_probes.final", 0) == 0


def test_a_refutation_heard_in_the_grace_ends_the_suspicion_without_a_probe() -> None:
    # The suspect answered someone else's last word (it carried the suspicion) and refuted.
    rng = Dice(4)
    node = big_node(rng)
    _, grace = defer_last_word(node, rng)
    node.handle_packet(peer(3), packet(alive(SUSPECT_NAME, 1, peer(3))), grace.at_ms - 100)
    assert state(node, SUSPECT_NAME) is MemberState.ALIVE
    out = node.handle_timer(grace.timer, grace.at_ms)
    assert pings_to(out, SUSPECT_NAME) == [] and node.stats.get("confirm_probes.final", 0) == 0


def test_a_member_that_failed_to_reach_the_suspect_itself_does_not_draw() -> None:
    # Our own confirmation probe failed, but K is not reached yet: our view is first-hand and
    # there are only about fanout of us, so we take the last word at once whatever the dice.
    rng = Dice(5)
    node = big_node(rng)
    rng.roll = 0.0  # probe on hearing the suspicion
    out = node.handle_packet(peer(0), packet(suspect(SUSPECT_NAME, 0, "p0")), 1000)
    assert len(pings_to(out, SUSPECT_NAME)) == 1
    (end,) = timers(out, TimerKind.CONFIRM_END)
    out = node.handle_timer(end.timer, end.at_ms)  # silent: we accuse it too (1 confirmation)
    rng.roll = 0.99
    (deadline,) = timers(out, TimerKind.SUSPICION)
    out = node.handle_timer(deadline.timer, deadline.at_ms)
    assert len(pings_to(out, SUSPECT_NAME)) == 1
    assert node.stats["confirm_probes.final"] == 1 and node.stats.get("last_word.deferred", 0) == 0


def test_a_member_whose_health_says_it_misses_packets_takes_its_last_word_at_once() -> None:
    # Having to refute an accusation of ourselves worsens our Lifeguard health: we are the one
    # losing packets, so others' verdict may never reach us either. We do not wait for it.
    rng = Dice(8)
    node = big_node(rng)
    node.handle_packet(peer(5), packet(suspect("a", 0, "p5")), 500)
    assert node.health_score > 0
    rng.roll = 0.99  # the draw would say wait
    deadline = hear_confirmed_suspicion(node)
    out = node.handle_timer(deadline.timer, deadline.at_ms)
    assert len(pings_to(out, SUSPECT_NAME)) == 1
    assert node.stats["last_word.unhealthy"] == 1
    assert node.stats.get("last_word.deferred", 0) == 0


def test_grace_zero_is_the_uncapped_behaviour_and_draws_nothing() -> None:
    rng = Dice(6)
    node = big_node(rng, SwimConfig.lan(last_word_grace_ms=0))
    rng.roll = 0.99
    deadline = hear_confirmed_suspicion(node)
    before = rng.getstate()
    out = node.handle_timer(deadline.timer, deadline.at_ms)
    assert len(pings_to(out, SUSPECT_NAME)) == 1  # every member takes its last word at once
    assert rng.getstate() == before  # and rolls no die for it: old runs replay exactly
    assert node.stats.get("last_word.deferred", 0) == 0


def test_about_fanout_of_the_rumour_holders_take_their_last_word_at_once() -> None:
    # Each member that holds only others' word draws with p = fanout / (live - 2) = 6 / 100.
    at_once = 0
    seeds = 300
    for seed in range(seeds):
        rng = Dice(seed)
        node = big_node(rng)
        rng.roll = 0.99  # no confirmation probe: hold only the rumour
        deadline = hear_confirmed_suspicion(node)
        rng.roll = None  # the real, seeded draw
        at_once += len(pings_to(node.handle_timer(deadline.timer, deadline.at_ms), "p3"))
    assert 0.03 < at_once / seeds < 0.10, at_once


def test_a_newer_accusation_starts_a_new_suspicion_instead_of_confirming_the_old_one() -> None:
    # We hold p3 suspect at 0 with our own failed probe among the evidence and missed its
    # refutation; accusations at incarnation 1 are about its new life. Counted as confirmations
    # of the old suspicion they ended it at once, with no last word (simulator, 30 % loss).
    rng = Dice(7)
    node = big_node(rng)
    rng.roll = 0.0
    out = node.handle_packet(peer(0), packet(suspect(SUSPECT_NAME, 0, "p0")), 1000)
    (end,) = timers(out, TimerKind.CONFIRM_END)
    node.handle_timer(end.timer, end.at_ms)  # our own accusation: a confirmation at 0
    assert node.stats["confirmations"] == 1
    now = 20_000
    out = []
    for i in (1, 2):
        out += node.handle_packet(peer(i), packet(suspect(SUSPECT_NAME, 1, f"p{i}")), now)
    m = node.member(SUSPECT_NAME)
    assert m is not None and m.state is MemberState.SUSPECT and m.incarnation == 1
    assert node.stats["confirmations"] == 2  # p2 confirms p1's new suspicion, nothing more
    # A fresh suspicion with one confirmation: its deadline is far off, not due at once.
    due = timers(out, TimerKind.SUSPICION)
    assert due and all(t.at_ms > now + 10_000 for t in due)


def test_last_word_grace_is_checked_and_set_by_the_presets() -> None:
    assert SwimConfig.lan().last_word_grace_ms == 500
    assert SwimConfig.local().last_word_grace_ms == 500
    assert SwimConfig.wan().last_word_grace_ms == 2500
    with pytest.raises(UsageError, match="last_word_grace_ms"):
        SwimConfig.lan(last_word_grace_ms=-1)
