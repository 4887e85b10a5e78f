"""Where every agent stands in a route's scheduled shift (``gossipmesh shift status ROUTE``).

Each agent evaluates a shift against its own clock (config/shift.py) and builds its routing
table from that (agent/sidecar.py). ``GET /v1/shift/ROUTE`` asks every alive member over the
gossip port (stream kind ``shiftstat``, body: the route name) what its table holds for the route
right now: its wall clock, and per destination the weight in force, the step and the next step's
time. The answer is each agent's own view; an agent that does not answer in time is reported as
unreachable.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response
from gossipmesh.agent.streams import SealedStream
from gossipmesh.config.shift import progress
from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address
from gossipmesh.swim.member import MemberState

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar

KIND = "shiftstat"
FANOUT_TIMEOUT_S = 5.0
MAX_ROUTE_NAME_BYTES = 256


def local_view(sidecar: Sidecar, route: str) -> dict[str, Any]:
    """This agent's table for ``route``: the weights it was built with, and when."""
    built_ms = sidecar.table_wall_ms
    now_ms = sidecar.wall_ms()
    cfg = sidecar.catalog.routes.get(route)
    out: dict[str, Any] = {"ok": True, "name": sidecar.name, "wall_ms": now_ms,
                           "table_wall_ms": built_ms, "route": route}  # fmt: skip
    if cfg is None:
        out["destinations"] = None
        return out
    dests = []
    for d in cfg.destinations:
        row: dict[str, Any] = {"service": d.service, "tags": list(d.tags),
                               "weight": d.weight_at(built_ms)}  # fmt: skip
        if d.shift is not None and built_ms is not None:
            row["shift"] = dict(progress(d.shift, built_ms))
        dests.append(row)
    out["destinations"] = dests
    return out


def install_shift_status(sidecar: Sidecar) -> None:
    agent = sidecar.agent

    async def serve(stream: SealedStream, src: Address, body: bytes) -> None:
        if len(body) > MAX_ROUTE_NAME_BYTES:
            raise DecodeError("shiftstat", "route name too long")
        try:
            route = body.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError("shiftstat", "route name is not UTF-8") from exc
        await stream.send(json.dumps(local_view(sidecar, route)).encode())

    async def status(req: Request) -> Response:
        route = req.path.removeprefix("/v1/shift/")
        if not route or len(route.encode()) > MAX_ROUTE_NAME_BYTES:
            raise HTTPError(400, "bad_request", "route: a route name is required")
        nodes: dict[str, dict[str, Any]] = {sidecar.name: local_view(sidecar, route)}
        peers = [m for m in await agent.members()
                 if m.name != sidecar.name and m.state is MemberState.ALIVE]  # fmt: skip

        async def one(name: str, address: Address) -> None:
            try:
                with trio.fail_after(FANOUT_TIMEOUT_S):
                    stream = await agent.open_stream(address, KIND, route.encode())
                    try:
                        reply = json.loads(await stream.receive())
                    finally:
                        await stream.aclose()
                nodes[name] = reply if isinstance(reply, dict) else {"ok": False}
            except (OSError, trio.TooSlowError, EOFError, DecodeError, ValueError,
                    trio.BrokenResourceError) as exc:  # fmt: skip
                nodes[name] = {"name": name, "ok": False, "error": f"unreachable: {exc!r}"}

        async with trio.open_nursery() as nursery:
            for m in peers:
                nursery.start_soon(one, m.name, m.address)
        return JSONResponse({"route": route, "nodes": dict(sorted(nodes.items()))})

    agent.register_stream_handler(KIND, serve)
    agent.router.add_prefix("GET", "/v1/shift/", status)
