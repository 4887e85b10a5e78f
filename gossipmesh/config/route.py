"""``route/NAME``: which requests a route matches (hosts, path, methods, headers) and the
weighted destinations it sends them to; validation and canonical body.

``grpc: {service, method}`` is a readable way to write the path of gRPC calls: it stands for
the exact path ``/SERVICE/METHOD`` (or the prefix ``/SERVICE/`` without a method), so the router
needs nothing new; a route has ``path`` or ``grpc``, never both, and its canonical body keeps
the form it was written in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import (
    GRPC_METHOD_RE,
    GRPC_SERVICE_RE,
    HOST_RE,
    MAX_HEADER_VALUE_CHARS,
    MAX_PRIORITY,
    MAX_WEIGHT,
    TAG_RE,
    TOKEN_RE,
    read_bool,
    read_int,
    read_list,
    read_mapping,
    read_methods,
    read_name,
    read_pattern,
    read_regex,
    read_str,
    read_url_path,
    reject_unknown,
    unique,
)
from gossipmesh.config.regex import Regex, compile_regex
from gossipmesh.config.shift import Shift, read_shift, shift_body
from gossipmesh.errors import ConfigValidationError


@dataclass(frozen=True, slots=True)
class PathMatch:
    """``exact`` and ``prefix`` compare strings; ``regex`` must match the whole path."""

    kind: Literal["exact", "prefix", "regex"] = "prefix"
    value: str = "/"
    # Compiled once here so the router never compiles on the request path. Excluded from equality:
    # it is derived from ``value``.
    regex: Regex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Built by hand (tests, the simulator) without the compiled form: derive it.
        if self.kind == "regex" and self.regex is None:
            object.__setattr__(self, "regex", compile_regex(self.value))

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
    regex: Regex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "regex" and self.regex is None and self.value is not None:
            object.__setattr__(self, "regex", compile_regex(self.value))

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "exact":
            return value == self.value
        assert self.regex is not None
        return self.regex.fullmatch(value) is not None


MAX_GRPC_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class GrpcMatch:
    """gRPC calls to ``service`` (its full name, ``pkg.Service``), only ``method`` if given."""

    service: str
    method: str = ""

    def path(self) -> PathMatch:
        if self.method:
            return PathMatch(kind="exact", value=f"/{self.service}/{self.method}")
        return PathMatch(kind="prefix", value=f"/{self.service}/")


@dataclass(frozen=True, slots=True)
class Destination:
    service: str
    weight: int = 1
    tags: tuple[str, ...] = ()
    shift: Shift | None = None  # the weight follows this schedule instead (config/shift.py)

    def weight_at(self, wall_ms: int | None) -> int:
        """The weight in force at ``wall_ms`` (``weight`` without a shift or without a time)."""
        if self.shift is None or wall_ms is None:
            return self.weight
        return self.shift.weight_at(wall_ms)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    destinations: tuple[Destination, ...]
    hosts: tuple[str, ...] = ()
    path: PathMatch = PathMatch()
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    priority: int = 0
    grpc: GrpcMatch | None = None  # written as ``grpc``: ``path`` is derived from it

    kind: Literal["route"] = field(default="route", init=False)


def read_path_match(value: object, path: str) -> PathMatch:
    body = read_mapping(value, path)
    reject_unknown(body, ("exact", "prefix", "regex"), path)
    if len(body) != 1:
        raise ConfigValidationError(path, "must have exactly one of exact, prefix, regex")
    kind, raw = next(iter(body.items()))
    if kind == "regex":
        compiled = read_regex(raw, f"{path}.regex")
        return PathMatch(kind="regex", value=compiled.pattern, regex=compiled)
    return PathMatch(
        kind="exact" if kind == "exact" else "prefix", value=read_url_path(raw, f"{path}.{kind}")
    )


def read_grpc_match(value: object, path: str) -> GrpcMatch:
    body = read_mapping(value, path)
    reject_unknown(body, ("service", "method"), path)
    if "service" not in body:
        raise ConfigValidationError(f"{path}.service", "required")
    names = []
    for key, pattern, what in (
        ("service", GRPC_SERVICE_RE, "gRPC service name (pkg.Service)"),
        ("method", GRPC_METHOD_RE, "gRPC method name"),
    ):
        if key not in body or (key == "method" and body[key] == ""):
            names.append("")  # no method: every method of the service
            continue
        raw = read_str(body[key], f"{path}.{key}")
        if len(raw) > MAX_GRPC_NAME_CHARS:
            raise ConfigValidationError(
                f"{path}.{key}", f"at most {MAX_GRPC_NAME_CHARS} characters"
            )
        names.append(read_pattern(raw, f"{path}.{key}", pattern, what))
    return GrpcMatch(service=names[0], method=names[1])


def read_header_match(value: object, path: str) -> HeaderMatch:
    body = read_mapping(value, path)
    reject_unknown(body, ("name", "exact", "regex", "present"), path)
    if "name" not in body:
        raise ConfigValidationError(f"{path}.name", "required")
    name = read_pattern(body["name"], f"{path}.name", TOKEN_RE, "header name").lower()
    modes = [k for k in ("exact", "regex", "present") if k in body]
    if len(modes) != 1:
        raise ConfigValidationError(path, "must have exactly one of exact, regex, present")
    mode = modes[0]
    if mode == "present":
        if read_bool(body["present"], f"{path}.present") is not True:
            raise ConfigValidationError(f"{path}.present", "only `present: true` is supported")
        return HeaderMatch(name=name, kind="present")
    if mode == "regex":
        compiled = read_regex(body["regex"], f"{path}.regex")
        return HeaderMatch(name=name, kind="regex", value=compiled.pattern, regex=compiled)
    exact = read_str(body["exact"], f"{path}.exact")
    if len(exact) > MAX_HEADER_VALUE_CHARS:
        raise ConfigValidationError(f"{path}.exact", f"at most {MAX_HEADER_VALUE_CHARS} characters")
    return HeaderMatch(name=name, kind="exact", value=exact)


def read_destination(value: object, path: str) -> Destination:
    body = read_mapping(value, path)
    reject_unknown(body, ("service", "weight", "tags", "shift"), path)
    if "service" not in body:
        raise ConfigValidationError(f"{path}.service", "required")
    tags = read_list(body.get("tags", []), f"{path}.tags")
    shift = read_shift(body["shift"], f"{path}.shift", MAX_WEIGHT) if "shift" in body else None
    return Destination(
        shift=shift,
        service=read_name(body["service"], f"{path}.service"),
        weight=read_int(body.get("weight", 1), f"{path}.weight", 0, MAX_WEIGHT),
        tags=unique(
            [read_pattern(t, f"{path}.tags[{i}]", TAG_RE, "tag") for i, t in enumerate(tags)],
            f"{path}.tags",
        ),
    )


def parse_route(name: str, body: Mapping[str, Any]) -> RouteConfig:
    p = "route"
    reject_unknown(
        body, ("hosts", "path", "grpc", "methods", "headers", "destinations", "priority"), p
    )
    hosts_raw = read_list(body.get("hosts", []), f"{p}.hosts")
    hosts = unique(
        [
            read_pattern(
                read_str(h, f"{p}.hosts[{i}]").lower(), f"{p}.hosts[{i}]", HOST_RE, "host name"
            )
            for i, h in enumerate(hosts_raw)
        ],
        f"{p}.hosts",
    )
    path = read_path_match(body["path"], f"{p}.path") if "path" in body else PathMatch()
    grpc = None
    if "grpc" in body:
        if "path" in body:
            raise ConfigValidationError(f"{p}.grpc", "a route has path or grpc, not both")
        grpc = read_grpc_match(body["grpc"], f"{p}.grpc")
        path = grpc.path()
    headers_raw = read_list(body.get("headers", []), f"{p}.headers")
    headers = tuple(read_header_match(h, f"{p}.headers[{i}]") for i, h in enumerate(headers_raw))
    if "destinations" not in body:
        raise ConfigValidationError(f"{p}.destinations", "required (at least one destination)")
    dests_raw = read_list(body["destinations"], f"{p}.destinations")
    if not dests_raw:
        raise ConfigValidationError(f"{p}.destinations", "at least one destination is required")
    dests = tuple(read_destination(d, f"{p}.destinations[{i}]") for i, d in enumerate(dests_raw))
    # All-zero weights would make the route match and then have nowhere to send the request;
    # with shifts, at no step of any of them.
    times: list[int | None] = [None]
    for d in dests:
        if d.shift is not None:
            times += d.shift.change_points()
    if len(times) > 1:
        times = times[1:]
    for t in times:
        if sum(d.weight_at(t) for d in dests) == 0:
            when = "" if t is None else f" (all weights are 0 at {t} ms)"
            raise ConfigValidationError(
                f"{p}.destinations", f"at least one weight must be above 0{when}"
            )
    return RouteConfig(
        name=name,
        hosts=hosts,
        path=path,
        methods=read_methods(body.get("methods", []), f"{p}.methods"),
        headers=headers,
        destinations=dests,
        priority=read_int(body.get("priority", 0), f"{p}.priority", -MAX_PRIORITY, MAX_PRIORITY),
        grpc=grpc,
    )


def route_body(entity: RouteConfig) -> dict[str, Any]:
    """The canonical body of a route entity (every field explicit)."""
    headers: list[dict[str, Any]] = []
    for h in entity.headers:
        if h.kind == "present":
            headers.append({"name": h.name, "present": True})
        else:
            headers.append({"name": h.name, h.kind: h.value})
    body: dict[str, Any] = {"hosts": list(entity.hosts)}
    if entity.grpc is not None:
        body["grpc"] = {"service": entity.grpc.service, "method": entity.grpc.method}
    else:
        body["path"] = {entity.path.kind: entity.path.value}
    body.update(
        methods=list(entity.methods),
        headers=headers,
        destinations=[_destination_body(d) for d in entity.destinations],
        priority=entity.priority,
    )
    return body


def _destination_body(d: Destination) -> dict[str, Any]:
    body: dict[str, Any] = {"service": d.service, "weight": d.weight, "tags": list(d.tags)}
    if d.shift is not None:
        body["shift"] = shift_body(d.shift)
    return body
