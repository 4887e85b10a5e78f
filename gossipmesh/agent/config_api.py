"""Admin API routes of the config replica (the CLI's ``gossipmesh config ...`` is their client).

| method | path                              | what |
|--------|-----------------------------------|------|
| GET    | /v1/config?prefix=P               | effective entities under P, plus the digest (root hash, version vector) |
| GET    | /v1/config/KIND/NAME              | value, every sibling (winner first), conflict flag, version |
| PUT    | /v1/config/KIND/NAME              | body = the entity; validated; 200 once durable here |
| DELETE | /v1/config/KIND/NAME              | tombstone; 404 if there is nothing to delete |
| POST   | /v1/config/apply                  | ``{"entities": {"KIND/NAME": body or null}}``: one atomic delta |
| GET    | /v1/config-history/KIND/NAME      | versions seen here (current siblings first), with writer and time |
| GET    | /v1/config-conflicts              | keys with concurrent siblings, and which one wins |

Errors: 400 ``{"error": "invalid", "detail": "route.destinations[0].weight: ..."}`` naming the
field (for ``apply``, prefixed with the key); 413 ``too_large`` naming the limit (entity 64 KiB
encoded, document 16 MiB, request body 1 MiB, ``MAX_APPLY_ENTITIES``); 503 ``store_failed`` when
the write could not be made durable. Nothing is written on any error: validation runs on the
whole request before the document changes.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response
from gossipmesh.config.schema import parse_key, validate_key
from gossipmesh.crdt.document import Entry, Version
from gossipmesh.errors import ConfigValidationError, LimitExceededError, UsageError

if TYPE_CHECKING:
    from gossipmesh.agent.replica import ConfigReplica

MAX_APPLY_ENTITIES = 1000


def entry_json(e: Entry, winner: bool = False) -> dict[str, Any]:
    try:
        value = e.decoded()
    except Exception:  # validated on the way in; be safe for a view
        value = None
    return {
        "writer": e.writer,
        "counter": e.counter,
        "hlc": {"wall_ms": e.hlc.wall_ms, "logical": e.hlc.logical},
        "deleted": e.value is None,
        "suspect": e.suspect,
        "winner": winner,
        "value": value,
    }


def version_json(v: Version) -> dict[str, Any]:
    return {
        "writer": v.writer,
        "counter": v.counter,
        "hlc": {"wall_ms": v.hlc.wall_ms, "logical": v.hlc.logical},
        "deleted": v.value is None,
        "current": v.current,
        "suspect": v.suspect,
        "value": v.value,
    }


def _key_from_path(path: str, prefix: str) -> str:
    key = unquote(path[len(prefix) :])
    try:
        parse_key(key)
    except ConfigValidationError as exc:
        raise HTTPError(400, "invalid", str(exc)) from exc
    return key


def install_config_routes(replica: ConfigReplica) -> None:
    agent = replica.agent

    def commit(items: list[tuple[str, dict[str, Any] | None]]) -> list[Entry]:
        try:
            delta = replica.commit(items)
        except LimitExceededError as exc:
            raise HTTPError(413, "too_large", str(exc)) from exc
        except UsageError as exc:  # ConfigValidationError included: "field: reason"
            raise HTTPError(400, "invalid", str(exc)) from exc
        except (OSError, sqlite3.Error) as exc:
            agent.counters["config.store_errors"] += 1
            agent.log.error("config_store_failed", error=repr(exc))
            raise HTTPError(
                503, "store_failed", f"the write could not be made durable: {exc}"
            ) from exc
        return list(delta.entries)

    def versions(entries: list[Entry]) -> dict[str, Any]:
        return {e.key: {"writer": e.writer, "counter": e.counter} for e in entries}

    async def list_config(req: Request) -> Response:
        prefix = (req.query.get("prefix") or [""])[0]
        entities = dict(replica.items(prefix))
        return JSONResponse({"entities": entities, "count": len(entities), **replica.digest()})

    async def get_one(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config/")
        siblings = replica.siblings(key)
        if not siblings or siblings[0].value is None:
            raise HTTPError(404, "not_found", f"{key} is not set")
        winner = siblings[0]
        return JSONResponse({
            "key": key,
            "value": winner.decoded(),
            "version": {"writer": winner.writer, "counter": winner.counter,
                        "hlc": {"wall_ms": winner.hlc.wall_ms, "logical": winner.hlc.logical}},
            "conflict": len(siblings) > 1,
            "siblings": [entry_json(e, i == 0) for i, e in enumerate(siblings)],
        })  # fmt: skip

    async def put_one(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config/")
        body = req.json_object()
        try:
            validate_key(key, body)
        except ConfigValidationError as exc:
            raise HTTPError(400, "invalid", str(exc)) from exc
        entries = commit([(key, body)])
        return JSONResponse({"key": key, "written": versions(entries), "durable": True})

    async def delete_one(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config/")
        if replica.get(key) is None:
            raise HTTPError(404, "not_found", f"{key} is not set")
        entries = commit([(key, None)])
        return JSONResponse({"key": key, "deleted": True, "written": versions(entries)})

    async def apply(req: Request) -> Response:
        data = req.json_object()
        entities = data.get("entities")
        unknown = sorted(set(data) - {"entities"})
        if unknown:
            raise HTTPError(400, "invalid", f"{unknown[0]}: unknown field (allowed: entities)")
        if not isinstance(entities, dict) or not entities:
            raise HTTPError(400, "invalid", 'entities: must be a non-empty object of "KIND/NAME"')
        if len(entities) > MAX_APPLY_ENTITIES:
            raise HTTPError(413, "too_large", f"entities: {len(entities)} is over the limit of "
                            f"{MAX_APPLY_ENTITIES} per apply (MAX_APPLY_ENTITIES)")  # fmt: skip
        items: list[tuple[str, dict[str, Any] | None]] = []
        for key, body in sorted(entities.items()):
            try:
                parse_key(key)
                if body is not None:
                    if not isinstance(body, dict):
                        raise ConfigValidationError(parse_key(key)[0], "must be an object or null")
                    validate_key(key, body)
            except ConfigValidationError as exc:
                raise HTTPError(400, "invalid", f"{key}: {exc}") from exc
            items.append((key, body))
        entries = commit(items)
        return JSONResponse({"applied": len(items), "written": versions(entries), "durable": True})

    async def history(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config-history/")
        return JSONResponse({"key": key, "versions": [version_json(v) for v in
                                                      replica.history(key)]})  # fmt: skip

    async def conflicts(req: Request) -> Response:
        out = []
        for c in replica.conflicts():
            out.append({
                "key": c.key,
                "winner": entry_json(c.winner, True),
                "siblings": [entry_json(e, e.dot == c.winner.dot) for e in c.siblings],
            })  # fmt: skip
        return JSONResponse({"conflicts": out, "count": len(out)})

    r = agent.router
    r.add("GET", "/v1/config", list_config)
    r.add("POST", "/v1/config/apply", apply)
    r.add_prefix("GET", "/v1/config/", get_one)
    r.add_prefix("PUT", "/v1/config/", put_one)
    r.add_prefix("DELETE", "/v1/config/", delete_one)
    r.add_prefix("GET", "/v1/config-history/", history)
    r.add("GET", "/v1/config-conflicts", conflicts)
