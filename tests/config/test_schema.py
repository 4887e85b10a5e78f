"""The entry points of gossipmesh.config.schema: keys, dispatch on the kind, the CRDT's entry
check, garbage in; and the names callers import from it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config import schema
from gossipmesh.config.schema import (
    ServiceConfig,
    check_entry,
    entity_key,
    parse_key,
    to_body,
    validate_entity,
    validate_key,
)
from gossipmesh.errors import ConfigValidationError


def test_keys() -> None:
    assert parse_key("route/web") == ("route", "web")
    for bad in ["route", "widget/x", "route/", "route/a b", "route/" + "a" * 129, "route/a/b"]:
        with pytest.raises(ConfigValidationError) as info:
            parse_key(bad)
        assert info.value.field == "key"
    assert isinstance(validate_key("service/api", {}), ServiceConfig)
    check_entry("service/api", {})
    with pytest.raises(ConfigValidationError):
        check_entry("service/api", ["not", "a", "mapping"])


def test_entity_key_and_unknown_kinds() -> None:
    route = validate_entity("route", "web", {"destinations": [{"service": "a"}]})
    assert entity_key(route) == "route/web"
    with pytest.raises(ConfigValidationError) as info:
        validate_entity("widget", "x", {})
    assert info.value.field == "key"
    with pytest.raises(TypeError):
        to_body("not an entity")  # type: ignore[arg-type]


def test_every_public_name_is_importable_from_schema() -> None:
    """Callers (agent, proxy, simulator, CLI) import from ``schema``; the split kept every name."""
    missing = [name for name in schema.__all__ if not hasattr(schema, name)]
    assert missing == []
    for name in ("validate_entity", "RouteConfig", "NAME_RE", "HealthCheck", "check_entry"):
        assert name in schema.__all__


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "protocol", "load_balancer", "timeouts", "retry", "hosts", "path", "methods", "headers",
        "destinations", "priority", "to", "from", "action", "paths", "service", "weight", "tags",
        "exact", "prefix", "regex", "name", "present",
    ]
)  # fmt: skip
garbage_bodies = st.dictionaries(field_names | st.text(max_size=6), json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["service", "route", "policy"]), garbage_bodies | json_values)
def test_garbage_raises_only_config_validation_error(kind: str, body: Any) -> None:
    try:
        entity = validate_entity(kind, "x", body)
    except ConfigValidationError as e:
        assert isinstance(e.field, str) and e.reason
        return
    assert validate_entity(kind, "x", to_body(entity)) == entity
