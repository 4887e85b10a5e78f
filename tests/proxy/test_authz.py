"""Authorization decisions (proxy/authz.py): pure, one request at a time."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.config.schema import PolicyConfig, validate_entity
from gossipmesh.proxy.authz import Policies, normalise_path, plain_path, under
from gossipmesh.proxy.peers import Peer


def policy(name: str, body: dict[str, Any]) -> PolicyConfig:
    p = validate_entity("policy", name, body)
    assert isinstance(p, PolicyConfig)
    return p


def peer(service: str, node: str = "n1") -> Peer:
    spiffe = f"spiffe://mesh/svc/{service}" if service else f"spiffe://mesh/node/{node}"
    return Peer(spiffe, service, node, b"fp", 1 << 60, 1 << 59, b"")


WEB, OPS, NODE2 = peer("web"), peer("ops"), peer("", "n2")


def test_no_policy_and_an_allow_default_cost_nothing() -> None:
    assert Policies().get("api") is None
    assert Policies([], {"api": "allow"}).get("api") is None


def test_deny_wins_over_allow_and_names_the_policy() -> None:
    sp = Policies(
        [
            policy("allow-web", {"to": "api", "from": ["web"]}),
            policy("no-delete", {"to": "api", "action": "deny", "methods": ["DELETE"]}),
        ]
    ).get("api")
    assert sp is not None
    assert sp.decide(WEB, b"GET", b"/") is None
    denied = sp.decide(WEB, b"DELETE", b"/")
    assert denied is not None and denied.policy == "no-delete"
    assert "policy/no-delete" in denied.detail and "spiffe://mesh/svc/web" in denied.detail


def test_callers_by_service_spiffe_id_and_node() -> None:
    sp = Policies(
        [
            policy("svc", {"to": "api", "from": ["web"]}),
            policy("id", {"to": "api", "from": ["spiffe://mesh/svc/ops"]}),
            policy("node", {"to": "api", "from": ["spiffe://mesh/node/n2"]}),
        ],
        {"api": "deny"},
    ).get("api")
    assert sp is not None
    assert sp.decide(WEB, b"GET", b"/") is None
    assert sp.decide(OPS, b"GET", b"/") is None
    assert sp.decide(NODE2, b"GET", b"/") is None  # the node's own identity
    assert sp.decide(peer("batch", "n2"), b"GET", b"/") is None  # a workload n2 vouches for
    stranger = sp.decide(peer("batch", "n3"), b"GET", b"/")
    assert stranger is not None and stranger.policy == "default"
    anonymous = sp.decide(None, b"GET", b"/")  # plaintext, migration mode
    assert anonymous is not None and "an unauthenticated caller" in anonymous.detail


def test_paths_match_at_segment_boundaries_and_tcp_sees_only_plain_rules() -> None:
    sp = Policies(
        [
            policy("admin", {"to": "db", "action": "deny", "paths": ["/admin"]}),
            policy("no-ops", {"to": "db", "action": "deny", "from": ["ops"]}),
        ]
    ).get("db")
    assert sp is not None and sp.uses_paths
    assert sp.decide(WEB, b"GET", b"/admin/x") is not None
    assert sp.decide(WEB, b"GET", b"/administrator") is None
    assert sp.decide(WEB, None, b"") is None  # a TCP connection: the path rule does not apply
    assert sp.decide(OPS, None, b"") is not None  # ... the caller rule does
    assert under(b"/a/b", b"/a/") and under(b"/a", b"/a/") and not under(b"/ab", b"/a")


@pytest.mark.parametrize(
    ("target", "want"),
    [
        (b"/a/./b/../c?x=1", (b"/a/c", b"/a/c?x=1")),
        (b"//admin", (b"/admin", b"/admin")),
        (b"/%61dmin/", (b"/admin/", b"/admin/")),
        (b"/a%20b", (b"/a b", b"/a%20b")),
        (b"/../..", (b"/", b"/")),
        (b"/a%2Fb", None),  # an encoded separator: two readings
        (b"/a%5cb", None),
        (b"/a\\b", None),
        (b"/a%zz", None),
        (b"/a%00", None),
        (b"*", None),
    ],
)
def test_normalise_path(target: bytes, want: tuple[bytes, bytes] | None) -> None:
    assert normalise_path(target) == want


def test_plain_path_takes_only_what_needs_no_normalisation() -> None:
    assert plain_path(b"/api/v1?q=%2F") == b"/api/v1"
    for target in (b"/a%41", b"//a", b"/a/./b", b"/a/../b", b"*"):
        assert plain_path(target) is None, target
