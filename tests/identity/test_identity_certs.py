"""Certificate builders: the shapes of DESIGN-11 D2, and the profile checks that enforce them."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from pki_helpers import DAY_MS, NOW_MS, make_ca, make_node, make_operator

from gossipmesh.errors import UsageError
from gossipmesh.identity import (
    CLOCK_SKEW_MS,
    CertificateRejected,
    IdKind,
    Reason,
    Signer,
    fingerprint,
    issue_node,
    issue_operator,
    issue_root,
    issue_workload,
    parse_certificate,
)
from gossipmesh.identity.profile import check_profile


def ext(der: bytes, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(oid)


def uris(der: bytes) -> list[str]:
    san = ext(der, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert isinstance(san, x509.SubjectAlternativeName)
    return [g.value for g in san]


def test_root_shape() -> None:
    ca = make_ca("prod")
    info = parse_certificate(ca.cert_der)
    assert info.kind is IdKind.ROOT and uris(ca.cert_der) == ["spiffe://prod"]
    bc = ext(ca.cert_der, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=1)
    ku = ext(ca.cert_der, ExtensionOID.KEY_USAGE).value
    assert isinstance(ku, x509.KeyUsage)
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert info.issuer == info.subject
    ext(ca.cert_der, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    assert info.not_after_ms - NOW_MS == 3650 * DAY_MS
    assert NOW_MS - info.not_before_ms == CLOCK_SKEW_MS


def test_node_shape() -> None:
    ca = make_ca("prod")
    node = make_node(ca, "web-1")
    info = parse_certificate(node.cert_der)
    assert uris(node.cert_der) == ["spiffe://prod/node/web-1"]
    assert ext(node.cert_der, ExtensionOID.BASIC_CONSTRAINTS).value == x509.BasicConstraints(
        ca=True, path_length=0
    )
    ku = ext(node.cert_der, ExtensionOID.KEY_USAGE).value
    assert isinstance(ku, x509.KeyUsage) and ku.digital_signature and ku.key_cert_sign
    aki = ext(node.cert_der, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    ski = ext(ca.cert_der, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(
        ski, x509.SubjectKeyIdentifier
    )
    assert aki.key_identifier == ski.digest
    assert info.not_after_ms - NOW_MS == 365 * DAY_MS
    assert info.issuer == parse_certificate(ca.cert_der).subject


def test_operator_and_workload_shapes() -> None:
    ca = make_ca()
    op = make_operator(ca, "alice")
    node = make_node(ca)
    wl = issue_workload(node, "api", Signer.generate().public_key, now_ms=NOW_MS)
    for der, uri, days in (
        (op.cert_der, "spiffe://test/operator/alice", 365),
        (wl, "spiffe://test/svc/api", 1),
    ):
        assert uris(der) == [uri]
        assert ext(der, ExtensionOID.BASIC_CONSTRAINTS).value == x509.BasicConstraints(
            ca=False, path_length=None
        )
        ku = ext(der, ExtensionOID.KEY_USAGE).value
        assert isinstance(ku, x509.KeyUsage)
        assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
        assert parse_certificate(der).not_after_ms - NOW_MS == days * DAY_MS
    assert parse_certificate(wl).issuer == parse_certificate(node.cert_der).subject


def test_serials_are_random_and_fingerprints_differ() -> None:
    ca = make_ca()
    key = Signer.generate().public_key
    a = issue_node(ca, "n", key, now_ms=NOW_MS)
    b = issue_node(ca, "n", key, now_ms=NOW_MS)
    assert parse_certificate(a).serial != parse_certificate(b).serial
    assert fingerprint(a) != fingerprint(b)
    assert parse_certificate(a).serial.bit_length() > 64


def test_a_certificate_never_outlives_its_issuer() -> None:
    ca = make_ca(days=10)
    node = make_node(ca)
    assert (
        parse_certificate(node.cert_der).not_after_ms == parse_certificate(ca.cert_der).not_after_ms
    )
    later = issue_workload(
        node, "api", Signer.generate().public_key, now_ms=NOW_MS + 10 * DAY_MS - 1000
    )
    assert parse_certificate(later).not_after_ms == parse_certificate(node.cert_der).not_after_ms


def test_long_names_keep_distinct_subjects() -> None:
    ca = make_ca()
    a = make_node(ca, "x" * 100 + "a")
    b = make_node(ca, "x" * 100 + "b")
    sa, sb = parse_certificate(a.cert_der), parse_certificate(b.cert_der)
    assert sa.subject != sb.subject
    assert sa.spiffe_id.name == "x" * 100 + "a"


def test_builders_refuse_bad_input() -> None:
    ca = make_ca()
    key = Signer.generate().public_key
    with pytest.raises(UsageError):
        issue_node(ca, "a/b", key, now_ms=NOW_MS)
    with pytest.raises(UsageError):
        issue_node(ca, "n", key, now_ms=NOW_MS, days=0)
    with pytest.raises(UsageError):
        issue_root(Signer.generate(), "Bad Domain", now_ms=NOW_MS)
    node = make_node(ca)
    with pytest.raises(UsageError, match="not a usable root"):
        issue_operator(node, "x", key, now_ms=NOW_MS)  # a node cannot issue operators
    with pytest.raises(UsageError, match="not a usable node"):
        issue_workload(ca, "api", key, now_ms=NOW_MS)  # workloads come from nodes
    with pytest.raises(UsageError, match="does not match"):

        class Mismatched:
            signer = Signer.generate()
            cert_der = ca.cert_der

        issue_node(Mismatched(), "n", key, now_ms=NOW_MS)


def test_fingerprint_is_of_the_signed_part() -> None:
    import hashlib

    ca = make_ca()
    cert = x509.load_der_x509_certificate(ca.cert_der)
    assert fingerprint(ca.cert_der) == hashlib.sha256(cert.tbs_certificate_bytes).digest()
    with pytest.raises(CertificateRejected):
        fingerprint(b"junk")


def test_profile_refuses_a_certificate_of_another_kind_or_domain() -> None:
    ca = make_ca()
    node = parse_certificate(make_node(ca).cert_der)
    check_profile(node, IdKind.NODE, "test")
    with pytest.raises(CertificateRejected) as wrong_kind:
        check_profile(node, IdKind.OPERATOR, "test")
    assert wrong_kind.value.reason is Reason.WRONG_KIND
    with pytest.raises(CertificateRejected) as wrong_domain:
        check_profile(node, IdKind.NODE, "other")
    assert wrong_domain.value.reason is Reason.WRONG_TRUST_DOMAIN
