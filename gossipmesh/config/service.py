"""``service/NAME``: how the mesh talks to a service (protocol, balancing, timeouts, retries,
circuit breaking, outlier detection), who may serve it (``nodes``, ``weight_max``), its defaults,
validation and canonical body.

``nodes`` lists the node names (or ``fnmatch`` patterns such as ``api-*``) allowed to register
instances of the service; empty means any node. ``weight_max`` caps an instance's weight (default
100). The catalog ignores, counts and shows instances that break either (``agent/catalog.py``):
a node can only take the traffic the operators let it take.

``default_policy`` (``allow``, the default, or ``deny``) is what the destination's inbound proxy
answers a caller that no ``policy/`` entity denies or allows (docs/SECURITY.md)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import (
    MAX_LIMIT,
    MAX_RETRY_ATTEMPTS,
    MAX_TIMEOUT_MS,
    MAX_WEIGHT,
    TOKEN_RE,
    read_bool,
    read_choice,
    read_int,
    read_list,
    read_pattern,
    read_section,
    reject_unknown,
    unique,
)
from gossipmesh.errors import ConfigValidationError


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
    on_grpc_status: tuple[int, ...] = (14,)  # UNAVAILABLE
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


DEFAULT_WEIGHT_MAX = 100
NODE_PATTERN_RE = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,128}")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    protocol: Literal["http", "tcp"] = "http"
    load_balancer: LoadBalancer = LoadBalancer()
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    outlier_detection: OutlierDetection = OutlierDetection()
    nodes: tuple[str, ...] = ()  # node names or fnmatch patterns; empty: any node
    weight_max: int = DEFAULT_WEIGHT_MAX
    # A caller no policy/ entity matches is allowed or denied (issue 12).
    default_policy: Literal["allow", "deny"] = "allow"

    kind: Literal["service"] = field(default="service", init=False)


def parse_service(name: str, body: Mapping[str, Any]) -> ServiceConfig:
    p = "service"
    reject_unknown(
        body,
        ("protocol", "load_balancer", "timeouts", "retry", "circuit_breaker", "outlier_detection",
         "nodes", "weight_max", "default_policy"),
        p,
    )  # fmt: skip
    default_policy = read_choice(
        body.get("default_policy", "allow"), f"{p}.default_policy", ("allow", "deny")
    )
    patterns = read_list(body.get("nodes", []), f"{p}.nodes")
    nodes = unique([read_pattern(n, f"{p}.nodes[{i}]", NODE_PATTERN_RE,
                                 "node name or pattern (1-128 of [A-Za-z0-9._-] and *?[]!)")
                    for i, n in enumerate(patterns)], f"{p}.nodes")  # fmt: skip
    weight_max = read_int(body.get("weight_max", DEFAULT_WEIGHT_MAX), f"{p}.weight_max", 0,
                          MAX_WEIGHT)  # fmt: skip
    protocol = read_choice(body.get("protocol", "http"), f"{p}.protocol", ("http", "tcp"))

    lb_body = read_section(body, "load_balancer", p)
    lp = f"{p}.load_balancer"
    reject_unknown(lb_body, ("policy", "hash_header"), lp)
    lb = LoadBalancer(
        policy=read_choice(
            lb_body.get("policy", "least_request"),
            f"{lp}.policy",
            ("round_robin", "least_request", "peak_ewma", "ring_hash"),
        ),
        hash_header=read_pattern(
            lb_body.get("hash_header", "x-request-id"), f"{lp}.hash_header", TOKEN_RE, "header name"
        ).lower(),
    )

    t_body = read_section(body, "timeouts", p)
    tp = f"{p}.timeouts"
    reject_unknown(t_body, ("connect_ms", "request_ms", "per_try_ms", "idle_ms"), tp)
    d = Timeouts()
    timeouts = Timeouts(
        connect_ms=read_int(
            t_body.get("connect_ms", d.connect_ms), f"{tp}.connect_ms", 1, MAX_TIMEOUT_MS
        ),
        request_ms=read_int(
            t_body.get("request_ms", d.request_ms), f"{tp}.request_ms", 1, MAX_TIMEOUT_MS
        ),
        per_try_ms=read_int(
            t_body.get("per_try_ms", d.per_try_ms), f"{tp}.per_try_ms", 1, MAX_TIMEOUT_MS
        ),
        idle_ms=read_int(t_body.get("idle_ms", d.idle_ms), f"{tp}.idle_ms", 1, MAX_TIMEOUT_MS),
    )
    # A per-try timeout longer than the whole request could never fire; almost surely a mistake.
    if timeouts.per_try_ms > timeouts.request_ms:
        raise ConfigValidationError(
            f"{tp}.per_try_ms",
            f"{timeouts.per_try_ms} exceeds request_ms {timeouts.request_ms}",
        )

    r_body = read_section(body, "retry", p)
    rp = f"{p}.retry"
    reject_unknown(
        r_body,
        (
            "attempts",
            "on_status",
            "on_grpc_status",
            "on_connect_failure",
            "budget_percent",
            "budget_min_per_s",
        ),  # fmt: skip
        rp,
    )
    rd = Retry()
    statuses = read_list(r_body.get("on_status", list(rd.on_status)), f"{rp}.on_status")
    grpc_codes = read_list(
        r_body.get("on_grpc_status", list(rd.on_grpc_status)), f"{rp}.on_grpc_status"
    )
    retry = Retry(
        attempts=read_int(
            r_body.get("attempts", rd.attempts), f"{rp}.attempts", 0, MAX_RETRY_ATTEMPTS
        ),
        on_status=unique(
            [read_int(s, f"{rp}.on_status[{i}]", 100, 599) for i, s in enumerate(statuses)],
            f"{rp}.on_status",
        ),
        # gRPC status codes are 0..16 (OK is never a failure to retry).
        on_grpc_status=unique(
            [read_int(c, f"{rp}.on_grpc_status[{i}]", 1, 16) for i, c in enumerate(grpc_codes)],
            f"{rp}.on_grpc_status",
        ),
        on_connect_failure=read_bool(
            r_body.get("on_connect_failure", rd.on_connect_failure), f"{rp}.on_connect_failure"
        ),
        budget_percent=read_int(
            r_body.get("budget_percent", rd.budget_percent), f"{rp}.budget_percent", 0, 100
        ),
        budget_min_per_s=read_int(
            r_body.get("budget_min_per_s", rd.budget_min_per_s),
            f"{rp}.budget_min_per_s",
            0,
            MAX_LIMIT,
        ),
    )

    c_body = read_section(body, "circuit_breaker", p)
    cp = f"{p}.circuit_breaker"
    reject_unknown(c_body, ("max_connections", "max_pending", "max_requests"), cp)
    cd = CircuitBreaker()
    breaker = CircuitBreaker(
        max_connections=read_int(
            c_body.get("max_connections", cd.max_connections), f"{cp}.max_connections", 1, MAX_LIMIT
        ),
        max_pending=read_int(
            c_body.get("max_pending", cd.max_pending), f"{cp}.max_pending", 0, MAX_LIMIT
        ),
        max_requests=read_int(
            c_body.get("max_requests", cd.max_requests), f"{cp}.max_requests", 1, MAX_LIMIT
        ),
    )

    o_body = read_section(body, "outlier_detection", p)
    op = f"{p}.outlier_detection"
    reject_unknown(
        o_body,
        ("consecutive_failures", "base_ejection_ms", "max_ejection_ms", "max_ejected_percent"),
        op,
    )
    od = OutlierDetection()
    outlier = OutlierDetection(
        consecutive_failures=read_int(
            o_body.get("consecutive_failures", od.consecutive_failures),
            f"{op}.consecutive_failures",
            1,
            MAX_LIMIT,
        ),
        base_ejection_ms=read_int(
            o_body.get("base_ejection_ms", od.base_ejection_ms),
            f"{op}.base_ejection_ms",
            1,
            MAX_TIMEOUT_MS,
        ),
        max_ejection_ms=read_int(
            o_body.get("max_ejection_ms", od.max_ejection_ms),
            f"{op}.max_ejection_ms",
            1,
            MAX_TIMEOUT_MS,
        ),
        max_ejected_percent=read_int(
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
        nodes=nodes,
        weight_max=weight_max,
        default_policy=default_policy,
    )


def allows(service: ServiceConfig, node: str, weight: int) -> str | None:
    """Why ``node`` may not serve ``service`` with ``weight`` (a short reason), or None."""
    if service.nodes and not any(fnmatch.fnmatchcase(node, p) for p in service.nodes):
        return f"node {node} is not in service/{service.name} nodes"
    if weight > service.weight_max:
        return f"weight {weight} is above service/{service.name} weight_max {service.weight_max}"
    return None


def service_body(entity: ServiceConfig) -> dict[str, Any]:
    """The canonical body of a service entity (every field explicit)."""
    return {
        "nodes": list(entity.nodes),
        "weight_max": entity.weight_max,
        "default_policy": entity.default_policy,
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
            "on_grpc_status": list(entity.retry.on_grpc_status),
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
