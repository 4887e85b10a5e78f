"""``policy/NAME``: which callers may reach a service (allow or deny by caller, method, path);
validation and canonical body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import (
    read_choice,
    read_list,
    read_methods,
    read_name,
    read_names,
    read_url_path,
    reject_unknown,
    unique,
)
from gossipmesh.errors import ConfigValidationError


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
        from_services=read_names(body.get("from", []), f"{p}.from"),
        methods=read_methods(body.get("methods", []), f"{p}.methods"),
        paths=unique(
            [read_url_path(x, f"{p}.paths[{i}]") for i, x in enumerate(paths_raw)], f"{p}.paths"
        ),
    )


def policy_body(entity: PolicyConfig) -> dict[str, Any]:
    """The canonical body of a policy entity (every field explicit)."""
    return {
        "action": entity.action,
        "to": entity.to,
        "from": list(entity.from_services),
        "methods": list(entity.methods),
        "paths": list(entity.paths),
    }
