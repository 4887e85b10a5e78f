"""``policy/NAME``: which callers may reach a service (allow or deny by caller, method, path);
validation and canonical body.

``from`` names callers: a service name (``web``: a caller presenting a workload certificate of
that service) or a SPIFFE id (``spiffe://CLUSTER/svc/web``, or ``spiffe://CLUSTER/node/n1``: a
caller whose identity a node vouches for, its own or one of its workloads'). The destination's
inbound proxy enforces it (``gossipmesh/proxy/authz.py``; docs/SECURITY.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import (
    read_choice,
    read_list,
    read_methods,
    read_name,
    read_url_path,
    reject_unknown,
    unique,
)
from gossipmesh.errors import ConfigValidationError, UsageError
from gossipmesh.identity import IdKind, SpiffeId

SPIFFE_PREFIX = "spiffe://"
MAX_FROM = 256


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


def parse_policy(name: str, body: Mapping[str, Any]) -> PolicyConfig:
    p = "policy"
    reject_unknown(body, ("action", "to", "from", "methods", "paths"), p)
    if "to" not in body:
        raise ConfigValidationError(f"{p}.to", "required (the service this policy protects)")
    paths_raw = read_list(body.get("paths", []), f"{p}.paths")
    return PolicyConfig(
        name=name,
        action=read_choice(body.get("action", "allow"), f"{p}.action", ("allow", "deny")),
        to=read_name(body["to"], f"{p}.to"),
        from_services=read_callers(body.get("from", []), f"{p}.from"),
        methods=read_methods(body.get("methods", []), f"{p}.methods"),
        paths=unique(
            [read_url_path(x, f"{p}.paths[{i}]") for i, x in enumerate(paths_raw)], f"{p}.paths"
        ),
    )


def read_callers(value: object, path: str) -> tuple[str, ...]:
    """``from``: service names, or SPIFFE ids of a service or a node."""
    items = read_list(value, path)
    if len(items) > MAX_FROM:
        raise ConfigValidationError(path, f"at most {MAX_FROM} callers")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.startswith(SPIFFE_PREFIX):
            try:
                sid = SpiffeId.parse(item)
            except UsageError as exc:
                raise ConfigValidationError(f"{path}[{i}]", str(exc)) from None
            if sid.kind not in (IdKind.WORKLOAD, IdKind.NODE):
                raise ConfigValidationError(
                    f"{path}[{i}]", f"{item!r}: only a service's or a node's SPIFFE id calls"
                )
            out.append(sid.uri)
        else:
            out.append(read_name(item, f"{path}[{i}]"))
    return unique(out, path)


def policy_body(entity: PolicyConfig) -> dict[str, Any]:
    """The canonical body of a policy entity (every field explicit)."""
    return {
        "action": entity.action,
        "to": entity.to,
        "from": list(entity.from_services),
        "methods": list(entity.methods),
        "paths": list(entity.paths),
    }
