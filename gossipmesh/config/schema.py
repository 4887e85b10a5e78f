"""The config entities operators write, and their validation (docs/CONFIG.md is the spec).

Theory of operation
-------------------
An entity lives in the replicated document under ``KIND/NAME`` with a JSON/TOML-shaped body. This
module is the single gate between such a body and the rest of the mesh:

- ``validate_entity(kind, name, body)`` turns a body into a frozen dataclass with every default
  filled in, or raises ``ConfigValidationError(field, reason)`` where ``field`` is a dotted path
  such as ``route.destinations[0].weight``. Unknown fields are refused: a typo like ``weigth``
  must not silently become "weight 1".
- ``to_body(entity)`` gives the canonical body (every field explicit, JSON/msgpack-able), so
  ``validate_entity(kind, name, to_body(e)) == e`` for every valid entity.
- ``check_entry(key, body)`` is the validator the CRDT document takes by injection (the crdt core
  never imports this package): a remote delta whose value fails it is refused and counted.
- ``parse_agent_services(toml)`` reads the node-owned ``[[service]]`` tables of an agent file.

Everything here is pure: no I/O, no clock. Values that are not what the schema wants are never
coerced silently, with two deliberate normalisations that keep matching simple downstream: host
names and header names are lower-cased (both are case-insensitive on the wire) and HTTP methods are
upper-cased. Booleans are not accepted where integers are wanted (``True`` is an ``int`` in Python,
but ``weight = true`` is a mistake, not a weight of 1).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.errors import ConfigValidationError

KINDS = ("service", "route", "policy")
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


# ---------------------------------------------------------------------------------------------
# service/NAME


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    policy: Literal["round_robin", "least_request", "peak_ewma", "ring_hash"] = "least_request"
    hash_header: str = "x-request-id"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_ms: int = 1000
    request_ms: int = 15000
    per_try_ms: int = 5000
    idle_ms: int = 60000


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 2
    on_status: tuple[int, ...] = (502, 503, 504)
    on_connect_failure: bool = True
    budget_percent: int = 20
    budget_min_per_s: int = 10


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_failures: int = 5
    base_ejection_ms: int = 30000
    max_ejection_ms: int = 300000
    max_ejected_percent: int = 50


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    protocol: Literal["http", "tcp"] = "http"
    load_balancer: LoadBalancer = LoadBalancer()
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    outlier_detection: OutlierDetection = OutlierDetection()

    kind: Literal["service"] = field(default="service", init=False)


# ---------------------------------------------------------------------------------------------
# route/NAME


@dataclass(frozen=True, slots=True)
class PathMatch:
    """``exact`` and ``prefix`` compare strings; ``regex`` must match the whole path."""

    kind: Literal["exact", "prefix", "regex"] = "prefix"
    value: str = "/"
    # Compiled once here so the router never compiles on the request path. Excluded from equality:
    # it is derived from ``value``.
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Built by hand (tests, the simulator) without the compiled form: derive it.
        if self.kind == "regex" and self.regex is None:
            object.__setattr__(self, "regex", re.compile(self.value))

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """``name`` is lower-case. ``exact`` compares the value, ``regex`` full-matches it, ``present``
    only asks that the header exists (``value`` is then None)."""

    name: str
    kind: Literal["exact", "regex", "present"]
    value: str | None = None
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "regex" and self.regex is None and self.value is not None:
            object.__setattr__(self, "regex", re.compile(self.value))

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "exact":
            return value == self.value
        assert self.regex is not None
        return self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Destination:
    service: str
    weight: int = 1
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    destinations: tuple[Destination, ...]
    hosts: tuple[str, ...] = ()
    path: PathMatch = PathMatch()
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    priority: int = 0

    kind: Literal["route"] = field(default="route", init=False)


# ---------------------------------------------------------------------------------------------
# policy/NAME


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: str
    to: str
    action: Literal["allow", "deny"] = "allow"
    # ``from`` in the body; a Python keyword, hence the name.
    from_services: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    kind: Literal["policy"] = field(default="policy", init=False)


Entity = ServiceConfig | RouteConfig | PolicyConfig


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
    if NAME_RE.fullmatch(name) is None:
        raise ConfigValidationError(
            "key", f"name {name!r} must be 1-128 characters of [A-Za-z0-9._-]"
        )
    return kind, name


def entity_key(entity: Entity) -> str:
    return f"{entity.kind}/{entity.name}"


# ---------------------------------------------------------------------------------------------
# Field readers. Each takes the dotted path of the field so errors name it exactly.


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigValidationError(path, f"must be an object, got {_type_name(value)}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigValidationError(path, f"keys must be strings, got {_type_name(k)}")
    return value


def _reject_unknown(body: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    for k in body:
        if k not in allowed:
            where = f"{path}.{k}" if path else k
            raise ConfigValidationError(where, f"unknown field (allowed: {', '.join(allowed)})")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValidationError(path, f"must be an integer, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise ConfigValidationError(path, f"{value} is out of range {lo}-{hi}")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigValidationError(path, f"must be true or false, got {_type_name(value)}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigValidationError(path, f"must be a string, got {_type_name(value)}")
    return value


def _choice(value: object, path: str, choices: Sequence[str]) -> Any:
    text = _str(value, path)
    if text not in choices:
        raise ConfigValidationError(path, f"{text!r} is not one of {', '.join(choices)}")
    return text


def _pattern(value: object, path: str, regex: re.Pattern[str], what: str) -> str:
    text = _str(value, path)
    if regex.fullmatch(text) is None:
        raise ConfigValidationError(path, f"{text!r} is not a valid {what}")
    return text


def _list(value: object, path: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigValidationError(path, f"must be a list, got {_type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise ConfigValidationError(path, f"at most {MAX_LIST_ITEMS} items, got {len(value)}")
    return value


def _unique(items: Sequence[Any], path: str) -> tuple[Any, ...]:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        if item in seen:
            raise ConfigValidationError(f"{path}[{i}]", f"duplicate {item!r}")
        seen.add(item)
    return tuple(items)


def _regex(value: object, path: str) -> re.Pattern[str]:
    text = _str(value, path)
    if not text or len(text) > MAX_REGEX_CHARS:
        raise ConfigValidationError(path, f"regex must be 1-{MAX_REGEX_CHARS} characters")
    try:
        return re.compile(text)
    except (re.error, RecursionError, OverflowError) as e:
        raise ConfigValidationError(path, f"invalid regex: {e}") from None


def _url_path(value: object, path: str) -> str:
    text = _str(value, path)
    if not text.startswith("/"):
        raise ConfigValidationError(path, f"{text!r} must start with '/'")
    if len(text) > MAX_PATH_CHARS:
        raise ConfigValidationError(path, f"at most {MAX_PATH_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise ConfigValidationError(path, "must not contain whitespace or control characters")
    return text


def _name(value: object, path: str) -> str:
    return _pattern(value, path, NAME_RE, "name (1-128 characters of [A-Za-z0-9._-])")


def _names(value: object, path: str) -> tuple[str, ...]:
    items = _list(value, path)
    return _unique([_name(v, f"{path}[{i}]") for i, v in enumerate(items)], path)


def _methods(value: object, path: str) -> tuple[str, ...]:
    items = _list(value, path)
    methods = [
        _pattern(v, f"{path}[{i}]", TOKEN_RE, "HTTP method").upper() for i, v in enumerate(items)
    ]
    return _unique(methods, path)


def _section(body: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    if key not in body:
        return {}
    return _mapping(body[key], f"{path}.{key}")


# ---------------------------------------------------------------------------------------------
# Validation


def validate_entity(kind: str, name: str, body: Mapping[str, Any]) -> Entity:
    """Validate ``body`` as entity ``kind/name``; return it with every default filled in.

    Raises ConfigValidationError with the dotted field path (``route.destinations[0].weight``).
    """
    if kind not in KINDS:
        raise ConfigValidationError(
            "key", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
        )
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise ConfigValidationError(
            "key", f"name {name!r} must be 1-128 characters of [A-Za-z0-9._-]"
        )
    body = _mapping(body, kind)
    if kind == "service":
        return _service(name, body)
    if kind == "route":
        return _route(name, body)
    return _policy(name, body)


def validate_key(key: str, body: Mapping[str, Any]) -> Entity:
    """``validate_entity`` for a ``KIND/NAME`` key."""
    kind, name = parse_key(key)
    return validate_entity(kind, name, body)


def check_entry(key: str, body: object) -> None:
    """The validator the CRDT document takes by injection: raise ConfigValidationError or return."""
    kind, name = parse_key(key)
    validate_entity(kind, name, _mapping(body, kind))


def _service(name: str, body: Mapping[str, Any]) -> ServiceConfig:
    p = "service"
    _reject_unknown(
        body,
        ("protocol", "load_balancer", "timeouts", "retry", "circuit_breaker", "outlier_detection"),
        p,
    )
    protocol = _choice(body.get("protocol", "http"), f"{p}.protocol", ("http", "tcp"))

    lb_body = _section(body, "load_balancer", p)
    lp = f"{p}.load_balancer"
    _reject_unknown(lb_body, ("policy", "hash_header"), lp)
    lb = LoadBalancer(
        policy=_choice(
            lb_body.get("policy", "least_request"),
            f"{lp}.policy",
            ("round_robin", "least_request", "peak_ewma", "ring_hash"),
        ),
        hash_header=_pattern(
            lb_body.get("hash_header", "x-request-id"), f"{lp}.hash_header", TOKEN_RE, "header name"
        ).lower(),
    )

    t_body = _section(body, "timeouts", p)
    tp = f"{p}.timeouts"
    _reject_unknown(t_body, ("connect_ms", "request_ms", "per_try_ms", "idle_ms"), tp)
    d = Timeouts()
    timeouts = Timeouts(
        connect_ms=_int(
            t_body.get("connect_ms", d.connect_ms), f"{tp}.connect_ms", 1, MAX_TIMEOUT_MS
        ),
        request_ms=_int(
            t_body.get("request_ms", d.request_ms), f"{tp}.request_ms", 1, MAX_TIMEOUT_MS
        ),
        per_try_ms=_int(
            t_body.get("per_try_ms", d.per_try_ms), f"{tp}.per_try_ms", 1, MAX_TIMEOUT_MS
        ),
        idle_ms=_int(t_body.get("idle_ms", d.idle_ms), f"{tp}.idle_ms", 1, MAX_TIMEOUT_MS),
    )
    # A per-try timeout longer than the whole request could never fire; almost surely a mistake.
    if timeouts.per_try_ms > timeouts.request_ms:
        raise ConfigValidationError(
            f"{tp}.per_try_ms",
            f"{timeouts.per_try_ms} exceeds request_ms {timeouts.request_ms}",
        )

    r_body = _section(body, "retry", p)
    rp = f"{p}.retry"
    _reject_unknown(
        r_body,
        ("attempts", "on_status", "on_connect_failure", "budget_percent", "budget_min_per_s"),
        rp,
    )
    rd = Retry()
    statuses = _list(r_body.get("on_status", list(rd.on_status)), f"{rp}.on_status")
    retry = Retry(
        attempts=_int(r_body.get("attempts", rd.attempts), f"{rp}.attempts", 0, MAX_RETRY_ATTEMPTS),
        on_status=_unique(
            [_int(s, f"{rp}.on_status[{i}]", 100, 599) for i, s in enumerate(statuses)],
            f"{rp}.on_status",
        ),
        on_connect_failure=_bool(
            r_body.get("on_connect_failure", rd.on_connect_failure), f"{rp}.on_connect_failure"
        ),
        budget_percent=_int(
            r_body.get("budget_percent", rd.budget_percent), f"{rp}.budget_percent", 0, 100
        ),
        budget_min_per_s=_int(
            r_body.get("budget_min_per_s", rd.budget_min_per_s),
            f"{rp}.budget_min_per_s",
            0,
            MAX_LIMIT,
        ),
    )

    c_body = _section(body, "circuit_breaker", p)
    cp = f"{p}.circuit_breaker"
    _reject_unknown(c_body, ("max_connections", "max_pending", "max_requests"), cp)
    cd = CircuitBreaker()
    breaker = CircuitBreaker(
        max_connections=_int(
            c_body.get("max_connections", cd.max_connections), f"{cp}.max_connections", 1, MAX_LIMIT
        ),
        max_pending=_int(
            c_body.get("max_pending", cd.max_pending), f"{cp}.max_pending", 0, MAX_LIMIT
        ),
        max_requests=_int(
            c_body.get("max_requests", cd.max_requests), f"{cp}.max_requests", 1, MAX_LIMIT
        ),
    )

    o_body = _section(body, "outlier_detection", p)
    op = f"{p}.outlier_detection"
    _reject_unknown(
        o_body,
        ("consecutive_failures", "base_ejection_ms", "max_ejection_ms", "max_ejected_percent"),
        op,
    )
    od = OutlierDetection()
    outlier = OutlierDetection(
        consecutive_failures=_int(
            o_body.get("consecutive_failures", od.consecutive_failures),
            f"{op}.consecutive_failures",
            1,
            MAX_LIMIT,
        ),
        base_ejection_ms=_int(
            o_body.get("base_ejection_ms", od.base_ejection_ms),
            f"{op}.base_ejection_ms",
            1,
            MAX_TIMEOUT_MS,
        ),
        max_ejection_ms=_int(
            o_body.get("max_ejection_ms", od.max_ejection_ms),
            f"{op}.max_ejection_ms",
            1,
            MAX_TIMEOUT_MS,
        ),
        max_ejected_percent=_int(
            o_body.get("max_ejected_percent", od.max_ejected_percent),
            f"{op}.max_ejected_percent",
            0,
            100,
        ),
    )
    if outlier.max_ejection_ms < outlier.base_ejection_ms:
        raise ConfigValidationError(
            f"{op}.max_ejection_ms",
            f"{outlier.max_ejection_ms} is below base_ejection_ms {outlier.base_ejection_ms}",
        )
    return ServiceConfig(
        name=name,
        protocol=protocol,
        load_balancer=lb,
        timeouts=timeouts,
        retry=retry,
        circuit_breaker=breaker,
        outlier_detection=outlier,
    )


def _path_match(value: object, path: str) -> PathMatch:
    body = _mapping(value, path)
    _reject_unknown(body, ("exact", "prefix", "regex"), path)
    if len(body) != 1:
        raise ConfigValidationError(path, "must have exactly one of exact, prefix, regex")
    kind, raw = next(iter(body.items()))
    if kind == "regex":
        compiled = _regex(raw, f"{path}.regex")
        return PathMatch(kind="regex", value=compiled.pattern, regex=compiled)
    return PathMatch(
        kind="exact" if kind == "exact" else "prefix", value=_url_path(raw, f"{path}.{kind}")
    )


def _header_match(value: object, path: str) -> HeaderMatch:
    body = _mapping(value, path)
    _reject_unknown(body, ("name", "exact", "regex", "present"), path)
    if "name" not in body:
        raise ConfigValidationError(f"{path}.name", "required")
    name = _pattern(body["name"], f"{path}.name", TOKEN_RE, "header name").lower()
    modes = [k for k in ("exact", "regex", "present") if k in body]
    if len(modes) != 1:
        raise ConfigValidationError(path, "must have exactly one of exact, regex, present")
    mode = modes[0]
    if mode == "present":
        if _bool(body["present"], f"{path}.present") is not True:
            raise ConfigValidationError(f"{path}.present", "only `present: true` is supported")
        return HeaderMatch(name=name, kind="present")
    if mode == "regex":
        compiled = _regex(body["regex"], f"{path}.regex")
        return HeaderMatch(name=name, kind="regex", value=compiled.pattern, regex=compiled)
    exact = _str(body["exact"], f"{path}.exact")
    if len(exact) > MAX_HEADER_VALUE_CHARS:
        raise ConfigValidationError(f"{path}.exact", f"at most {MAX_HEADER_VALUE_CHARS} characters")
    return HeaderMatch(name=name, kind="exact", value=exact)


def _destination(value: object, path: str) -> Destination:
    body = _mapping(value, path)
    _reject_unknown(body, ("service", "weight", "tags"), path)
    if "service" not in body:
        raise ConfigValidationError(f"{path}.service", "required")
    tags = _list(body.get("tags", []), f"{path}.tags")
    return Destination(
        service=_name(body["service"], f"{path}.service"),
        weight=_int(body.get("weight", 1), f"{path}.weight", 0, MAX_WEIGHT),
        tags=_unique(
            [_pattern(t, f"{path}.tags[{i}]", TAG_RE, "tag") for i, t in enumerate(tags)],
            f"{path}.tags",
        ),
    )


def _route(name: str, body: Mapping[str, Any]) -> RouteConfig:
    p = "route"
    _reject_unknown(body, ("hosts", "path", "methods", "headers", "destinations", "priority"), p)
    hosts_raw = _list(body.get("hosts", []), f"{p}.hosts")
    hosts = _unique(
        [
            _pattern(_str(h, f"{p}.hosts[{i}]").lower(), f"{p}.hosts[{i}]", HOST_RE, "host name")
            for i, h in enumerate(hosts_raw)
        ],
        f"{p}.hosts",
    )
    path = _path_match(body["path"], f"{p}.path") if "path" in body else PathMatch()
    headers_raw = _list(body.get("headers", []), f"{p}.headers")
    headers = tuple(_header_match(h, f"{p}.headers[{i}]") for i, h in enumerate(headers_raw))
    if "destinations" not in body:
        raise ConfigValidationError(f"{p}.destinations", "required (at least one destination)")
    dests_raw = _list(body["destinations"], f"{p}.destinations")
    if not dests_raw:
        raise ConfigValidationError(f"{p}.destinations", "at least one destination is required")
    dests = tuple(_destination(d, f"{p}.destinations[{i}]") for i, d in enumerate(dests_raw))
    # All-zero weights would make the route match and then have nowhere to send the request.
    if sum(d.weight for d in dests) == 0:
        raise ConfigValidationError(f"{p}.destinations", "at least one weight must be above 0")
    return RouteConfig(
        name=name,
        hosts=hosts,
        path=path,
        methods=_methods(body.get("methods", []), f"{p}.methods"),
        headers=headers,
        destinations=dests,
        priority=_int(body.get("priority", 0), f"{p}.priority", -MAX_PRIORITY, MAX_PRIORITY),
    )


def _policy(name: str, body: Mapping[str, Any]) -> PolicyConfig:
    p = "policy"
    _reject_unknown(body, ("action", "to", "from", "methods", "paths"), p)
    if "to" not in body:
        raise ConfigValidationError(f"{p}.to", "required (the service this policy protects)")
    paths_raw = _list(body.get("paths", []), f"{p}.paths")
    return PolicyConfig(
        name=name,
        action=_choice(body.get("action", "allow"), f"{p}.action", ("allow", "deny")),
        to=_name(body["to"], f"{p}.to"),
        from_services=_names(body.get("from", []), f"{p}.from"),
        methods=_methods(body.get("methods", []), f"{p}.methods"),
        paths=_unique(
            [_url_path(x, f"{p}.paths[{i}]") for i, x in enumerate(paths_raw)], f"{p}.paths"
        ),
    )


# ---------------------------------------------------------------------------------------------
# Canonical bodies


def to_body(entity: Entity) -> dict[str, Any]:
    """The canonical body of ``entity``: every field explicit, only dicts, lists, str, int, bool.

    ``validate_entity(entity.kind, entity.name, to_body(entity)) == entity`` always holds.
    """
    if isinstance(entity, ServiceConfig):
        return {
            "protocol": entity.protocol,
            "load_balancer": {
                "policy": entity.load_balancer.policy,
                "hash_header": entity.load_balancer.hash_header,
            },
            "timeouts": {
                "connect_ms": entity.timeouts.connect_ms,
                "request_ms": entity.timeouts.request_ms,
                "per_try_ms": entity.timeouts.per_try_ms,
                "idle_ms": entity.timeouts.idle_ms,
            },
            "retry": {
                "attempts": entity.retry.attempts,
                "on_status": list(entity.retry.on_status),
                "on_connect_failure": entity.retry.on_connect_failure,
                "budget_percent": entity.retry.budget_percent,
                "budget_min_per_s": entity.retry.budget_min_per_s,
            },
            "circuit_breaker": {
                "max_connections": entity.circuit_breaker.max_connections,
                "max_pending": entity.circuit_breaker.max_pending,
                "max_requests": entity.circuit_breaker.max_requests,
            },
            "outlier_detection": {
                "consecutive_failures": entity.outlier_detection.consecutive_failures,
                "base_ejection_ms": entity.outlier_detection.base_ejection_ms,
                "max_ejection_ms": entity.outlier_detection.max_ejection_ms,
                "max_ejected_percent": entity.outlier_detection.max_ejected_percent,
            },
        }
    if isinstance(entity, RouteConfig):
        headers: list[dict[str, Any]] = []
        for h in entity.headers:
            if h.kind == "present":
                headers.append({"name": h.name, "present": True})
            else:
                headers.append({"name": h.name, h.kind: h.value})
        return {
            "hosts": list(entity.hosts),
            "path": {entity.path.kind: entity.path.value},
            "methods": list(entity.methods),
            "headers": headers,
            "destinations": [
                {"service": d.service, "weight": d.weight, "tags": list(d.tags)}
                for d in entity.destinations
            ],
            "priority": entity.priority,
        }
    if isinstance(entity, PolicyConfig):
        return {
            "action": entity.action,
            "to": entity.to,
            "from": list(entity.from_services),
            "methods": list(entity.methods),
            "paths": list(entity.paths),
        }
    raise TypeError(f"not an entity: {entity!r}")


# ---------------------------------------------------------------------------------------------
# Node-owned service instances: the agent file's [[service]] tables


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """``kind == "http"``: GET ``http_path`` on the instance, 2xx/3xx passes. ``kind == "tcp"``: a
    connect passes. A state flips after ``*_threshold`` consecutive results the other way."""

    kind: Literal["http", "tcp"]
    http_path: str | None = None
    interval_ms: int = 1000
    timeout_ms: int = 500
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2


@dataclass(frozen=True, slots=True)
class LocalService:
    name: str
    port: int
    address: str = "127.0.0.1"
    tags: tuple[str, ...] = ()
    weight: int = 1
    check: HealthCheck | None = None


_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration_ms(value: object, path: str) -> int:
    """``"1s"``, ``"500ms"``, ``"1m30s"``, ``"1.5s"`` or an integer count of milliseconds."""
    if isinstance(value, bool):
        raise ConfigValidationError(path, 'must be a duration like "1s" or "500ms"')
    if isinstance(value, int):
        return _int(value, path, 1, MAX_TIMEOUT_MS)
    text = _str(value, path).strip()
    total = 0.0
    pos = 0
    if not text:
        raise ConfigValidationError(path, 'must be a duration like "1s" or "500ms"')
    while pos < len(text):
        m = _DURATION_PART_RE.match(text, pos)
        if m is None:
            raise ConfigValidationError(path, f'{text!r} is not a duration like "1s" or "500ms"')
        total += float(m.group(1)) * _DURATION_UNIT_MS[m.group(2)]
        pos = m.end()
    ms = round(total)
    if not 1 <= ms <= MAX_TIMEOUT_MS:
        raise ConfigValidationError(path, f"{text!r} is out of range 1ms-24h")
    return ms


def _address(value: object, path: str) -> str:
    text = _str(value, path)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if HOST_RE.fullmatch(text.lower()) is None or text.startswith("*"):
        raise ConfigValidationError(path, f"{text!r} is not an IP address or host name")
    return text.lower()


def _check(value: object, path: str) -> HealthCheck:
    body = _mapping(value, path)
    _reject_unknown(
        body,
        ("http", "tcp", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"),
        path,
    )
    has_http = "http" in body
    has_tcp = "tcp" in body
    if has_http == has_tcp:
        raise ConfigValidationError(path, 'must have exactly one of http = "/path" or tcp = true')
    d = HealthCheck(kind="tcp")
    interval_ms = parse_duration_ms(body.get("interval", d.interval_ms), f"{path}.interval")
    timeout_ms = parse_duration_ms(body.get("timeout", d.timeout_ms), f"{path}.timeout")
    # A probe that may outlive its interval would overlap the next one.
    if timeout_ms > interval_ms:
        raise ConfigValidationError(
            f"{path}.timeout", f"{timeout_ms} ms exceeds interval {interval_ms} ms"
        )
    healthy = _int(
        body.get("healthy_threshold", d.healthy_threshold), f"{path}.healthy_threshold", 1, 100
    )
    unhealthy = _int(
        body.get("unhealthy_threshold", d.unhealthy_threshold),
        f"{path}.unhealthy_threshold",
        1,
        100,
    )
    if has_tcp:
        if _bool(body["tcp"], f"{path}.tcp") is not True:
            raise ConfigValidationError(f"{path}.tcp", "only `tcp = true` is supported")
        return HealthCheck("tcp", None, interval_ms, timeout_ms, healthy, unhealthy)
    return HealthCheck(
        "http", _url_path(body["http"], f"{path}.http"), interval_ms, timeout_ms, healthy, unhealthy
    )


def parse_agent_services(toml_dict: Mapping[str, Any]) -> tuple[LocalService, ...]:
    """Read the ``[[service]]`` tables of a parsed agent TOML file (other top-level keys belong to
    the agent and are ignored here). Field paths look like ``service[0].check.interval``."""
    doc = _mapping(toml_dict, "")
    tables = _list(doc.get("service", []), "service")
    out: list[LocalService] = []
    seen: set[tuple[str, int]] = set()
    for i, raw in enumerate(tables):
        p = f"service[{i}]"
        body = _mapping(raw, p)
        _reject_unknown(body, ("name", "port", "address", "tags", "weight", "check"), p)
        for req in ("name", "port"):
            if req not in body:
                raise ConfigValidationError(f"{p}.{req}", "required")
        tags = _list(body.get("tags", []), f"{p}.tags")
        svc = LocalService(
            name=_name(body["name"], f"{p}.name"),
            port=_int(body["port"], f"{p}.port", 1, 65535),
            address=_address(body.get("address", "127.0.0.1"), f"{p}.address"),
            tags=_unique(
                [_pattern(t, f"{p}.tags[{j}]", TAG_RE, "tag") for j, t in enumerate(tags)],
                f"{p}.tags",
            ),
            weight=_int(body.get("weight", 1), f"{p}.weight", 0, MAX_WEIGHT),
            check=_check(body["check"], f"{p}.check") if "check" in body else None,
        )
        ident = (svc.address, svc.port)
        if ident in seen:
            raise ConfigValidationError(p, f"another service already uses {svc.address}:{svc.port}")
        seen.add(ident)
        out.append(svc)
    return tuple(out)
