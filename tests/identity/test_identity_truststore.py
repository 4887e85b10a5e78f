"""TrustStore: every rejection reason, rotation, revocation, the memo, and hostile input."""

from __future__ import annotations

import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from pki_helpers import (
    DAY_MS,
    NOW_MS,
    key_usage,
    make_ca,
    make_node,
    make_operator,
    raw_certificate,
    signed_by,
)

from gossipmesh.identity import (
    MAX_CERT_BYTES,
    CredentialError,
    IdKind,
    Reason,
    Rejected,
    Signer,
    SpiffeId,
    TrustStore,
    VerifiedIdentity,
    fingerprint,
    issue_workload,
)
from gossipmesh.identity.signing import ORDER, public_key_bytes


def reason(verdict: object) -> Reason:
    assert isinstance(verdict, Rejected), verdict
    return verdict.reason


def ok(verdict: object) -> VerifiedIdentity:
    assert isinstance(verdict, VerifiedIdentity), verdict
    return verdict


# --- what verifies ---------------------------------------------------------------------------


def test_node_certificate_verifies_as_a_leaf_although_it_is_a_ca() -> None:
    # A node certificate is a CA (path_length=0) and must verify as a *leaf* for node identity:
    # the library verifier accepts that under the permit_all EE policy.
    ca = make_ca()
    node = make_node(ca, "web-1")
    store = TrustStore("test", [ca.cert_der])
    got = ok(store.verify_node(node.cert_der, NOW_MS))
    assert got.spiffe_id == SpiffeId.node("test", "web-1")
    assert got.fingerprint == fingerprint(node.cert_der)
    assert public_key_bytes(got.public_key) == node.signer.public_key_bytes
    assert got.not_after_ms == NOW_MS + 365 * DAY_MS and got.node is None
    assert ok(store.verify_node(node.cert_der, NOW_MS, name="web-1")).name == "web-1"


def test_operator_and_workload_verify() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    op = make_operator(ca, "alice")
    assert ok(store.verify_operator(op.cert_der, NOW_MS)).kind is IdKind.OPERATOR
    node = make_node(ca, "n1")
    wl = issue_workload(node, "api", Signer.generate().public_key, now_ms=NOW_MS)
    got = ok(store.verify_workload(wl, node.cert_der, NOW_MS, service="api"))
    assert got.spiffe_id == SpiffeId.workload("test", "api")
    assert got.node == SpiffeId.node("test", "n1")
    assert got.not_after_ms == NOW_MS + DAY_MS


# --- every rejection reason ------------------------------------------------------------------


def test_wrong_root_even_with_the_same_subject() -> None:
    ours, theirs = make_ca(), make_ca()  # same trust domain, same subject, other key
    store = TrustStore("test", [ours.cert_der])
    assert reason(store.verify_node(make_node(theirs).cert_der, NOW_MS)) is Reason.UNKNOWN_ROOT
    assert (
        reason(store.verify_operator(make_operator(theirs).cert_der, NOW_MS)) is Reason.UNKNOWN_ROOT
    )


def test_expired_and_not_yet_valid() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    assert reason(store.verify_node(node.cert_der, NOW_MS + 366 * DAY_MS)) is Reason.EXPIRED
    assert reason(store.verify_node(node.cert_der, NOW_MS - DAY_MS)) is Reason.NOT_YET_VALID
    ok(store.verify_node(node.cert_der, NOW_MS - 60_000))  # within the backdated clock skew


def test_verify_chain_reports_the_window_without_judging_it() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    verdict = ok(store.verify_chain(node.cert_der, IdKind.NODE))
    assert verdict.not_before_ms < NOW_MS < verdict.not_after_ms
    assert reason(store.verify_node(node.cert_der, verdict.not_after_ms + 1)) is Reason.EXPIRED
    assert reason(store.verify_chain(node.cert_der, IdKind.OPERATOR)) is Reason.WRONG_KIND
    assert reason(TrustStore("test").verify_chain(node.cert_der, IdKind.NODE)) is (
        Reason.UNKNOWN_ROOT
    )


def test_an_expired_root_ends_its_certificates() -> None:
    ca = make_ca(days=10)
    # Built by hand to outlive its root (our builder would clamp it).
    der = raw_certificate(**signed_by(ca), days=100)
    store = TrustStore("test", [ca.cert_der])
    ok(store.verify_node(der, NOW_MS))
    assert reason(store.verify_node(der, NOW_MS + 20 * DAY_MS)) is Reason.EXPIRED


def test_certificate_of_another_kind_is_wrong_kind() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    node, op = make_node(ca), make_operator(ca)
    assert reason(store.verify_operator(node.cert_der, NOW_MS)) is Reason.WRONG_KIND
    assert reason(store.verify_node(op.cert_der, NOW_MS)) is Reason.WRONG_KIND
    assert reason(store.verify_node(ca.cert_der, NOW_MS)) is Reason.WRONG_KIND


def test_san_of_another_trust_domain() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    forged = raw_certificate(
        **signed_by(ca), sans=[x509.UniformResourceIdentifier("spiffe://other/node/n1")]
    )
    assert reason(store.verify_node(forged, NOW_MS)) is Reason.WRONG_TRUST_DOMAIN
    elsewhere = make_node(make_ca("other"))
    assert reason(store.verify_node(elsewhere.cert_der, NOW_MS)) is Reason.WRONG_TRUST_DOMAIN


def test_wrong_name() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    assert (
        reason(store.verify_node(make_node(ca, "a").cert_der, NOW_MS, name="b"))
        is Reason.WRONG_NAME
    )


def test_leaf_signed_by_a_non_ca_is_refused() -> None:
    ca = make_ca()
    op = make_operator(ca)
    store = TrustStore("test", [ca.cert_der])
    # An operator (not a CA) mints a node certificate: no chain to the root exists.
    forged = raw_certificate(**signed_by(op))
    assert reason(store.verify_node(forged, NOW_MS)) is Reason.UNKNOWN_ROOT
    # A node (a CA, path_length=0) mints another node certificate: a node is only trusted as
    # the issuer of a workload, and a node certificate must be signed by a root directly.
    node = make_node(ca)
    assert (
        reason(store.verify_node(raw_certificate(**signed_by(node)), NOW_MS)) is Reason.UNKNOWN_ROOT
    )


def test_workload_chain_rules() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    node = make_node(ca, "n1")
    wl_key = Signer.generate().public_key
    wl = issue_workload(node, "api", wl_key, now_ms=NOW_MS)
    # No node certificate, or something else in its place.
    assert reason(store.verify(wl, IdKind.WORKLOAD, NOW_MS)) is Reason.BAD_ISSUER
    assert (
        reason(store.verify_workload(wl, make_operator(ca).cert_der, NOW_MS)) is Reason.BAD_ISSUER
    )
    assert reason(store.verify_workload(wl, b"junk", NOW_MS)) is Reason.BAD_ISSUER
    # Another node's certificate as the intermediate: the signature does not match.
    assert (
        reason(store.verify_workload(wl, make_node(ca, "n2").cert_der, NOW_MS))
        is Reason.UNKNOWN_ROOT
    )
    # A "node" certificate with path_length=1 (it could mint sub-CAs) is not a node.
    loose_node = raw_certificate(**signed_by(ca), path_length=1)
    assert reason(store.verify_workload(wl, loose_node, NOW_MS)) is Reason.BAD_ISSUER
    # A node certificate that is not a CA cannot issue.
    flat = raw_certificate(**signed_by(ca), ca=False, path_length=None, usage=key_usage(ds=True))
    assert reason(store.verify_workload(wl, flat, NOW_MS)) is Reason.BAD_ISSUER
    # A workload signed by the root itself, presented with some node: not issued by that node.
    by_root = raw_certificate(
        **signed_by(ca),
        ca=False,
        path_length=None,
        usage=key_usage(ds=True),
        sans=[x509.UniformResourceIdentifier("spiffe://test/svc/api")],
    )
    assert reason(store.verify_workload(by_root, node.cert_der, NOW_MS)) in {
        Reason.BAD_ISSUER,
        Reason.UNKNOWN_ROOT,
    }
    # A workload that outlives nothing: its node's expiry ends it.
    assert reason(store.verify_workload(wl, node.cert_der, NOW_MS + 2 * DAY_MS)) is Reason.EXPIRED
    # A node or operator never has an intermediate.
    assert (
        reason(store.verify(node.cert_der, IdKind.NODE, NOW_MS, intermediate=ca.cert_der))
        is Reason.BAD_ISSUER
    )
    # Revoking the node ends its workloads.
    store.revoke(fingerprint(node.cert_der))
    assert reason(store.verify_workload(wl, node.cert_der, NOW_MS)) is Reason.REVOKED


def test_no_trusted_root() -> None:
    ca = make_ca()
    assert (
        reason(TrustStore("test").verify_node(make_node(ca).cert_der, NOW_MS))
        is Reason.UNKNOWN_ROOT
    )


# --- revocation and rotation -----------------------------------------------------------------


def test_revocation_bumps_the_version_and_applies_at_once() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    ok(store.verify_node(node.cert_der, NOW_MS))
    v0 = store.version
    fp = fingerprint(node.cert_der)
    assert store.revoke(fp) and store.version == v0 + 1 and store.is_revoked(fp)
    assert reason(store.verify_node(node.cert_der, NOW_MS)) is Reason.REVOKED
    assert not store.revoke(fp) and store.version == v0 + 1
    assert store.unrevoke(fp) and store.version == v0 + 2
    ok(store.verify_node(node.cert_der, NOW_MS))
    assert store.set_revoked([fp]) and store.version == v0 + 3
    assert not store.set_revoked([fp]) and store.version == v0 + 3
    assert reason(store.verify_node(node.cert_der, NOW_MS)) is Reason.REVOKED
    with pytest.raises(ValueError):
        store.revoke(b"short")


def _malleate(der: bytes) -> bytes:
    """The same certificate with its ECDSA signature (r, s) replaced by (r, n - s)."""

    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        if n < 128:
            length = bytes([n])
        else:
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            length = bytes([0x80 | len(raw)]) + raw
        return bytes([tag]) + length + body

    cert = x509.load_der_x509_certificate(der)
    r, s = decode_dss_signature(cert.signature)
    ecdsa_with_sha256 = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
    signature = tlv(0x03, b"\x00" + encode_dss_signature(r, ORDER - s))
    return tlv(0x30, cert.tbs_certificate_bytes + ecdsa_with_sha256 + signature)


def test_revocation_survives_a_re_encoded_signature() -> None:
    # ECDSA signatures are malleable: the same certificate with (r, n-s) is new DER that still
    # verifies. Its fingerprint (of the signed part) is the same, so revocation still holds.
    ca = make_ca()
    node = make_node(ca)
    twin = _malleate(node.cert_der)
    assert twin != node.cert_der
    store = TrustStore("test", [ca.cert_der])
    assert ok(store.verify_node(twin, NOW_MS)).fingerprint == fingerprint(node.cert_der)
    store.revoke(fingerprint(node.cert_der))
    assert reason(store.verify_node(node.cert_der, NOW_MS)) is Reason.REVOKED
    assert reason(store.verify_node(twin, NOW_MS)) is Reason.REVOKED


def test_root_rotation() -> None:
    old, new = make_ca(), make_ca()
    old_node, new_node = make_node(old, "a"), make_node(new, "b")
    old_op, new_op = make_operator(old, "x"), make_operator(new, "y")
    store = TrustStore("test", [old.cert_der])
    assert reason(store.verify_node(new_node.cert_der, NOW_MS)) is Reason.UNKNOWN_ROOT
    assert store.add_root(new.cert_der)  # both trusted at once
    assert not store.add_root(new.cert_der)
    for der in (old_node.cert_der, new_node.cert_der):
        ok(store.verify_node(der, NOW_MS))
    for der in (old_op.cert_der, new_op.cert_der):
        ok(store.verify_operator(der, NOW_MS))
    version = store.version
    assert store.remove_root(fingerprint(old.cert_der)) and store.version == version + 1
    assert not store.remove_root(fingerprint(old.cert_der))
    assert reason(store.verify_node(old_node.cert_der, NOW_MS)) is Reason.UNKNOWN_ROOT
    assert reason(store.verify_operator(old_op.cert_der, NOW_MS)) is Reason.UNKNOWN_ROOT
    ok(store.verify_node(new_node.cert_der, NOW_MS))
    ok(store.verify_operator(new_op.cert_der, NOW_MS))
    assert store.roots == (new.cert_der,)


def test_only_roots_of_the_domain_can_be_trusted() -> None:
    ca = make_ca()
    store = TrustStore("test")
    with pytest.raises(CredentialError):
        store.add_root(make_node(ca).cert_der)
    with pytest.raises(CredentialError):
        store.add_root(make_ca("other").cert_der)
    with pytest.raises(CredentialError):
        store.add_root(b"junk")
    assert store.version == 0


# --- the memo --------------------------------------------------------------------------------


def test_second_verification_does_not_run_the_library_verifier() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    first = ok(store.verify_node(node.cert_der, NOW_MS))
    assert (store.chain_verifications, store.memo_hits) == (1, 0)
    assert ok(store.verify_node(node.cert_der, NOW_MS + 1000)) == first
    assert (store.chain_verifications, store.memo_hits) == (1, 1)


def test_a_memo_never_extends_a_life() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    ok(store.verify_node(node.cert_der, NOW_MS))
    assert reason(store.verify_node(node.cert_der, NOW_MS + 400 * DAY_MS)) is Reason.EXPIRED
    assert reason(store.verify_node(node.cert_der, NOW_MS - 2 * DAY_MS)) is Reason.NOT_YET_VALID
    assert store.chain_verifications == 1  # the window check ran without a new verification


def test_a_change_of_roots_or_revocations_drops_the_memo() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    ok(store.verify_node(node.cert_der, NOW_MS))
    store.revoke(bytes(32))  # some other certificate
    ok(store.verify_node(node.cert_der, NOW_MS))
    assert store.chain_verifications == 2


def test_failures_are_memoised_so_a_flood_costs_one_check() -> None:
    ca, stranger = make_ca(), make_ca()
    store = TrustStore("test", [ca.cert_der])
    junk = b"\x30\x82" + bytes(range(256)) * 4
    foreign = make_node(stranger).cert_der
    for _ in range(1000):
        assert reason(store.verify_node(junk, NOW_MS)) is Reason.BAD_CERTIFICATE
        assert reason(store.verify_node(foreign, NOW_MS)) is Reason.UNKNOWN_ROOT
    assert store.memo_misses == 2 and store.chain_verifications == 1
    assert store.memo_hits == 1998


def test_memo_is_bounded_lru() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der], memo_entries=2)
    a, b, c = (make_node(ca, n).cert_der for n in "abc")
    for der in (a, b, c):
        ok(store.verify_node(der, NOW_MS))
    assert store.memo_size == 2 and store.chain_verifications == 3
    ok(store.verify_node(c, NOW_MS))  # still held
    assert store.chain_verifications == 3
    ok(store.verify_node(a, NOW_MS))  # evicted, verified again
    assert store.chain_verifications == 4


def test_memo_is_per_kind() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    ok(store.verify_node(node.cert_der, NOW_MS))
    assert reason(store.verify_operator(node.cert_der, NOW_MS)) is Reason.WRONG_KIND


# --- hostile input ---------------------------------------------------------------------------


def test_huge_der_is_refused_before_parsing() -> None:
    store = TrustStore("test", [make_ca().cert_der])
    huge = b"\x30\x83\x00\x40\x00" + b"\x00" * (MAX_CERT_BYTES + 100)
    assert reason(store.verify_node(huge, NOW_MS)) is Reason.TOO_LARGE
    assert reason(store.verify_workload(b"x", huge, NOW_MS)) is Reason.TOO_LARGE
    assert store.memo_misses == 0 and store.memo_size == 0


@pytest.mark.parametrize("junk", [b"", b"\x30", b"\x30\x00", b"hello world", bytes(500)])
def test_junk_is_bad_certificate(junk: bytes) -> None:
    store = TrustStore("test", [make_ca().cert_der])
    assert reason(store.verify_node(junk, NOW_MS)) is Reason.BAD_CERTIFICATE


def test_not_bytes_is_bad_certificate() -> None:
    store = TrustStore("test", [make_ca().cert_der])
    for value in ("text", None, bytearray(b"x"), 7):
        assert reason(store.verify_node(value, NOW_MS)) is Reason.BAD_CERTIFICATE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sans",
    [
        [
            x509.UniformResourceIdentifier("spiffe://test/node/forged"),
            x509.UniformResourceIdentifier("spiffe://test/node/other"),
        ],
        [
            x509.UniformResourceIdentifier("spiffe://test/node/forged"),
            x509.DNSName("forged.example"),
        ],
        [x509.DNSName("forged.example")],
        [x509.UniformResourceIdentifier("https://test/node/forged")],
        [x509.UniformResourceIdentifier("spiffe://test/node/a/b")],
        [],  # no SAN extension at all
    ],
)
def test_san_must_be_exactly_one_spiffe_uri(sans: list[x509.GeneralName]) -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    der = raw_certificate(**signed_by(ca), sans=sans)
    assert reason(store.verify_node(der, NOW_MS)) is Reason.BAD_CERTIFICATE


def test_other_curves_are_refused() -> None:
    ca = make_ca()
    store = TrustStore("test", [ca.cert_der])
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = raw_certificate(**signed_by(ca), subject_key=p384)
    assert reason(store.verify_node(der, NOW_MS)) is Reason.BAD_CERTIFICATE


def test_mutated_certificates_never_raise_and_never_verify() -> None:
    ca = make_ca()
    node = make_node(ca)
    store = TrustStore("test", [ca.cert_der])
    rng = random.Random(11)
    der = node.cert_der
    for _ in range(300):
        mutated = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        verdict = store.verify_node(bytes(mutated), NOW_MS)
        if bytes(mutated) != der:
            assert isinstance(verdict, Rejected) or verdict.fingerprint == fingerprint(der)
    assert isinstance(store.verify_node(der[:-10], NOW_MS), Rejected)


def test_a_workload_that_carries_its_node_certificate_verifies_from_the_leaf_alone() -> None:
    ca = make_ca("mesh")
    node = make_node(ca, "n1")
    other = make_node(ca, "n2")
    store = TrustStore("mesh", roots=[ca.cert_der])
    key = Signer.generate().public_key
    carried = issue_workload(node, "api", key, now_ms=NOW_MS, carry_issuer=True)
    got = ok(store.verify_carried_workload(carried, NOW_MS, service="api"))
    assert got.node is not None and got.node.name == "n1"
    bare = issue_workload(node, "api", key, now_ms=NOW_MS)
    assert reason(store.verify_carried_workload(bare, NOW_MS)) is Reason.BAD_ISSUER
    assert reason(store.verify_carried_workload(b"junk", NOW_MS)) is Reason.BAD_CERTIFICATE
    # A leaf cannot borrow another node's certificate: the chain check proves who signed it.
    forged = issue_workload(other, "api", key, now_ms=NOW_MS, carry_issuer=True)
    forged_node = ok(store.verify_carried_workload(forged, NOW_MS)).node
    assert forged_node is not None and forged_node.name == "n2"
    store.revoke(fingerprint(node.cert_der))
    assert reason(store.verify_carried_workload(carried, NOW_MS)) is Reason.REVOKED
    assert reason(store.verify_carried_workload(carried, NOW_MS + 2 * 86_400_000)) in (
        Reason.REVOKED,
        Reason.EXPIRED,
    )
