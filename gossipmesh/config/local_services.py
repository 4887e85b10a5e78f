"""Node-owned service instances: the ``[[service]]`` tables of an agent file, with their health
checks. Only the owning agent reads these; they travel as signed node records, not in the
replicated config document."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gossipmesh.config.fields import (
    GRPC_SERVICE_RE,
    HOST_RE,
    MAX_TIMEOUT_MS,
    MAX_WEIGHT,
    TAG_RE,
    read_bool,
    read_int,
    read_list,
    read_mapping,
    read_name,
    read_pattern,
    read_str,
    read_url_path,
    reject_unknown,
    unique,
)
from gossipmesh.errors import ConfigValidationError


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """``kind == "http"``: GET ``http_path`` on the instance, 2xx/3xx passes. ``kind == "tcp"``: a
    connect passes. ``kind == "grpc"``: ``grpc.health.v1.Health/Check`` for ``grpc_service``
    ("": the server as a whole) answers SERVING. A state flips after ``*_threshold`` consecutive
    results the other way."""

    kind: Literal["http", "tcp", "grpc"]
    http_path: str | None = None
    interval_ms: int = 1000
    timeout_ms: int = 500
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    grpc_service: str = ""


@dataclass(frozen=True, slots=True)
class LocalService:
    name: str
    port: int
    address: str = "127.0.0.1"
    tags: tuple[str, ...] = ()
    weight: int = 1
    check: HealthCheck | None = None
    # "HOST:PORT" of an outbound listener whose requests present this service's identity on
    # the mesh hop (agent/workloads.py); None: the agent's shared outbound listener.
    outbound: str | None = None


_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration_ms(value: object, path: str) -> int:
    """``"1s"``, ``"500ms"``, ``"1m30s"``, ``"1.5s"`` or an integer count of milliseconds."""
    if isinstance(value, bool):
        raise ConfigValidationError(path, 'must be a duration like "1s" or "500ms"')
    if isinstance(value, int):
        return read_int(value, path, 1, MAX_TIMEOUT_MS)
    text = read_str(value, path).strip()
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


def read_address(value: object, path: str) -> str:
    text = read_str(value, path)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if HOST_RE.fullmatch(text.lower()) is None or text.startswith("*"):
        raise ConfigValidationError(path, f"{text!r} is not an IP address or host name")
    return text.lower()


def read_check(value: object, path: str) -> HealthCheck:
    body = read_mapping(value, path)
    reject_unknown(
        body,
        ("http", "tcp", "grpc", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"),
        path,
    )
    has_tcp = "tcp" in body
    if sum(k in body for k in ("http", "tcp", "grpc")) != 1:
        raise ConfigValidationError(
            path, 'must have exactly one of http = "/path", tcp = true or grpc = "service"'
        )
    d = HealthCheck(kind="tcp")
    interval_ms = parse_duration_ms(body.get("interval", d.interval_ms), f"{path}.interval")
    timeout_ms = parse_duration_ms(body.get("timeout", d.timeout_ms), f"{path}.timeout")
    # A probe that may outlive its interval would overlap the next one.
    if timeout_ms > interval_ms:
        raise ConfigValidationError(
            f"{path}.timeout", f"{timeout_ms} ms exceeds interval {interval_ms} ms"
        )
    healthy = read_int(
        body.get("healthy_threshold", d.healthy_threshold), f"{path}.healthy_threshold", 1, 100
    )
    unhealthy = read_int(
        body.get("unhealthy_threshold", d.unhealthy_threshold),
        f"{path}.unhealthy_threshold",
        1,
        100,
    )
    if "grpc" in body:
        name = read_str(body["grpc"], f"{path}.grpc")
        if name and GRPC_SERVICE_RE.fullmatch(name) is None:
            raise ConfigValidationError(f"{path}.grpc", "not a gRPC service name (pkg.Service)")
        return HealthCheck("grpc", None, interval_ms, timeout_ms, healthy, unhealthy, name)
    if has_tcp:
        if read_bool(body["tcp"], f"{path}.tcp") is not True:
            raise ConfigValidationError(f"{path}.tcp", "only `tcp = true` is supported")
        return HealthCheck("tcp", None, interval_ms, timeout_ms, healthy, unhealthy)
    return HealthCheck(
        "http",
        read_url_path(body["http"], f"{path}.http"),
        interval_ms,
        timeout_ms,
        healthy,
        unhealthy,
    )


def parse_agent_services(toml_dict: Mapping[str, Any]) -> tuple[LocalService, ...]:
    """Read the ``[[service]]`` tables of a parsed agent TOML file (other top-level keys belong to
    the agent and are ignored here). Field paths look like ``service[0].check.interval``."""
    doc = read_mapping(toml_dict, "")
    tables = read_list(doc.get("service", []), "service")
    out: list[LocalService] = []
    seen: set[tuple[str, int]] = set()
    for i, raw in enumerate(tables):
        p = f"service[{i}]"
        body = read_mapping(raw, p)
        reject_unknown(body, ("name", "port", "address", "tags", "weight", "check", "outbound"), p)
        for req in ("name", "port"):
            if req not in body:
                raise ConfigValidationError(f"{p}.{req}", "required")
        tags = read_list(body.get("tags", []), f"{p}.tags")
        svc = LocalService(
            name=read_name(body["name"], f"{p}.name"),
            port=read_int(body["port"], f"{p}.port", 1, 65535),
            address=read_address(body.get("address", "127.0.0.1"), f"{p}.address"),
            tags=unique(
                [read_pattern(t, f"{p}.tags[{j}]", TAG_RE, "tag") for j, t in enumerate(tags)],
                f"{p}.tags",
            ),
            weight=read_int(body.get("weight", 1), f"{p}.weight", 0, MAX_WEIGHT),
            check=read_check(body["check"], f"{p}.check") if "check" in body else None,
            outbound=read_str(body["outbound"], f"{p}.outbound") if "outbound" in body else None,
        )
        ident = (svc.address, svc.port)
        if ident in seen:
            raise ConfigValidationError(p, f"another service already uses {svc.address}:{svc.port}")
        seen.add(ident)
        out.append(svc)
    return tuple(out)
