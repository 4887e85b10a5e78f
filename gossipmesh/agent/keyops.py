"""Cluster-wide key rotation: apply a keyring operation here, then fan it out to every live member.

Member admin APIs are loopback-only, so the fan-out rides the encrypted gossip TCP port as a stream
of kind ``keyop``: only a holder of a current key can ask. Each node applies the operation to its
own ring, persists it, and answers ``{"name", "ok", "error", "keys"}``; the caller reports per-node
results. Operations are idempotent (install of a present key, use of the primary), so an operator
simply re-runs a rotation step after a partial failure. Rotation order: install everywhere, use
everywhere, remove the old key everywhere.

Two rules keep a rotation from splitting the mesh or leaking keys:

- ``use`` is refused (``members_lacking``) unless every alive or suspect member answers that it
  holds the key: a member left without it could neither read nor be read by the others, and each
  half would see the other die. The refusal names the members that lack the key (or did not
  answer); nothing is switched anywhere.
- Keys never leave an agent: results name keys by ``key_id`` (a SHA-256 prefix), the agent's own
  ring included. Only a request carries a key, from the operator who already holds it.

Each answer also carries the node's wall clock (``wall_ms``), so the fan-out measures every
member's clock against this agent's as NTP does: ``clock_offset_ms`` = the peer's clock minus ours
at the middle of the exchange, uncertain by half the round trip (``rtt_ms``). ``gossipmesh doctor``
reads them; certificates and the log's timestamps need clocks that agree.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.crypto import decode_key, key_id
from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address
from gossipmesh.swim.member import MemberState

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent
    from gossipmesh.agent.streams import SealedStream

OPS = ("list", "install", "use", "remove")
FANOUT_TIMEOUT_S = 5.0
FANOUT_CONCURRENCY = 16


def wall_ms() -> int:
    return int(time.time() * 1000)


def apply_local(agent: Agent, op: str, key_text: str | None) -> dict[str, Any]:
    """Apply one op to this agent's ring; never raises for a bad request (it is a result)."""
    result: dict[str, Any] = {"name": agent.settings.name, "ok": True, "error": None}
    try:
        if op not in OPS:
            raise UsageError(f"unknown key operation {op!r}")
        if op != "list":
            if not key_text:
                raise UsageError(f"{op} needs a key")
            key = decode_key(key_text)
            if op == "install":
                agent.keyring.install(key)
            elif op == "use":
                agent.keyring.use(key)
            else:
                agent.keyring.remove(key)
            agent.save_keyring()
            agent.log.info("keyring_changed", op=op, keys=len(agent.keyring))
    except (UsageError, OSError) as exc:
        result.update(ok=False, error=str(exc))
    result["keys"] = agent.keyring.key_ids()
    result["primary"] = result["keys"][0]
    result["wall_ms"] = wall_ms()
    return result


async def members_lacking(agent: Agent, key_text: str) -> list[str]:
    """Members (this agent included) that do not hold ``key_text``, each as ``NAME`` or
    ``NAME (why)`` when it could not say; empty when every alive or suspect member holds it."""
    wanted = key_id(decode_key(key_text))
    listed = await fan_out(agent, "list", None)
    lacking = []
    for name, node in listed["nodes"].items():
        if not node.get("ok"):
            lacking.append(f"{name} ({str(node.get('error') or 'no answer').split(':')[0]})")
        elif wanted not in (node.get("keys") or []):
            lacking.append(name)
    return lacking


async def _serve_keyop(agent: Agent, stream: SealedStream, src: Address, body: bytes) -> None:
    try:
        request = json.loads(body)
        op, key = request["op"], request.get("key")
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError("keyop", "malformed key operation") from exc
    result = apply_local(agent, str(op), key if isinstance(key, str) else None)
    await stream.send(json.dumps(result).encode())


async def fan_out(agent: Agent, op: str, key_text: str | None) -> dict[str, Any]:
    """Apply locally, then on every alive or suspect member; report each node's result."""
    results: dict[str, dict[str, Any]] = {agent.settings.name: apply_local(agent, op, key_text)}
    peers = [
        m
        for m in await agent.members()
        if m.name != agent.settings.name and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
    ]
    body = json.dumps({"op": op, "key": key_text}).encode()
    limiter = trio.CapacityLimiter(FANOUT_CONCURRENCY)

    async def one(name: str, address: Address) -> None:
        async with limiter:
            try:
                with trio.fail_after(FANOUT_TIMEOUT_S):
                    sent_ms, started_s = wall_ms(), trio.current_time()
                    stream = await agent.open_stream(address, "keyop", body)
                    try:
                        reply = json.loads(await stream.receive())
                    finally:
                        await stream.aclose()
                    rtt_ms = round((trio.current_time() - started_s) * 1000)
                results[name] = reply if isinstance(reply, dict) else {"ok": False}
                peer_ms = results[name].get("wall_ms")
                if isinstance(peer_ms, int) and not isinstance(peer_ms, bool):
                    results[name].update(clock_offset_ms=peer_ms - (sent_ms + rtt_ms // 2),
                                         rtt_ms=rtt_ms)  # fmt: skip
            except (OSError, trio.TooSlowError, EOFError, DecodeError, ValueError) as exc:
                results[name] = {"name": name, "ok": False, "error": f"unreachable: {exc!r}"}
            except trio.BrokenResourceError as exc:
                results[name] = {"name": name, "ok": False, "error": f"unreachable: {exc!r}"}

    async with trio.open_nursery() as nursery:
        for m in peers:
            nursery.start_soon(one, m.name, m.address)
    summary: dict[str, int] = {}
    for r in results.values():
        for k in r.get("keys") or []:
            summary[k] = summary.get(k, 0) + 1
    failed = sorted(n for n, r in results.items() if not r.get("ok"))
    return {
        "op": op,
        "num_nodes": len(results),
        "num_ok": len(results) - len(failed),
        "failed": failed,
        "keys": summary,
        "nodes": dict(sorted(results.items())),
    }


def install_keyops(agent: Agent) -> None:
    async def handler(stream: SealedStream, src: Address, body: bytes) -> None:
        await _serve_keyop(agent, stream, src, body)

    agent.register_stream_handler("keyop", handler)
