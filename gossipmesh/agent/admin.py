"""The admin API routes (HTTP/1.1 + JSON, loopback by default). The CLI is its only client.

| method | path          | what |
|--------|---------------|------|
| GET    | /v1/members   | every member this agent knows: name, address, state, incarnation, meta (base64) |
| GET    | /v1/self      | own member record, settings summary, version, clock, limits, certificate, listeners (agent/self_info.py) |
| POST   | /v1/join      | ``{"addresses": [...]}`` push-pull with each; per-address result and why each failed |
| POST   | /v1/leave     | announce "left", flush, stop the agent |
| GET    | /v1/keys      | key ids (never keys) of every live member's ring, and how many hold each |
| POST   | /v1/keys      | ``{"op": "install"|"use"|"remove", "key": ...}`` cluster-wide, per-node results |
| GET    | /v1/health    | status, member counts by state, counters including drops by reason |
| GET    | /v1/monitor   | member events as JSON lines, chunked, as they happen |
| GET    | /ui/          | the read-only web dashboard (agent/dashboard.py) |

Later subsystems add their own routes with ``agent.router.add(method, path, handler)``.

Every request passes ``AdminAuth`` first (agent/admin_auth.py): writes, ``GET /v1/keys`` and the
monitor stream need the agent's bearer token (every request does on a non-loopback address);
``/v1/self`` names the token file so a CLI on the same host can find it. ``use`` of a key is
refused (409, naming them) while some member lacks it (agent/keyops.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.agent.dashboard import install_dashboard
from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response, StreamResponse
from gossipmesh.agent.keyops import OPS, fan_out, members_lacking
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

MAX_JOIN_ADDRESSES = 64
MAX_NAMED = 20  # members named in a refusal; the rest are counted
JOIN_TIMEOUT_S = 5.0  # how long POST /v1/join waits for the push-pull answers


def install_admin_routes(agent: Agent) -> None:
    from gossipmesh.agent.events import member_json
    from gossipmesh.agent.self_info import self_facts

    async def members(req: Request) -> Response:
        ms = await agent.members()
        return JSONResponse([member_json(m) for m in sorted(ms, key=lambda m: m.name)])

    async def self_(req: Request) -> Response:
        local = await agent.call(lambda node, now: (node.local_member(), []))
        body: dict[str, Any] = member_json(local)
        body.update(
            cluster=agent.settings.cluster,
            profile=agent.settings.profile,
            admin=str(agent.admin_address),
            leaving=agent.leaving,
            # Where this agent's admin token is (a path, not the token): readable only by the
            # agent's user, who can then authenticate (docs/SECURITY.md).
            admin_token_file=str(agent.admin_auth.token_file or ""),
            admin_tls=agent.admin_tls is not None,
            playground=agent.identity.playground,
        )
        body.update(self_facts(agent, _wall_ms()))  # version, clock, limits, certificate, ports
        return JSONResponse(body)

    async def join(req: Request) -> Response:
        data = req.json_object()
        addresses = data.get("addresses")
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) for a in addresses)
        ):
            raise HTTPError(400, "bad_request", '"addresses" must be a non-empty list of strings')
        if len(addresses) > MAX_JOIN_ADDRESSES:
            raise HTTPError(400, "bad_request", f"at most {MAX_JOIN_ADDRESSES} addresses")
        try:
            parsed = [Address.parse(a) for a in addresses]
        except UsageError as exc:
            raise HTTPError(400, "bad_address", str(exc)) from exc
        results = await agent.join(parsed, timeout_s=JOIN_TIMEOUT_S)
        joined = sum(results.values())
        status = 200 if joined else 502
        errors = {a: await _why_not_joined(agent, a) for a, ok in results.items() if not ok}
        return JSONResponse({"joined": joined, "results": results, "errors": errors}, status=status)

    async def leave(req: Request) -> Response:
        if agent.leaving:
            return JSONResponse({"left": True, "detail": "already leaving"})
        # Answer first, then leave in the background: leaving stops the admin server too.
        assert agent._nursery is not None
        agent._nursery.start_soon(agent.leave_and_stop)
        return JSONResponse({"left": True})

    async def keys_list(req: Request) -> Response:
        return JSONResponse(await fan_out(agent, "list", None))

    async def keys_op(req: Request) -> Response:
        data = req.json_object()
        op, key = data.get("op"), data.get("key")
        if op not in OPS or op == "list":
            raise HTTPError(400, "bad_request", '"op" must be one of install, use, remove')
        if not isinstance(key, str) or not key:
            raise HTTPError(400, "bad_request", '"key" must be a base64 key string')
        from gossipmesh.crypto import decode_key, key_id

        try:
            decode_key(key)
        except UsageError as exc:
            raise HTTPError(400, "bad_key", str(exc)) from exc
        if op == "use":
            lacking = await members_lacking(agent, key)
            if lacking:
                agent.counters["admin.key_use_refused"] += 1
                agent.log.warn("key_operation_refused", op=op, key_id=key_id(decode_key(key)),
                               lacking=len(lacking), named=lacking[:MAX_NAMED])  # fmt: skip
                raise HTTPError(
                    409,
                    "key_not_everywhere",
                    f"not switching: {len(lacking)} member(s) lack this key: "
                    f"{', '.join(lacking[:MAX_NAMED])}"
                    f"{f' and {len(lacking) - MAX_NAMED} more' if len(lacking) > MAX_NAMED else ''}"
                    "; run `gossipmesh keys install KEY` until they all "
                    "hold it, then `keys use` again",
                )
        result = await fan_out(agent, op, key)
        # The key's id only, never the key (crypto.key_id).
        agent.log.info("key_operation", op=op, key_id=key_id(decode_key(key)),
                       nodes=result["num_nodes"], ok=result["num_ok"],
                       failed=result["failed"][:MAX_NAMED])  # fmt: skip
        return JSONResponse(result, status=200 if not result["failed"] else 207)

    async def health(req: Request) -> Response:
        return JSONResponse(await agent.health())

    async def monitor(req: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            async with agent.subscribe_members() as events:
                # A first line so clients know the stream is live before any event happens.
                hello = {
                    "ts_ms": _wall_ms(),
                    "event": "monitor-start",
                    "member": agent.settings.name,
                }
                yield json.dumps(hello).encode() + b"\n"
                async for event in events:
                    yield json.dumps(event.to_json()).encode() + b"\n"

        return StreamResponse(chunks())

    r = agent.router
    r.add("GET", "/v1/members", members)
    r.add("GET", "/v1/self", self_)
    r.add("POST", "/v1/join", join)
    r.add("POST", "/v1/leave", leave)
    r.add("GET", "/v1/keys", keys_list)
    r.add("POST", "/v1/keys", keys_op)
    r.add("GET", "/v1/health", health)
    r.add("GET", "/v1/monitor", monitor)
    install_dashboard(agent)


async def _why_not_joined(agent: Agent, text: str) -> str:
    """One line on why a join address failed, for the operator (the join already timed out)."""
    from gossipmesh.agent.join import resolve

    address = Address.parse(text)
    resolved = await resolve(address)
    if resolved is None:
        return f"cannot resolve host {address.host!r}"
    if resolved == agent.address:
        return "that is this agent's own gossip address"
    why = agent.push_pulls.last_failure(resolved)
    if why is not None:
        return why
    return (
        f"no answer from {resolved} within {JOIN_TIMEOUT_S:g} s: no agent listens there (TCP and "
        "UDP), a firewall drops it, or it has another gossip key or cluster name (its log and "
        "`gossipmesh status` there show decrypt failures)"
    )


def _wall_ms() -> int:
    import time

    return int(time.time() * 1000)


__all__ = ["install_admin_routes", "trio"]
