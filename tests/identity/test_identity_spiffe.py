"""SPIFFE ids: one canonical URI per identity, strict about everything else."""

from __future__ import annotations

import pytest

from gossipmesh.errors import UsageError
from gossipmesh.identity import IdKind, SpiffeId, validate_name, validate_trust_domain
from gossipmesh.ids import MAX_NODE_NAME_BYTES


@pytest.mark.parametrize(
    ("uri", "kind", "domain", "name"),
    [
        ("spiffe://prod", IdKind.ROOT, "prod", ""),
        ("spiffe://prod/node/web-1", IdKind.NODE, "prod", "web-1"),
        ("spiffe://prod/operator/alice", IdKind.OPERATOR, "prod", "alice"),
        ("spiffe://prod/svc/api", IdKind.WORKLOAD, "prod", "api"),
        ("spiffe://a.b-c_d/node/x.y_z~", IdKind.NODE, "a.b-c_d", "x.y_z~"),
        ("spiffe://prod/node/my%20host", IdKind.NODE, "prod", "my host"),
        ("spiffe://prod/node/h%C3%B4te", IdKind.NODE, "prod", "hôte"),
        ("spiffe://prod/node/a%3Ab", IdKind.NODE, "prod", "a:b"),
    ],
)
def test_parse_and_format_round_trip(uri: str, kind: IdKind, domain: str, name: str) -> None:
    sid = SpiffeId.parse(uri)
    assert (sid.kind, sid.trust_domain, sid.name) == (kind, domain, name)
    assert sid.uri == uri
    assert SpiffeId(kind, domain, name) == sid


def test_constructors_name_the_kinds() -> None:
    assert SpiffeId.root("c").uri == "spiffe://c"
    assert SpiffeId.node("c", "n").uri == "spiffe://c/node/n"
    assert SpiffeId.operator("c", "o").uri == "spiffe://c/operator/o"
    assert SpiffeId.workload("c", "s").uri == "spiffe://c/svc/s"
    assert str(SpiffeId.node("c", "n")) == "spiffe://c/node/n"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "http://prod/node/a",
        "SPIFFE://prod/node/a",
        "spiffe://",
        "spiffe://Prod/node/a",  # trust domains are lowercase
        "spiffe://pr od/node/a",
        "spiffe://prod:8080/node/a",
        "spiffe://user@prod/node/a",
        "spiffe://prod/",
        "spiffe://prod/node",
        "spiffe://prod/node/",
        "spiffe://prod/nodes/a",
        "spiffe://prod/node/a/b",  # '/' in a name
        "spiffe://prod/node/a%2Fb",  # ... even encoded
        "spiffe://prod/node/a b",  # must be percent-encoded
        "spiffe://prod/node/%41",  # non-canonical: 'A' needs no encoding
        "spiffe://prod/node/%c3%b4",  # lowercase hex is not canonical
        "spiffe://prod/node/%C3",  # not UTF-8
        "spiffe://prod/node/%0A",  # control character
        "spiffe://prod/node/%7F",
        "spiffe://prod/node/%C2%85",  # C1 control
        "spiffe://prod/node/.",
        "spiffe://prod/node/..",
        "spiffe://prod/node/a?x=1",
        "spiffe://prod/node/a#f",
        "spiffe://prod/node/%2",
        "spiffe://" + "a" * 65,
        "spiffe://prod/node/" + "a" * (MAX_NODE_NAME_BYTES + 1),
    ],
)
def test_malformed_ids_are_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        SpiffeId.parse(uri)


def test_names_follow_the_node_name_rules() -> None:
    assert validate_name("a" * MAX_NODE_NAME_BYTES) == "a" * MAX_NODE_NAME_BYTES
    # The limit is in UTF-8 bytes, as for node names.
    validate_name("é" * (MAX_NODE_NAME_BYTES // 2))
    for bad in (
        "",
        "é" * (MAX_NODE_NAME_BYTES // 2 + 1),
        "a/b",
        "a\nb",
        "\x00",
        "a\x7fb",
        "\ud800",
    ):
        with pytest.raises(UsageError):
            validate_name(bad)
    # A name at the byte limit, encoded, parses back.
    long = "é" * (MAX_NODE_NAME_BYTES // 2)
    assert SpiffeId.parse(SpiffeId.node("c", long).uri).name == long


def test_trust_domain_rule_says_how_to_fix_it() -> None:
    assert validate_trust_domain("default") == "default"
    with pytest.raises(UsageError, match="lowercase letters"):
        validate_trust_domain("My Cluster")
    with pytest.raises(UsageError):
        validate_trust_domain("")
    with pytest.raises(UsageError):
        validate_trust_domain("a" * 65)


def test_root_has_no_name_and_others_need_one() -> None:
    with pytest.raises(UsageError):
        SpiffeId(IdKind.ROOT, "c", "x")
    with pytest.raises(UsageError):
        SpiffeId(IdKind.NODE, "c", "")


def test_ids_are_frozen_and_hashable() -> None:
    sid = SpiffeId.node("c", "n")
    assert {sid: 1}[SpiffeId.parse("spiffe://c/node/n")] == 1
    with pytest.raises(AttributeError):
        sid.name = "other"  # type: ignore[misc]
