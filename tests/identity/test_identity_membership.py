"""MembershipAuthority: signing our claims, checking others', memoised and revocation-aware."""

from __future__ import annotations

from pki_helpers import CLUSTER, DAY_MS, NOW_MS, make_ca, make_node

from gossipmesh.identity import CaCredentials, TrustStore, fingerprint
from gossipmesh.identity.membership import (
    MembershipAuthority,
    VerificationMemo,
    accusation_bytes,
    alive_bytes,
)
from gossipmesh.ids import Address
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim

ADDR = Address("10.0.0.1", 7946)


class Clock:
    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def world(ca: CaCredentials | None = None) -> tuple[CaCredentials, VerificationMemo, Clock]:
    ca = ca or make_ca()
    return ca, VerificationMemo(TrustStore(CLUSTER, roots=[ca.cert_der])), Clock()


def test_a_signed_alive_claim_verifies_and_every_change_to_it_does_not() -> None:
    ca, memo, clock = world()
    a = MembershipAuthority(make_node(ca, "a"), memo, clock)
    b = MembershipAuthority(make_node(ca, "b"), memo, clock)
    claim = AliveClaim("a", 3, ADDR, b"meta")
    sig = a.sign_alive(claim)
    assert b.verify_alive(claim, a.certificate, sig) is None
    assert b.verify_alive(AliveClaim("a", 4, ADDR, b"meta"), a.certificate, sig) == "bad_signature"
    other = AliveClaim("a", 3, Address("10.6.6.6", 7946), b"meta")
    assert b.verify_alive(other, a.certificate, sig) == "bad_signature"
    # b's certificate cannot carry a claim about a: nobody speaks for another node.
    assert b.verify_alive(claim, b.certificate, sig) == "cert.wrong_name"
    forged = AliveClaim("a", 3, ADDR, b"meta")
    assert b.verify_alive(forged, a.certificate, b.sign_alive(AliveClaim("b", 3, ADDR, b""))) == (
        "bad_signature"
    )


def test_the_claim_binds_the_certificate_it_travels_with() -> None:
    ca, memo, clock = world()
    old, new = make_node(ca, "a"), make_node(ca, "a")  # re-issued: same name, new key
    claim = AliveClaim("a", 1, ADDR, b"")
    sig = MembershipAuthority(old, memo, clock).sign_alive(claim)
    checker = MembershipAuthority(make_node(ca, "c"), memo, clock)
    assert checker.verify_alive(claim, old.cert_der, sig) is None
    assert checker.verify_alive(claim, new.cert_der, sig) == "bad_signature"
    data = alive_bytes(CLUSTER, claim, fingerprint(old.cert_der))
    assert data != alive_bytes(CLUSTER, claim, fingerprint(new.cert_der))


def test_accusations_are_signed_by_the_accuser_and_bound_to_kind_and_incarnation() -> None:
    ca, memo, clock = world()
    a = MembershipAuthority(make_node(ca, "a"), memo, clock)
    c = MembershipAuthority(make_node(ca, "c"), memo, clock)
    claim = Accusation(AccusationKind.SUSPECT, "b", 5, "a")
    sig = a.sign_accusation(claim)
    assert c.verify_accusation(claim, a.certificate, sig) is None
    dead = Accusation(AccusationKind.DEAD, "b", 5, "a")
    assert c.verify_accusation(dead, a.certificate, sig) == "bad_signature"
    assert c.verify_accusation(claim, c.certificate, sig) == "cert.wrong_name"
    assert accusation_bytes(CLUSTER, claim) != accusation_bytes("other", claim)


def test_we_sign_only_our_own_claims() -> None:
    ca, memo, clock = world()
    a = MembershipAuthority(make_node(ca, "a"), memo, clock)
    for bad in (
        lambda: a.sign_alive(AliveClaim("b", 1, ADDR, b"")),
        lambda: a.sign_accusation(Accusation(AccusationKind.DEAD, "c", 1, "b")),
    ):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("signed for another node")


def test_certificates_from_another_root_junk_and_expired_ones_are_refused() -> None:
    ca, memo, clock = world()
    checker = MembershipAuthority(make_node(ca, "c"), memo, clock)
    stranger = make_node(make_ca(), "a")  # a root this cluster does not trust
    assert checker.check_certificate("a", stranger.cert_der) == "cert.unknown_root"
    assert checker.check_certificate("a", b"\x30\x03junk") == "cert.bad_certificate"
    own = make_node(ca, "a")
    assert checker.check_certificate("a", own.cert_der) is None
    clock.now_ms = NOW_MS + 400 * DAY_MS  # node certificates last 365 days
    assert checker.check_certificate("a", own.cert_der) == "cert.expired"


def test_a_revocation_takes_effect_at_the_next_check_without_reverifying_chains() -> None:
    ca, memo, clock = world()
    checker = MembershipAuthority(make_node(ca, "c"), memo, clock)
    a = make_node(ca, "a")
    claim = AliveClaim("a", 1, ADDR, b"")
    sig = MembershipAuthority(a, memo, clock).sign_alive(claim)
    assert checker.verify_alive(claim, a.cert_der, sig) is None
    chains = memo.chain_checks
    memo.trust.revoke(fingerprint(a.cert_der))
    assert checker.verify_alive(claim, a.cert_der, sig) == "cert.revoked"
    assert checker.check_certificate("a", a.cert_der) == "cert.revoked"
    memo.trust.unrevoke(fingerprint(a.cert_der))
    assert checker.verify_alive(claim, a.cert_der, sig) is None
    assert memo.chain_checks == chains  # the chain verdict was kept across both changes


def test_verdicts_are_memoised_successes_and_failures_alike() -> None:
    ca, memo, clock = world()
    a = MembershipAuthority(make_node(ca, "a"), memo, clock)
    checker = MembershipAuthority(make_node(ca, "c"), memo, clock)
    claim = AliveClaim("a", 1, ADDR, b"")
    good, bad = a.sign_alive(claim), b"\x01" * 64
    for _ in range(3):
        assert checker.verify_alive(claim, a.certificate, good) is None
        assert checker.verify_alive(claim, a.certificate, bad) == "bad_signature"
    assert memo.signature_checks == 2
    assert memo.chain_checks == 1


def test_a_new_root_set_forgets_every_chain() -> None:
    ca, memo, clock = world()
    checker = MembershipAuthority(make_node(ca, "c"), memo, clock)
    a = make_node(ca, "a")
    assert checker.check_certificate("a", a.cert_der) is None
    memo.trust.remove_root(fingerprint(ca.cert_der))
    assert checker.check_certificate("a", a.cert_der) == "cert.unknown_root"
