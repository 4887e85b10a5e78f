"""``policy/NAME`` (gossipmesh/config/policy.py): shape, field-precise errors, round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.policy import policy_body
from gossipmesh.config.schema import PolicyConfig, to_body, validate_entity
from gossipmesh.errors import ConfigValidationError


def test_policy_shape() -> None:
    p = validate_entity("policy", "p", {"to": "api", "from": ["web"], "action": "deny"})
    assert isinstance(p, PolicyConfig)
    assert p.from_services == ("web",) and p.action == "deny" and p.to == "api"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "policy.to"),
        ({"to": "api", "action": "maybe"}, "policy.action"),
        ({"to": "api", "paths": ["nope"]}, "policy.paths[0]"),
    ],
)
def test_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("policy", "x", body)
    assert info.value.field == field
    assert info.value.reason


names = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True)

policy_bodies = st.fixed_dictionaries(
    {"to": names},
    optional={
        "action": st.sampled_from(["allow", "deny"]),
        "from": st.lists(names, unique=True, max_size=3),
        "paths": st.lists(st.sampled_from(["/a", "/b/c"]), unique=True),
    },
)


@settings(max_examples=150, deadline=None)
@given(names, policy_bodies)
def test_canonical_body_round_trips(name: str, body: dict[str, Any]) -> None:
    entity = validate_entity("policy", name, body)
    assert isinstance(entity, PolicyConfig)
    canonical = to_body(entity)
    assert canonical == policy_body(entity)
    assert validate_entity("policy", name, canonical) == entity
    assert to_body(validate_entity("policy", name, canonical)) == canonical


def test_from_takes_service_names_and_the_spiffe_ids_of_services_and_nodes() -> None:
    body = {"to": "api", "from": ["web", "spiffe://mesh/svc/web", "spiffe://mesh/node/n1"]}
    p = validate_entity("policy", "p", body)
    assert isinstance(p, PolicyConfig)
    assert p.from_services == ("web", "spiffe://mesh/svc/web", "spiffe://mesh/node/n1")
    assert validate_entity("policy", "p", to_body(p)) == p
    for bad in ("spiffe://mesh/operator/alice", "spiffe://mesh", "spiffe://mesh/svc/"):
        with pytest.raises(ConfigValidationError) as err:
            validate_entity("policy", "p", {"to": "api", "from": [bad]})
        assert err.value.field == "policy.from[0]"
