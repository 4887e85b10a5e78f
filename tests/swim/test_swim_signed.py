"""Signed membership (DESIGN-11 D3): a captured member can speak only for itself.

"m" is the captured node: a real member with a valid certificate and the gossip key, crafting
messages with the real codec. Every forged claim must be refused, counted, and change nothing.
"""

from __future__ import annotations

import random

import pytest
from swim_auth import IDS, alive, authority, dead, suspect

from gossipmesh.errors import LimitExceededError
from gossipmesh.identity import CaCredentials, NodeCredentials, TrustStore
from gossipmesh.identity.membership import MembershipAuthority, VerificationMemo
from gossipmesh.ids import Address
from gossipmesh.swim.authority import AliveClaim
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, MemberChanged, SendPacket, SetTimer, StartPushPull
from gossipmesh.swim.fields import cert_ref
from gossipmesh.swim.member import Member, MemberState, Proof
from gossipmesh.swim.messages import (
    Alive,
    Message,
    Ping,
    Suspect,
    Want,
    decode_packet_messages,
    encode,
)
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.state_codec import PushPull, encode_push_pull
from gossipmesh.swim.timers import Timer, TimerKind
from gossipmesh.wire import encode_packet
from simulations.identity import EPOCH_MS, SimIdentities

A = Address("10.0.0.1", 7946)
M = Address("10.0.0.66", 7946)  # the captured node's address


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7946)


def packet(*msgs: Message) -> bytes:
    return encode_packet([encode(m) for m in msgs])


def make_node(n_peers: int = 4, config: SwimConfig | None = None, name: str = "a") -> SwimNode:
    node = SwimNode(name, A, config or SwimConfig.lan(), random.Random(7), 0,
                    authority=authority(name))  # fmt: skip
    node.start(0)
    for i in range(n_peers):
        node.handle_packet(addr(i + 2), packet(alive(f"p{i}", 0, addr(i + 2))), 0)
    node.handle_packet(M, packet(alive("m", 0, M)), 0)
    assert len(node.members()) == n_peers + 2
    return node


def drain(node: SwimNode, effects: list[Effect], now_ms: int = 0) -> list[Effect]:
    """Fire MERGE timers, as a runtime would, until the push-pull is merged."""
    out: list[Effect] = []
    while True:
        merges = [e for e in effects if isinstance(e, SetTimer)
                  and isinstance(e.timer, Timer) and e.timer.kind is TimerKind.MERGE]  # fmt: skip
        out += [e for e in effects if e not in merges]
        if not merges:
            return out
        effects = node.handle_timer(merges[0].timer, now_ms)


def state(node: SwimNode, name: str) -> MemberState | None:
    m = node.member(name)
    return None if m is None else m.state


# --- nobody speaks for another node -------------------------------------------------------------


def test_a_forged_alive_of_another_member_is_refused_and_counted() -> None:
    node = make_node()
    evil = Address("10.6.6.6", 4143)
    m_auth = authority("m")
    # Under the captured node's own certificate: the certificate is for "m", not "p1".
    claim = Alive("p1", 5, evil, b"", m_auth.certificate, b"\x01" * 64)
    node.handle_packet(M, packet(claim), 10)
    # Under p1's certificate (it is public), signed by m: the signature is not p1's.
    real = alive("p1", 5, evil)
    forged_sig = alive("m", 5, evil).signature
    forged = Alive("p1", 5, evil, b"", real.cert, forged_sig)
    node.handle_packet(M, packet(forged), 20)
    m = node.member("p1")
    assert m is not None and m.incarnation == 0 and m.address == addr(3)
    assert node.stats["reject.cert.wrong_name"] == 1
    assert node.stats["reject.bad_signature"] == 1
    assert node.stats["reject"] == 2


def test_a_member_without_a_valid_certificate_for_exactly_its_name_is_never_added() -> None:
    node = make_node()
    junk = Alive("x1", 0, addr(40), b"", b"\x30" * 400, b"\x02" * 64)
    wrong_name = Alive("x2", 0, addr(41), b"", authority("m").certificate, b"\x03" * 64)
    node.handle_packet(M, packet(junk, wrong_name), 10)
    foreign = SimIdentities("other-cluster").alive("x3", 0, addr(42))
    node.handle_packet(M, packet(foreign), 20)
    # Same cluster name, but a root this cluster does not trust (someone ran `ca init` too).
    rogue_ca = CaCredentials.generate("swim-test", now_ms=EPOCH_MS)
    rogue = NodeCredentials.issue(rogue_ca, "x4", now_ms=EPOCH_MS)
    rogue_auth = MembershipAuthority(rogue, VerificationMemo(TrustStore("swim-test")), lambda: 0)
    sig = rogue_auth.sign_alive(AliveClaim("x4", 0, addr(43), b""))
    node.handle_packet(M, packet(Alive("x4", 0, addr(43), b"", rogue.cert_der, sig)), 30)
    assert {m.name for m in node.members()} == {"a", "m", "p0", "p1", "p2", "p3"}
    assert node.stats["reject.cert.bad_certificate"] == 1
    assert node.stats["reject.cert.wrong_name"] == 1
    assert node.stats["reject.cert.wrong_trust_domain"] == 1
    assert node.stats["reject.cert.unknown_root"] == 1


def test_a_leave_only_the_member_itself_can_announce() -> None:
    node = make_node()
    node.handle_packet(M, packet(dead("p1", 0, "m", left=True)), 10)
    forged = dead("m", 0, "m", left=True)  # m's own leave signature, renamed to p2's
    node.handle_packet(M, packet(type(forged)("p2", 0, "p2", True, forged.signature)), 20)
    assert state(node, "p1") is MemberState.ALIVE and state(node, "p2") is MemberState.ALIVE
    assert node.stats["reject.leave_not_own"] == 1
    assert node.stats["reject.bad_signature"] == 1


# --- no packet can push a member past recovery --------------------------------------------------


def test_an_accusation_beyond_what_the_subject_signed_is_refused() -> None:
    node = make_node()
    node.handle_packet(M, packet(suspect("p1", 2**62, "m"), dead("p2", 2, "m")), 10)
    assert state(node, "p1") is MemberState.ALIVE and state(node, "p2") is MemberState.ALIVE
    assert node.stats["reject.incarnation_bound"] == 2
    # One above what p1 signed is believable (someone may hold a newer claim than we do).
    node.handle_packet(M, packet(suspect("p1", 1, "m")), 20)
    assert state(node, "p1") is MemberState.SUSPECT


def test_an_accusation_of_us_at_2_62_leaves_us_where_we_were() -> None:
    node = make_node()
    node.handle_packet(M, packet(suspect("a", 2**62, "m"), dead("a", 2**62 - 1, "m")), 10)
    assert node.incarnation == 0 and node.stats["refutes"] == 0
    # A buddy ping is not signed: its number is believed up to one above ours, no further.
    node.handle_packet(M, packet(Ping(1, "a", suspect_incarnation=2**62, source="m")), 20)
    assert node.incarnation == 2
    node.handle_packet(M, packet(suspect("a", 2, "m")), 30)  # a checked one still refutes
    assert node.incarnation == 3


def test_accusations_need_a_signature_by_an_accuser_we_know() -> None:
    node = make_node()
    node.handle_packet(M, packet(suspect("p1", 0, "stranger")), 10)  # valid cert, not a member
    s = suspect("p2", 0, "m")
    node.handle_packet(M, packet(Suspect("p2", 0, "p3", s.signature)), 20)  # m's word as p3's
    assert state(node, "p1") is MemberState.ALIVE and state(node, "p2") is MemberState.ALIVE
    assert node.stats["reject.unknown_accuser"] == 1
    assert node.stats["reject.bad_signature"] == 1
    # The captured node can still accuse in its own name: SWIM lets any member suspect.
    node.handle_packet(M, packet(suspect("p2", 0, "m")), 30)
    assert state(node, "p2") is MemberState.SUSPECT


def test_a_node_that_restarts_without_its_data_refutes_above_its_old_signed_claim() -> None:
    old = SwimNode("b", addr(9), SwimConfig.lan(), random.Random(1), 0, incarnation=40,
                   authority=authority("b"))  # fmt: skip
    old.start(0)
    a = make_node()
    a.handle_packet(addr(9), packet(alive("b", 40, addr(9))), 0)
    a.handle_packet(M, packet(suspect("b", 41, "m")), 10)  # held suspect, one above
    # b comes back at a lower incarnation (no data dir, clock behind): its claim is old news.
    new = SwimNode("b", addr(9), SwimConfig.lan(), random.Random(2), 100, incarnation=3,
                   authority=authority("b"))  # fmt: skip
    new.start(100)
    a.handle_packet(addr(9), packet(alive("b", 3, addr(9))), 110)
    assert state(a, "b") is MemberState.SUSPECT
    # It joins: a's state holds its own signed claim at 40 and m's accusation at 41.
    reply, _ = a.handle_push_pull_request(addr(9), new.push_pull_payload(True), 120)
    drain(new, new.handle_push_pull_reply(A, reply, 120), 120)
    assert new.incarnation == 42
    reply, _ = a.handle_push_pull_request(addr(9), new.push_pull_payload(False), 130)
    b = a.member("b")
    assert b is not None and b.state is MemberState.ALIVE and b.incarnation == 42


# --- a flood of invented members costs a bounded amount -----------------------------------------


def invented(name: str, cert: bytes, sig: bytes = b"\x04" * 64) -> Member:
    """A push-pull record of a member that does not exist."""
    return Member(name, addr(7), 0, MemberState.ALIVE, b"", Proof(cert, 0, sig))


def test_a_push_pull_of_20000_invented_members_adds_none_and_is_abandoned_early() -> None:
    node = make_node()
    memo = IDS.memo
    before = memo.chain_checks, memo.signature_checks
    cert = authority("m").certificate  # a valid certificate, for the wrong names
    pp = PushPull(False, tuple(invented(f"inv-{i}", cert) for i in range(20_000)))
    reply, eff = node.handle_push_pull_request(M, encode_push_pull(pp), 10)
    assert reply  # answered like any exchange
    drain(node, eff, 10)
    assert len(node.members()) == 6
    cfg = node.config
    assert node.stats["push_pull.abandoned"] == 1
    assert node.stats["reject.cert.wrong_name"] == cfg.push_pull_reject_max
    # Distinct junk certificates, each a real parse: still only push_pull_reject_max of them.
    junk = PushPull(
        False,
        tuple(invented(f"j-{i}", b"\x30\x82" + i.to_bytes(4, "big") * 100) for i in range(5_000)),
    )
    drain(node, node.handle_push_pull_reply(M, encode_push_pull(junk), 20), 20)
    assert len(node.members()) == 6
    assert node.stats["push_pull.abandoned"] == 2
    assert memo.chain_checks - before[0] <= cfg.push_pull_reject_max + 1
    assert memo.signature_checks == before[1]


def test_a_big_push_pull_is_merged_a_chunk_per_turn() -> None:
    cfg = SwimConfig.lan()
    sender = SwimNode("s", addr(5), cfg, random.Random(3), 0, authority=authority("s"))
    for i in range(300):
        sender.handle_packet(addr(6), packet(alive(f"q{i}", 0, addr(200))), 0)
    node = make_node(n_peers=0)
    reply, eff = node.handle_push_pull_request(addr(5), sender.push_pull_payload(False), 10)
    assert node.merging > 0  # the rest waits for the MERGE timer, due at once
    assert [e.at_ms for e in eff if isinstance(e, SetTimer)] == [10]
    assert len(node.members()) <= 2 + cfg.merge_chunk_verifications
    drain(node, eff, 10)
    assert node.merging == 0
    assert len(node.members()) == 2 + 1 + 300  # a, m, s and its 300


def test_gossip_from_one_source_may_cost_only_so_many_checks() -> None:
    node = make_node(config=SwimConfig.lan(verify_burst=5, verify_rate_per_s=1))
    flood = Address("10.9.9.9", 7946)
    for i in range(10):
        node.handle_packet(flood, packet(alive(f"n{i}", 0, addr(50 + i))), 10)
    assert node.stats["reject.rate_limited"] == 5
    assert len(node.members()) == 6 + 5
    # Another source is unaffected, and the flooder's bucket refills with time.
    node.handle_packet(addr(2), packet(alive("n7", 0, addr(57))), 10)
    node.handle_packet(flood, packet(alive("n8", 0, addr(58))), 2_010)
    assert node.member("n7") is not None and node.member("n8") is not None


# --- certificates as references -----------------------------------------------------------------


def test_a_claim_may_name_a_certificate_we_hold_by_reference() -> None:
    node = make_node()
    full = alive("p1", 3, addr(3))
    compact = Alive("p1", 3, addr(3), b"", cert_ref(full.cert), full.signature)
    node.handle_packet(addr(3), packet(compact), 10)
    assert node.member("p1").incarnation == 3  # type: ignore[union-attr]
    stranger = alive("z", 0, addr(30))
    ref = Alive("z", 0, addr(30), b"", cert_ref(stranger.cert), stranger.signature)
    node.handle_packet(addr(3), packet(ref), 20)
    assert node.member("z") is None and node.stats["reject.unknown_cert"] == 1


# --- revocation ---------------------------------------------------------------------------------


def test_a_revoked_member_is_declared_dead_and_cannot_come_back() -> None:
    from gossipmesh.identity import fingerprint

    ids = SimIdentities("swim-revoke")  # its own trust store: the revocation stays here
    clock = lambda: EPOCH_MS  # noqa: E731
    node = SwimNode("a", A, SwimConfig.lan(), random.Random(1), 0,
                    authority=ids.authority("a", clock))  # fmt: skip
    node.start(0)
    for name, i in (("b", 2), ("c", 3)):
        node.handle_packet(addr(i), packet(ids.alive(name, 0, addr(i))), 0)
    assert node.revalidate(10) == []  # all valid: nothing happens
    ids.trust.revoke(fingerprint(ids.credentials("b").cert_der))
    out = node.revalidate(20)
    assert state(node, "b") is MemberState.DEAD and state(node, "c") is MemberState.ALIVE
    assert node.stats["invalidated.cert.revoked"] == 1
    assert any(isinstance(e, SetTimer) and e.timer.kind is TimerKind.REAP for e in out)  # type: ignore[attr-defined]
    node.handle_packet(addr(2), packet(ids.alive("b", 5, addr(2))), 30)  # it refutes: refused
    node.handle_packet(addr(2), packet(ids.suspect("c", 0, "b")), 40)  # it accuses: refused
    assert state(node, "b") is MemberState.DEAD and state(node, "c") is MemberState.ALIVE
    assert node.stats["reject.cert.revoked"] == 2


# --- packet size --------------------------------------------------------------------------------


def test_our_signed_claim_must_fit_a_packet() -> None:
    big = SimIdentities("swim-test")
    name = "n" * 120
    with pytest.raises(LimitExceededError):
        SwimNode(name, A, SwimConfig.lan(), random.Random(1), 0, meta=b"x" * 512,
                 authority=big.authority(name, lambda: EPOCH_MS))  # fmt: skip
    long = SwimNode("l" * 100, A, SwimConfig.lan(), random.Random(1), 0,
                    authority=big.authority("l" * 100, lambda: EPOCH_MS))  # fmt: skip
    with pytest.raises(LimitExceededError):
        long.update_meta(b"y" * 512, 10)
    assert long.local_member().meta == b"" and long.incarnation == 0  # refused: nothing changed
    long.update_meta(b"z" * 100, 20)
    assert long.local_member().meta == b"z" * 100


def test_a_bad_record_is_one_rejection_and_the_rest_of_the_state_is_merged() -> None:
    from gossipmesh.swim.state_codec import record_to_list
    from gossipmesh.wire import encode_stream_payload

    node = make_node(n_peers=0)
    good = [_member_record(f"q{i}") for i in range(2)]
    bad = record_to_list(good[0])
    bad[7] = bad[3] + 5  # an accusation-free alive record whose proof is for another incarnation
    raw = [9, False, [bad, record_to_list(good[1]), "not even a list"]]
    drain(node, node.handle_push_pull_request(M, encode_stream_payload(raw), 10)[1], 10)
    assert node.member("q1") is not None and node.member("q0") is None
    assert node.stats["reject.bad_record"] == 2


def _member_record(name: str) -> Member:
    a = alive(name, 0, addr(60))
    return Member(name, addr(60), 0, MemberState.ALIVE, b"", Proof(a.cert, 0, a.signature))


def sent(out: list[Effect], to: Address | None = None) -> list[Message]:
    """Every message in the packets of ``out`` (to ``to`` only, if given)."""
    msgs: list[Message] = []
    for e in out:
        if isinstance(e, SendPacket) and (to is None or e.to == to):
            msgs += decode_packet_messages(e.data, 65_507)
    return msgs


def test_a_reference_we_cannot_resolve_asks_its_sender_for_a_state_once_a_while() -> None:
    node = make_node()
    stranger = alive("z", 0, addr(30))
    ref = Alive("z", 0, addr(30), b"", cert_ref(stranger.cert), stranger.signature)
    out = node.handle_packet(addr(3), packet(ref), 10)
    assert [e for e in out if isinstance(e, StartPushPull)] == [StartPushPull(addr(3), False)]
    again = node.handle_packet(addr(3), packet(ref), 20)  # within the interval: not again
    assert not [e for e in again if isinstance(e, StartPushPull)]
    assert node.stats["push_pull.fetch"] == 1 and node.stats["reject.unknown_cert"] == 2


def test_a_known_members_new_certificate_is_asked_of_the_sender_once_a_while() -> None:
    node = make_node()
    renewed = Alive("p0", 1, addr(2), b"", cert_ref(b"a certificate we never saw"), bytes(64))
    out = node.handle_packet(addr(3), packet(renewed), 10)
    # One small Want of that claim with its certificate, not a push-pull of the whole state.
    assert not [e for e in out if isinstance(e, StartPushPull)]
    assert [m for m in sent(out, addr(3)) if isinstance(m, Want)] == [Want("p0", 1, True)]
    again = node.handle_packet(addr(3), packet(renewed), 20)  # within the interval: not again
    assert not [m for m in sent(again) if isinstance(m, Want)]
    assert node.stats["wants.sent"] == 1 and node.stats["reject.unknown_cert"] == 2
    # The sender answers with the claim it holds, certificate included.
    holder = make_node(name="b")
    claim = alive("p0", 1, addr(2))
    holder.handle_packet(addr(2), packet(claim), 0)
    answer = holder.handle_packet(A, packet(Want("p0", 1, True)), 30)
    replies = [m for m in sent(answer, A) if isinstance(m, Alive) and m.name == "p0"]
    assert replies[0] == claim  # (the same news may ride along again as gossip)


def test_an_accusation_above_the_bound_is_replayed_once_the_missed_refutation_is_fetched() -> None:
    """We missed p0's refutations (alive 1, 2); p1 suspected it at 2. Refused by the bound, but
    we ask the sender for p0's newer claim, and then believe the accusation after all."""
    node = make_node()
    out = node.handle_packet(addr(3), packet(suspect("p0", 2, "p1")), 10)
    assert state(node, "p0") is MemberState.ALIVE
    assert node.stats["reject.incarnation_bound"] == 1
    assert [m for m in sent(out, addr(3)) if isinstance(m, Want)] == [Want("p0", 0, False)]
    # The sender answers the Want with p0's claim at 2 (certificate by reference).
    holder = make_node(name="b")
    holder.handle_packet(addr(2), packet(alive("p0", 2, addr(2))), 0)
    answer = holder.handle_packet(A, packet(Want("p0", 0, False)), 20)
    reply = [m for m in sent(answer, A) if isinstance(m, Alive) and m.name == "p0"][0]
    assert reply.incarnation == 2 and reply.cert == cert_ref(alive("p0", 2, addr(2)).cert)
    node.handle_packet(addr(3), packet(reply), 30)
    p0 = node.member("p0")
    assert p0 is not None and (p0.state, p0.incarnation) == (MemberState.SUSPECT, 2)
    assert node.stats["accusations.replayed"] == 1


def test_a_forged_accusation_above_the_bound_stays_refused_after_a_want() -> None:
    """A captured node's accusation at 2**40 is kept and a Want sent, but no claim of p0's
    can ever make it pass: p0 never signed anything near it."""
    node = make_node()
    node.handle_packet(M, packet(suspect("p0", 1 << 40, "m")), 10)
    node.handle_packet(addr(2), packet(alive("p0", 1, addr(2))), 20)
    p0 = node.member("p0")
    assert p0 is not None and (p0.state, p0.incarnation) == (MemberState.ALIVE, 1)
    assert node.stats["reject.incarnation_bound"] == 2  # refused, and refused again on replay


def test_a_refutation_at_the_accused_incarnation_raises_the_bound() -> None:
    """We took p1's suspicion of p0 at 1 before p0's claim at 1 that p1 had seen: that claim is
    not news (suspect wins at equal incarnation) but is kept as proof, so a later honest
    accusation at 2 is believed."""
    node = make_node()
    node.handle_packet(addr(3), packet(suspect("p0", 1, "p1")), 10)
    node.handle_packet(addr(2), packet(alive("p0", 1, addr(2))), 20)
    p0 = node.member("p0")
    assert p0 is not None and p0.state is MemberState.SUSPECT and p0.proof is not None
    assert p0.proof.alive_incarnation == 1
    node.handle_packet(addr(4), packet(dead("p0", 2, "p2")), 30)
    p0 = node.member("p0")
    assert p0 is not None and (p0.state, p0.incarnation) == (MemberState.DEAD, 2)
    assert node.stats.get("reject.incarnation_bound", 0) == 0


def test_a_refutation_unqueues_the_confirmations_it_made_stale() -> None:
    """Confirmations are queued under their accuser, so the refutation does not replace them:
    it must unqueue them, else each goes on being sent (~90 bytes) as old news to everyone."""
    node = make_node()
    node.handle_packet(addr(3), packet(suspect("p0", 0, "p1")), 10)
    node.handle_packet(addr(4), packet(suspect("p0", 0, "p2")), 20)
    queue = node._state.broadcasts
    assert node.stats["confirmations"] == 1 and queue.has_key(("p0", "p2"))
    node.handle_packet(addr(2), packet(alive("p0", 1, addr(2))), 30)
    assert not queue.has_key(("p0", "p2"))
    assert state(node, "p0") is MemberState.ALIVE


def test_with_a_fixed_suspicion_timeout_confirmations_are_counted_but_not_regossiped() -> None:
    # Lifeguard off (min = max timeout): a confirmation moves no deadline anywhere, so it is not
    # worth its bytes (slow-nodes at 300 nodes: 44 false DEAD with them, 4 without; 3 unsigned).
    node = make_node(config=SwimConfig.lan(suspicion_max_timeout_mult=1))
    node.handle_packet(addr(3), packet(suspect("p0", 0, "p1")), 10)
    node.handle_packet(addr(4), packet(suspect("p0", 0, "p2")), 20)
    assert node.stats["confirmations"] == 1
    assert not node._state.broadcasts.has_key(("p0", "p2"))


def test_a_member_dead_here_and_dead_again_there_at_a_higher_incarnation_stays_dead() -> None:
    """The swarm's seed 460: p0 refuted at 1 where we could not hear it, was found dead there
    at 1, and we hold it dead at 0. A push-pull with that record must not bring p0 back to life
    here (its claim at 1 is from before that death): p0 stays dead, now at 1, with no
    suspicion of ours to run a Lifeguard timeout, and the same claim gossiped later is old news."""
    node = make_node()
    node.handle_packet(addr(3), packet(dead("p0", 0, "p1")), 10)
    assert state(node, "p0") is MemberState.DEAD
    holder = make_node(name="b")
    holder.handle_packet(addr(2), packet(alive("p0", 1, addr(2))), 0)
    holder.handle_packet(addr(3), packet(dead("p0", 1, "p1")), 5)
    assert state(holder, "p0") is MemberState.DEAD
    _, eff = node.handle_push_pull_request(addr(9), holder.push_pull_payload(False), 20)
    out = drain(node, eff, 20)
    p0 = node.member("p0")
    assert p0 is not None and (p0.state, p0.incarnation) == (MemberState.DEAD, 1)
    assert p0.proof is not None and (p0.proof.alive_incarnation, p0.proof.accuser) == (1, "p1")
    assert node.stats["deaths.again"] == 1
    assert node.stats.get("suspicions", 0) == 0
    assert not [e for e in out if isinstance(e, SetTimer) and e.timer.kind is TimerKind.SUSPICION]
    node.handle_packet(addr(2), packet(alive("p0", 1, addr(2))), 30)
    assert state(node, "p0") is MemberState.DEAD
    # p0 alive after all: its refutation above the death brings it back.
    node.handle_packet(addr(2), packet(alive("p0", 2, addr(2))), 40)
    assert state(node, "p0") is MemberState.ALIVE


def test_a_push_pull_does_not_bring_back_a_dead_or_left_member_we_never_knew() -> None:
    """The swarm's seeds 520 and 2404: a member that left (or died) is held DEAD by a few, and a
    node that restarted or joined after it went does not know it. A push-pull with the DEAD
    record must not make it known here, alive and then our own suspicion (which nobody would
    confirm: suspect for a whole Lifeguard maximum, whenever that push-pull comes); a LEFT
    record never did. A SUSPECT stranger is still taken: it is most likely alive."""
    holder = make_node(name="b")
    holder.handle_packet(addr(3), packet(dead("p0", 0, "p1")), 5)
    holder.handle_packet(addr(4), packet(dead("p2", 0, "p2", left=True)), 5)
    holder.handle_packet(addr(5), packet(suspect("p1", 0, "p3")), 5)
    assert [state(holder, n) for n in ("p0", "p1", "p2", "p3")] == [
        MemberState.DEAD, MemberState.SUSPECT, MemberState.LEFT, MemberState.ALIVE]  # fmt: skip
    node = make_node(n_peers=0, name="c")
    _, eff = node.handle_push_pull_request(addr(9), holder.push_pull_payload(False), 20)
    out = drain(node, eff, 20)
    assert state(node, "p0") is None and state(node, "p2") is None
    assert state(node, "p1") is MemberState.SUSPECT and state(node, "p3") is MemberState.ALIVE
    changed = {e.member.name for e in out if isinstance(e, MemberChanged)}
    assert changed == {"b", "p1", "p3"}
    assert not [e for e in out if isinstance(e, SetTimer) and e.timer.kind is TimerKind.SUSPICION
                and e.timer.name == "p0"]  # fmt: skip
