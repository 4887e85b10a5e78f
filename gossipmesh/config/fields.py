"""Field readers for config bodies: each checks one JSON/TOML value and names its field.

Every reader takes the value and the dotted path of its field (``route.destinations[0].weight``)
and returns the value, typed, or raises ``ConfigValidationError(path, reason)``. Nothing is coerced
silently: booleans are not integers here (``weight = true`` is a mistake, not a weight of 1), a
string is not a list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gossipmesh.config.regex import Regex, RegexError, compile_regex
from gossipmesh.errors import ConfigValidationError

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A tag is a label like ``v1``, ``canary`` or ``zone=eu-1``; no whitespace or commas so tags can be
# listed and filtered on a command line without quoting surprises.
TAG_RE = re.compile(r"[A-Za-z0-9._:/=-]{1,128}")
# RFC 7230 token characters: valid header names and methods.
TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
HOST_RE = re.compile(rf"(?:\*\.)?{HOST_LABEL}(?:\.{HOST_LABEL})*")

# Limits on list and string sizes: the document caps an entity at 64 KiB encoded, but these give
# the operator a precise field in the error instead of a size complaint.
MAX_LIST_ITEMS = 256
MAX_PATH_CHARS = 1024
MAX_REGEX_CHARS = 1024
MAX_HEADER_VALUE_CHARS = 4096
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_RETRY_ATTEMPTS = 10
MAX_WEIGHT = 10_000
MAX_PRIORITY = 1_000_000
MAX_LIMIT = 1_000_000
# gRPC's full service name (package and service, dot-separated) and method name.
GRPC_SERVICE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
GRPC_METHOD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigValidationError(path, f"must be an object, got {type_name(value)}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigValidationError(path, f"keys must be strings, got {type_name(k)}")
    return value


def reject_unknown(body: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    for k in body:
        if k not in allowed:
            where = f"{path}.{k}" if path else k
            raise ConfigValidationError(where, f"unknown field (allowed: {', '.join(allowed)})")


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def read_int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValidationError(path, f"must be an integer, got {type_name(value)}")
    if not lo <= value <= hi:
        raise ConfigValidationError(path, f"{value} is out of range {lo}-{hi}")
    return value


def read_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigValidationError(path, f"must be true or false, got {type_name(value)}")
    return value


def read_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigValidationError(path, f"must be a string, got {type_name(value)}")
    return value


def read_choice(value: object, path: str, choices: Sequence[str]) -> Any:
    text = read_str(value, path)
    if text not in choices:
        raise ConfigValidationError(path, f"{text!r} is not one of {', '.join(choices)}")
    return text


def read_pattern(value: object, path: str, regex: re.Pattern[str], what: str) -> str:
    text = read_str(value, path)
    if regex.fullmatch(text) is None:
        raise ConfigValidationError(path, f"{text!r} is not a valid {what}")
    return text


def read_list(value: object, path: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigValidationError(path, f"must be a list, got {type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise ConfigValidationError(path, f"at most {MAX_LIST_ITEMS} items, got {len(value)}")
    return value


def unique(items: Sequence[Any], path: str) -> tuple[Any, ...]:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        if item in seen:
            raise ConfigValidationError(f"{path}[{i}]", f"duplicate {item!r}")
        seen.add(item)
    return tuple(items)


def read_regex(value: object, path: str) -> Regex:
    """A route regex, compiled by RE2 (config/regex.py): one it cannot compile (a backreference,
    lookaround, a syntax error) is refused here, when the route is written, with RE2's reason."""
    text = read_str(value, path)
    if not text or len(text) > MAX_REGEX_CHARS:
        raise ConfigValidationError(path, f"regex must be 1-{MAX_REGEX_CHARS} characters")
    try:
        return compile_regex(text)
    except RegexError as e:
        raise ConfigValidationError(path, f"invalid regex (RE2 syntax): {e}") from None


def read_url_path(value: object, path: str) -> str:
    text = read_str(value, path)
    if not text.startswith("/"):
        raise ConfigValidationError(path, f"{text!r} must start with '/'")
    if len(text) > MAX_PATH_CHARS:
        raise ConfigValidationError(path, f"at most {MAX_PATH_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise ConfigValidationError(path, "must not contain whitespace or control characters")
    return text


def read_name(value: object, path: str) -> str:
    return read_pattern(value, path, NAME_RE, "name (1-128 characters of [A-Za-z0-9._-])")


def read_names(value: object, path: str) -> tuple[str, ...]:
    items = read_list(value, path)
    return unique([read_name(v, f"{path}[{i}]") for i, v in enumerate(items)], path)


def read_methods(value: object, path: str) -> tuple[str, ...]:
    items = read_list(value, path)
    methods = [
        read_pattern(v, f"{path}[{i}]", TOKEN_RE, "HTTP method").upper()
        for i, v in enumerate(items)
    ]
    return unique(methods, path)


def read_section(body: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    if key not in body:
        return {}
    return read_mapping(body[key], f"{path}.{key}")
