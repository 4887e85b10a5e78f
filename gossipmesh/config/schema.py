"""The config entities operators write, and their validation (docs/CONFIG.md is the spec).

Theory of operation
-------------------
An entity lives in the replicated document under ``KIND/NAME`` with a JSON/TOML-shaped body. This
module is the single gate between such a body and the rest of the mesh, and the one name callers
import (every public name of the files below is re-exported here):

- ``validate_entity(kind, name, body)`` turns a body into a frozen dataclass with every default
  filled in, or raises ``ConfigValidationError(field, reason)`` where ``field`` is a dotted path
  such as ``route.destinations[0].weight``. Unknown fields are refused: a typo like ``weigth``
  must not silently become "weight 1".
- ``to_body(entity)`` gives the canonical body (every field explicit, JSON/msgpack-able), so
  ``validate_entity(kind, name, to_body(e)) == e`` for every valid entity.
- ``check_entry(key, body)`` is the validator the CRDT document takes by injection (the crdt core
  never imports this package): a remote delta whose value fails it is refused and counted.
- ``parse_agent_services(toml)`` reads the node-owned ``[[service]]`` tables of an agent file.

One file per concern: ``service.py``, ``route.py``, ``policy.py`` and ``telemetry.py`` hold each kind's dataclasses,
validation and canonical body; ``fields.py`` the shared field readers and limits;
``local_services.py`` the agent file's ``[[service]]`` tables; this file the keys and the entry
points that dispatch on the kind.

Everything here is pure: no I/O, no clock. Values that are not what the schema wants are never
coerced silently, with two deliberate normalisations that keep matching simple downstream: host
names and header names are lower-cased (both are case-insensitive on the wire) and HTTP methods are
upper-cased. Booleans are not accepted where integers are wanted (``True`` is an ``int`` in Python,
but ``weight = true`` is a mistake, not a weight of 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossipmesh.config.fields import (
    HOST_RE,
    MAX_HEADER_VALUE_CHARS,
    MAX_LIMIT,
    MAX_LIST_ITEMS,
    MAX_PATH_CHARS,
    MAX_PRIORITY,
    MAX_REGEX_CHARS,
    MAX_RETRY_ATTEMPTS,
    MAX_TIMEOUT_MS,
    MAX_WEIGHT,
    NAME_RE,
    TAG_RE,
    TOKEN_RE,
    read_mapping,
)
from gossipmesh.config.local_services import (
    HealthCheck,
    LocalService,
    parse_agent_services,
    parse_duration_ms,
)
from gossipmesh.config.policy import PolicyConfig, parse_policy, policy_body
from gossipmesh.config.route import (
    Destination,
    GrpcMatch,
    HeaderMatch,
    PathMatch,
    RouteConfig,
    parse_route,
    route_body,
)
from gossipmesh.config.service import (
    CircuitBreaker,
    LoadBalancer,
    OutlierDetection,
    Retry,
    ServiceConfig,
    Timeouts,
    parse_service,
    service_body,
)
from gossipmesh.config.telemetry import TelemetryConfig, parse_telemetry, telemetry_body
from gossipmesh.config.trust import (
    CertEntry,
    Revocation,
    RootStatement,
    cert_body,
    parse_cert,
    parse_revocation,
    parse_trust,
    revocation_body,
    trust_body,
)
from gossipmesh.errors import ConfigValidationError

__all__ = [
    "AUTHORITY_KINDS",
    "HOST_RE",
    "KINDS",
    "MAX_HEADER_VALUE_CHARS",
    "MAX_LIMIT",
    "MAX_LIST_ITEMS",
    "MAX_PATH_CHARS",
    "MAX_PRIORITY",
    "MAX_REGEX_CHARS",
    "MAX_RETRY_ATTEMPTS",
    "MAX_TIMEOUT_MS",
    "MAX_WEIGHT",
    "NAME_RE",
    "TAG_RE",
    "TOKEN_RE",
    "CertEntry",
    "CircuitBreaker",
    "Destination",
    "Entity",
    "HeaderMatch",
    "HealthCheck",
    "GrpcMatch",
    "LoadBalancer",
    "LocalService",
    "OutlierDetection",
    "PathMatch",
    "PolicyConfig",
    "Retry",
    "Revocation",
    "RootStatement",
    "RouteConfig",
    "ServiceConfig",
    "TelemetryConfig",
    "Timeouts",
    "check_entry",
    "entity_key",
    "parse_agent_services",
    "parse_duration_ms",
    "parse_key",
    "to_body",
    "validate_entity",
    "validate_key",
]

KINDS = ("service", "route", "policy", "cert", "revocation", "trust", "telemetry")
# The kinds that decide who may sign what (config/trust.py); the rest configure the data plane.
AUTHORITY_KINDS = ("cert", "revocation", "trust")

Entity = (
    ServiceConfig
    | RouteConfig
    | PolicyConfig
    | CertEntry
    | Revocation
    | RootStatement
    | TelemetryConfig
)


# ---------------------------------------------------------------------------------------------
# Keys


def parse_key(key: str) -> tuple[str, str]:
    """``"route/web"`` → ``("route", "web")``; raise ConfigValidationError(field="key") if bad."""
    if not isinstance(key, str):
        raise ConfigValidationError("key", "must be a string KIND/NAME")
    kind, sep, name = key.partition("/")
    if not sep:
        raise ConfigValidationError("key", f"{key!r} is not KIND/NAME")
    if kind not in KINDS:
        raise ConfigValidationError(
            "key", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
        )
    _check_name(kind, name)
    return kind, name


def _check_name(kind: str, name: object) -> None:
    if kind == "trust" and isinstance(name, str) and name.startswith("root/"):
        name = name[len("root/") :]  # trust/root/FP: the fingerprint is checked with the body
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise ConfigValidationError(
            "key", f"name {name!r} must be 1-128 characters of [A-Za-z0-9._-]"
        )


def entity_key(entity: Entity) -> str:
    return f"{entity.kind}/{entity.name}"


# ---------------------------------------------------------------------------------------------
# Validation and canonical bodies, dispatched on the kind


def validate_entity(kind: str, name: str, body: Mapping[str, Any]) -> Entity:
    """Validate ``body`` as entity ``kind/name``; return it with every default filled in.

    Raises ConfigValidationError with the dotted field path (``route.destinations[0].weight``).
    """
    if kind not in KINDS:
        raise ConfigValidationError(
            "key", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
        )
    _check_name(kind, name)
    body = read_mapping(body, kind)
    if kind == "service":
        return parse_service(name, body)
    if kind == "route":
        return parse_route(name, body)
    if kind == "policy":
        return parse_policy(name, body)
    if kind == "cert":
        return parse_cert(name, body)
    if kind == "revocation":
        return parse_revocation(name, body)
    if kind == "telemetry":
        return parse_telemetry(name, body)
    return parse_trust(name, body)


def validate_key(key: str, body: Mapping[str, Any]) -> Entity:
    """``validate_entity`` for a ``KIND/NAME`` key."""
    kind, name = parse_key(key)
    return validate_entity(kind, name, body)


def check_entry(key: str, body: object) -> None:
    """The validator the CRDT document takes by injection: raise ConfigValidationError or return."""
    kind, name = parse_key(key)
    validate_entity(kind, name, read_mapping(body, kind))


def to_body(entity: Entity) -> dict[str, Any]:
    """The canonical body of ``entity``: every field explicit, only dicts, lists, str, int, bool.

    ``validate_entity(entity.kind, entity.name, to_body(entity)) == entity`` always holds.
    """
    if isinstance(entity, ServiceConfig):
        return service_body(entity)
    if isinstance(entity, RouteConfig):
        return route_body(entity)
    if isinstance(entity, PolicyConfig):
        return policy_body(entity)
    if isinstance(entity, CertEntry):
        return cert_body(entity)
    if isinstance(entity, Revocation):
        return revocation_body(entity)
    if isinstance(entity, RootStatement):
        return trust_body(entity)
    if isinstance(entity, TelemetryConfig):
        return telemetry_body(entity)
    raise TypeError(f"not an entity: {entity!r}")
