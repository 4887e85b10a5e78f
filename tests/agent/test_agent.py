"""An Agent in-process on loopback: admin API over a real core, monitor, bad packets, user payloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
from admin_http import http

from gossipmesh.agent.http import MAX_BODY_BYTES
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.agent.streams import SealedStream
from gossipmesh.crypto import Keyring
from gossipmesh.errors import CoreError, LimitExceededError
from gossipmesh.ids import Address
from gossipmesh.swim.effects import Effect
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.push_pull import StateSync
from gossipmesh.swim.user_messages import UserMessages

KEY = bytes(range(32))


def make_agent(name: str, ip: str, tmp_path: Path, cluster: str = "t") -> Agent:
    settings = load_settings(
        {
            "name": name,
            "bind": f"{ip}:0",
            "admin": f"{ip}:0",
            "profile": "local",
            "cluster": cluster,
            "data_dir": str(tmp_path / name),
            "seed": 7,
        }
    )
    log = EventLog(stream=open(tmp_path / f"{name}.log", "a"), level="debug")  # noqa: SIM115
    return Agent(settings, keyring=Keyring([KEY]), log=log)


async def wait_for(pred: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not await pred():
            await trio.sleep(0.05)


@pytest.fixture
async def pair(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[tuple[Agent, Agent]]:
    a = await nursery.start(make_agent("a", "127.0.0.2", tmp_path).run)
    b = await nursery.start(make_agent("b", "127.0.0.3", tmp_path).run)
    assert a.address is not None
    assert await b.join([a.address]) == {str(a.address): True}
    yield a, b
    a.stop()
    b.stop()


async def states(agent: Agent) -> dict[str, str]:
    return {m.name: m.state.value for m in await agent.members()}


async def test_join_members_self_health(pair: tuple[Agent, Agent]) -> None:
    a, b = pair

    async def both_alive() -> bool:
        return await states(a) == await states(b) == {"a": "alive", "b": "alive"}

    await wait_for(both_alive)
    status, members = await http(a, "GET", "/v1/members")
    assert status == 200 and [m["name"] for m in members] == ["a", "b"]
    status, me = await http(b, "GET", "/v1/self")
    assert status == 200 and me["name"] == "b" and me["cluster"] == "t"
    status, health = await http(a, "GET", "/v1/health")
    assert status == 200 and health["members"] == {"alive": 2}


async def test_admin_rejects_bad_input(pair: tuple[Agent, Agent]) -> None:
    a, _ = pair
    for body, error in [
        (b"{nope", "bad_json"),
        (b'{"addresses": "x"}', "bad_request"),
        (b'{"addresses": ["h:notaport"]}', "bad_address"),
    ]:
        status, data = await http(a, "POST", "/v1/join", body)
        assert status == 400 and data["error"] == error
    status, data = await http(a, "POST", "/v1/join", b"x" * (MAX_BODY_BYTES + 10))
    assert status == 413 and data["error"] == "body_too_large"
    status, data = await http(a, "POST", "/v1/keys", b'{"op": "use", "key": "short"}')
    assert status == 400 and data["error"] == "bad_key"
    status, data = await http(a, "POST", "/v1/keys", b'{"op": "explode", "key": "x"}')
    assert status == 400
    status, data = await http(a, "DELETE", "/v1/members")
    assert status == 405


async def test_garbage_packets_are_counted_not_fatal(pair: tuple[Agent, Agent]) -> None:
    a, _ = pair
    assert a.address is not None
    before = await states(a)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.4", 0))
        for i in range(200):
            await sock.sendto(bytes([1]) + bytes(range(i % 200)) * 2, a.address.as_tuple())
        await sock.sendto(b"\x01" * 20000, a.address.as_tuple())

    async def counted() -> bool:
        dropped = (await a.health())["dropped"]
        return bool(dropped.get("decrypt", 0) + dropped.get("truncated", 0) >= 200)

    await wait_for(counted)
    assert (await a.health())["dropped"].get("oversize") == 1
    assert await states(a) == before


async def test_garbage_stream_is_counted(pair: tuple[Agent, Agent]) -> None:
    a, _ = pair
    assert a.address is not None
    tcp = await trio.open_tcp_stream(a.address.host, a.address.port)
    async with tcp:
        await tcp.send_all(b"\x00\x00\x00\x40\x01" + b"g" * 63)
        with trio.fail_after(5):
            assert await tcp.receive_some(10) == b""  # the agent hangs up

    async def counted() -> bool:
        dropped = (await a.health())["dropped"]
        return any(k.startswith("stream_") for k in dropped)

    await wait_for(counted)


async def test_monitor_streams_member_events(
    nursery: trio.Nursery, tmp_path: Path, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    assert a.admin_address is not None
    stream = await trio.open_tcp_stream(a.admin_address.host, a.admin_address.port)
    lines: list[dict[str, object]] = []
    async with stream:
        auth = f"authorization: Bearer {a.admin_auth.token}\r\n".encode()
        await stream.send_all(b"GET /v1/monitor HTTP/1.1\r\nhost: x\r\n" + auth + b"\r\n")
        c = await nursery.start(make_agent("c", "127.0.0.5", tmp_path).run)
        assert a.address is not None
        await c.join([a.address])
        buf = b""
        with trio.fail_after(10):
            while not any(e.get("member") == "c" and e.get("event") == "join" for e in lines):
                buf += await stream.receive_some(65536)
                lines = [json.loads(line) for line in buf.split(b"\r\n") if line.startswith(b"{")]
        c.stop()
    assert lines[0]["event"] == "monitor-start"
    join = next(e for e in lines if e.get("member") == "c")
    assert isinstance(join["ts_ms"], int) and join["state"] == "alive"


async def test_user_messages_and_broadcasts_reach_handlers(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    got: list[tuple[Address, bytes]] = []
    b.add_user_message_handler(lambda src, payload: got.append((src, payload)))

    async def alive() -> bool:
        return (await states(a)).get("b") == "alive"

    await wait_for(alive)
    await a.send_user_message(b"direct", fanout=1)
    await a.queue_broadcast(b"gossiped")

    async def delivered() -> bool:
        return {p for _, p in got} >= {b"direct", b"gossiped"}

    await wait_for(delivered)


async def test_a_core_bug_is_logged_counted_and_survived(
    pair: tuple[Agent, Agent], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair

    async def alive() -> bool:
        return (await states(a)).get("b") == "alive" and (await states(b)).get("a") == "alive"

    await wait_for(alive)

    def planted(self: UserMessages, src: Address, msg: object, out: object) -> None:
        raise RuntimeError("planted bug: user message")

    monkeypatch.setattr(UserMessages, "on_user", planted)
    await b.send_user_message(b"boom", fanout=1)  # a's core raises on this packet

    async def counted() -> bool:
        return a.counters["core.errors"] >= 1

    await wait_for(counted)
    logged = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    (error,) = [e for e in logged if e["event"] == "core_error"]
    assert error["level"] == "error"
    assert "RuntimeError: planted bug: user message" in error["traceback"]
    assert "handle_packet" in error["traceback"]
    # The agent keeps running: its owner still serves calls, and b still sees it alive.
    assert (await a.health())["status"] == "ok"
    assert (await states(b))["a"] == "alive"

    # A call whose function raises is a bug too: the caller gets CoreError, caused by it.
    def broken(node: SwimNode, now: int) -> tuple[None, list[Effect]]:
        raise ZeroDivisionError("planted")

    with pytest.raises(CoreError) as info:
        await a.call(broken)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert a.counters["core.errors"] == 2
    # A refusal is not a bug: it reaches the caller as it is, and nothing is counted.
    with pytest.raises(LimitExceededError):
        await a.queue_broadcast(b"x" * 5000)
    assert a.counters["core.errors"] == 2


async def test_a_core_bug_in_a_push_pull_closes_that_stream_only(
    pair: tuple[Agent, Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    assert a.address is not None

    def planted(self: StateSync, src: Address, data: bytes, now_ms: int) -> object:
        raise RuntimeError("planted bug: push-pull request")

    monkeypatch.setattr(StateSync, "handle_request", planted)
    assert await b.join([a.address], timeout_s=3) == {str(a.address): False}
    assert a.counters["core.errors"] >= 1
    assert a.counters["dropped.stream_core_error"] >= 1
    assert (await a.health())["status"] == "ok"  # a is still serving


async def test_custom_stream_kind(pair: tuple[Agent, Agent]) -> None:
    a, b = pair

    async def echo(stream: SealedStream, src: Address, body: bytes) -> None:
        await stream.send(body.upper())

    b.register_stream_handler("echo", echo)
    assert b.address is not None
    s = await a.open_stream(b.address, "echo", b"hi")
    with trio.fail_after(5):
        assert await s.receive() == b"HI"
    await s.aclose()


async def test_other_cluster_cannot_join(nursery: trio.Nursery, tmp_path: Path) -> None:
    a = await nursery.start(make_agent("a", "127.0.0.2", tmp_path, cluster="one").run)
    x = await nursery.start(make_agent("x", "127.0.0.3", tmp_path, cluster="two").run)
    assert a.address is not None
    assert await x.join([a.address], timeout_s=2) == {str(a.address): False}
    assert set(await states(a)) == {"a"} and set(await states(x)) == {"x"}
    a.stop()
    x.stop()


async def test_leave_is_seen_as_left(pair: tuple[Agent, Agent]) -> None:
    a, b = pair

    async def alive() -> bool:
        return (await states(a)).get("b") == "alive"

    await wait_for(alive)
    await b.leave_and_stop()

    async def left() -> bool:
        return (await states(a)).get("b") == "left"

    await wait_for(left)
