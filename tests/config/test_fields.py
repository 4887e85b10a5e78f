"""The shared field readers (gossipmesh/config/fields.py): each names the field it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.config.fields import (
    MAX_LIST_ITEMS,
    MAX_REGEX_CHARS,
    read_bool,
    read_int,
    read_list,
    read_mapping,
    read_methods,
    read_regex,
    read_section,
    read_url_path,
    reject_unknown,
    unique,
)
from gossipmesh.errors import ConfigValidationError


@pytest.mark.parametrize(
    ("read", "value", "reason"),
    [
        (lambda v: read_int(v, "f", 0, 10), True, "must be an integer, got bool"),
        (lambda v: read_int(v, "f", 0, 10), 11, "11 is out of range 0-10"),
        (lambda v: read_bool(v, "f"), 1, "must be true or false, got int"),
        (lambda v: read_list(v, "f"), "abc", "must be a list, got str"),
        (lambda v: read_list(v, "f"), [0] * (MAX_LIST_ITEMS + 1), f"at most {MAX_LIST_ITEMS}"),
        (lambda v: read_mapping(v, "f"), {1: "x"}, "keys must be strings, got int"),
        (lambda v: read_mapping(v, "f"), None, "must be an object, got null"),
        (lambda v: read_regex(v, "f"), "x" * (MAX_REGEX_CHARS + 1), "regex must be 1-"),
        (lambda v: read_regex(v, "f"), "(", "invalid regex"),
        (lambda v: read_url_path(v, "f"), "/a b", "whitespace or control characters"),
        (lambda v: read_url_path(v, "f"), "a", "must start with '/'"),
    ],
)
def test_readers_refuse_with_the_field_and_a_reason(read: Any, value: object, reason: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        read(value)
    assert info.value.field == "f"
    assert reason in info.value.reason


def test_readers_return_typed_values() -> None:
    assert read_int(7, "f", 0, 10) == 7
    assert read_methods(["get", "Post"], "f") == ("GET", "POST")
    assert read_section({}, "retry", "service") == {}
    assert read_section({"retry": {"attempts": 1}}, "retry", "service") == {"attempts": 1}
    assert read_regex("a+", "f").fullmatch("aa")


def test_duplicates_and_unknown_fields_name_the_exact_path() -> None:
    with pytest.raises(ConfigValidationError) as info:
        unique(["a", "b", "a"], "route.hosts")
    assert info.value.field == "route.hosts[2]"
    with pytest.raises(ConfigValidationError) as info:
        read_section({"retry": []}, "retry", "service")
    assert info.value.field == "service.retry"
    with pytest.raises(ConfigValidationError) as info:
        reject_unknown({"weigth": 1}, ("weight",), "route.destinations[0]")
    assert info.value.field == "route.destinations[0].weigth"
