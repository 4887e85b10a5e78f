"""The config replica inside in-process agents on loopback: admin API, validation and limits,
atomic apply, spread, refused remote deltas, stream kinds, fault injection routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from admin_http import http
from config_helpers import local_write, sign_entries, write

from gossipmesh.agent.config_api import install_config_routes
from gossipmesh.agent.faults import install_faults
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.replica import TAG, ConfigReplica
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.crdt.document import Delta, Entry
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.crypto import Keyring

KEY = bytes(range(32))
ROUTE = {"destinations": [{"service": "api", "weight": 90}, {"service": "api-v2", "weight": 10}]}


def make_agent(name: str, ip: str, tmp_path: Path, faults: bool = False) -> Agent:
    settings = load_settings(
        {
            "name": name,
            "bind": f"{ip}:0",
            "admin": f"{ip}:0",
            "profile": "local",
            "cluster": "t",
            "data_dir": str(tmp_path / name),
            "seed": 11,
            "no_proxy": True,
        }
    )
    log = EventLog(stream=open(tmp_path / f"{name}.log", "a"), level="debug")  # noqa: SIM115
    agent = Agent(settings, keyring=Keyring([KEY]), log=log)
    replica = ConfigReplica.open(agent, settings.data_dir, sync_interval_ms=500)
    agent.config = replica
    install_config_routes(replica)
    if faults:
        install_faults(agent)
    return agent


async def start(nursery: trio.Nursery, agent: Agent) -> Agent:
    await nursery.start(agent.run)
    assert isinstance(agent.config, ConfigReplica)
    await nursery.start(agent.config.run)
    return agent


def rep(agent: Agent) -> ConfigReplica:
    assert isinstance(agent.config, ConfigReplica)
    return agent.config


async def wait_for(pred: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while True:
            result = pred()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


@pytest.fixture
async def trio3(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[list[Agent]]:
    agents = [
        await start(nursery, make_agent(n, ip, tmp_path, faults=(n == "a")))
        for n, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4"))
    ]
    assert agents[0].address is not None
    for other in agents[1:]:
        assert await other.join([agents[0].address]) == {str(agents[0].address): True}

    async def all_alive() -> bool:
        for agent in agents:
            ms = await agent.members()
            if sum(m.state.value == "alive" for m in ms) != 3:
                return False
        return True

    await wait_for(all_alive)
    yield agents
    for agent in agents:
        agent.stop()


async def test_put_get_spread_history_delete(trio3: list[Agent]) -> None:
    a, b, c = trio3
    status, body = await write(a, {"route/web": ROUTE})
    assert status == 200, body
    assert body["durable"] is True and body["written"]["route/web"]["writer"] == rep(a).writer
    await wait_for(lambda: rep(c).get("route/web") == ROUTE, 3)
    status, body = await http(c, "GET", "/v1/config/route/web")
    assert status == 200 and body["value"] == ROUTE and body["conflict"] is False
    assert body["version"]["writer"] == rep(a).writer
    assert body["version"]["signer"]["name"] == "playground" and body["void"] is None
    status, listing = await http(b, "GET", "/v1/config?prefix=route/")
    assert listing["entities"] == {"route/web": ROUTE} and listing["count"] == 1
    # An overwrite from another agent supersedes (it had seen the first write): no conflict.
    await wait_for(lambda: rep(b).get("route/web") == ROUTE, 3)
    v2 = {"destinations": [{"service": "api"}]}
    assert (await write(b, {"route/web": v2}))[0] == 200
    await wait_for(lambda: rep(a).get("route/web") == v2, 3)
    status, hist = await http(a, "GET", "/v1/config-history/route/web")
    assert [v["current"] for v in hist["versions"]] == [True, False]
    assert hist["versions"][0]["writer"] == rep(b).writer
    assert hist["versions"][0]["signer"]["kind"] == "operator"
    assert (await http(a, "GET", "/v1/config-conflicts"))[1]["count"] == 0
    status, body = await write(c, {"route/web": None})
    assert status == 200 and "route/web" in body["written"]
    await wait_for(lambda: rep(a).get("route/web") is None, 3)
    assert (await http(a, "GET", "/v1/config/route/web"))[0] == 404
    assert (await write(a, {"route/web": None}))[1]["written"] == {}  # nothing to delete
    health = (await http(a, "GET", "/v1/health"))[1]
    assert health["counters"]["config.merged_entries"] >= 2


async def test_bad_input_is_refused_counted_and_nothing_written(trio3: list[Agent]) -> None:
    a = trio3[0]
    bad = {"destinations": [{"service": "api", "weight": "heavy"}]}
    status, body = await write(a, {"route/web": bad})
    assert status == 400 and body["error"] == "invalid"
    assert body["detail"].startswith("items.route/web: route.destinations[0].weight: must be an")
    status, body = await write(a, {"route/web": {"destinations": [], "x": 1}})
    assert status == 400 and body["detail"].startswith("items.route/web: route.x: unknown field")
    status, body = await write(a, {"widget/web": {}})
    assert status == 400 and body["detail"].startswith("items.widget/web: key: unknown kind")
    status, body = await http(a, "POST", "/v1/config/prepare", b"{nope")
    assert status == 400 and body["error"] == "bad_json"
    big = {"to": "api", "paths": ["/" + "x" * 1000 + str(i) for i in range(100)]}
    status, body = await write(a, {"policy/big": big})
    assert status == 413 and "entity limit of 65536 bytes" in body["detail"], body
    # One bad entity among good ones refuses the whole request.
    entities: dict[str, Any] = {f"service/s{i}": {} for i in range(10)}
    entities["route/bad"] = bad
    status, body = await write(a, entities)
    assert status == 400
    assert body["detail"].startswith("items.route/bad: route.destinations[0].weight:")
    status, body = await http(a, "POST", "/v1/config/prepare", {"items": {}, "x": 1})
    assert status == 400 and body["detail"].startswith("x: unknown field")
    status, body = await http(a, "POST", "/v1/config/commit", {"entries": [{"key": 1}]})
    assert status == 400 and body["detail"].startswith("entries[0].hlc: must be an object")
    # The unsigned routes of old answer with what to do instead.
    status, body = await http(a, "PUT", "/v1/config/route/web", ROUTE)
    assert status == 403 and body["error"] == "unsigned" and "prepare" in body["detail"]
    assert (await http(a, "POST", "/v1/config/apply", {"entities": {}}))[0] == 403
    assert rep(a).items() == [] and rep(a).doc.keys() == []
    counters = (await http(a, "GET", "/v1/health"))[1]["counters"]
    assert counters["config.refused.invalid"] >= 6 and counters["config.refused.unsigned"] == 2
    assert counters["config.refused.too_large"] == 1


async def test_apply_is_one_delta(trio3: list[Agent]) -> None:
    a, _, c = trio3
    entities: dict[str, Any] = {f"service/s{i:02d}": {"protocol": "tcp"} for i in range(50)}
    status, body = await write(a, entities)
    assert status == 200 and len(body["written"]) == 51  # and the operator's cert entry
    # One delta: one counter step per key but one local write, one log row.
    assert rep(a).counters["config.local_writes"] == 1
    await wait_for(lambda: len(rep(c).items("service/")) == 50, 3)
    entities = {k: None for k in list(entities)[:10]}
    assert (await write(a, entities))[0] == 200
    await wait_for(lambda: len(rep(c).items("service/")) == 40, 3)


def _entry(key: str, value: Any, counter: int = 1, writer: str = "mallory@00000001") -> Entry:
    raw = None if value is None else msgpack.packb(value, use_bin_type=True)
    return Entry(key, writer, counter, Timestamp(0, 0), (), raw, bytes(32), bytes(64))


async def test_invalid_remote_delta_is_refused_counted_and_not_gossiped(
    trio3: list[Agent],
) -> None:
    a, b, c = trio3
    bad = Delta((_entry("route/evil", {"destinations": [{"service": "x", "weight": -5}]}),))
    # Straight onto SWIM as b"C" user messages from b to both others; b's own replica is bypassed.
    await b.send_user_message(TAG + encode_delta(bad), 2)
    await b.send_user_message(TAG + b"\x93garbage", 2)
    await b.send_user_message(b"R" + b"not ours", 2)  # the data plane's tag: ignored here

    def refused(agent: Agent) -> bool:
        cs = agent.counters
        return cs["config.refused.invalid"] >= 1 and cs["config.refused"] >= 2

    await wait_for(lambda: refused(a) and refused(c), 3)
    for agent in (a, b, c):
        assert rep(agent).get("route/evil") is None
        assert rep(agent).siblings("route/evil") == ()
    health = (await http(a, "GET", "/v1/health"))[1]
    assert health["counters"]["config.refused.invalid"] >= 1
    # Not re-gossiped: nothing was accepted, so nothing was forwarded.
    assert a.counters["config.merged_entries"] == 0


async def test_conflict_stays_visible_and_winner_is_deterministic(trio3: list[Agent]) -> None:
    a, b, c = trio3
    # Two concurrent writes (neither saw the other) straight into the documents, then spread.
    ra, rb = rep(a), rep(b)
    local_write(rb, [("service/other", {})])
    local_write(ra, [("service/api", {"protocol": "http"})])
    now = int(time.time() * 1000)
    proposal = rb.doc.prepare([("service/api", {"protocol": "tcp"})], rb.writer, now)
    rb.doc.commit(sign_entries(proposal), rb.writer, now)  # not spread: anti-entropy carries it

    async def converged() -> bool:
        roots = {rep(x).doc.root_hash for x in trio3}
        return len(roots) == 1 and len(rep(c).siblings("service/api")) == 2

    await wait_for(converged, 5)
    status, body = await http(c, "GET", "/v1/config-conflicts")
    assert body["count"] == 1 and body["conflicts"][0]["key"] == "service/api"
    winners = {rep(x).get("service/api")["protocol"] for x in trio3}  # type: ignore[index]
    assert len(winners) == 1
    status, one = await http(a, "GET", "/v1/config/service/api")
    assert one["conflict"] is True and len(one["siblings"]) == 2


async def test_fault_routes(trio3: list[Agent]) -> None:
    a, b, _ = trio3
    assert (await http(b, "POST", "/v1/faults", {"drop": []}))[0] == 404  # not enabled on b
    assert b.address is not None
    status, body = await http(a, "POST", "/v1/faults", {"drop": [str(b.address)]})
    assert status == 200 and body["drop"] == [str(b.address)]
    assert (await http(a, "POST", "/v1/faults", {"drop": ["nope:x"]}))[0] == 400
    assert rep(a).merge_payload(b"", "t") is None  # decode refusals are counted too
    await wait_for(lambda: a.counters["faults.udp_out"] + a.counters["faults.udp_in"] > 0, 5)
    assert await rep(a).sync_with("b") is False  # streams to b are refused as well
    status, body = await http(a, "DELETE", "/v1/faults")
    assert status == 200 and body["drop"] == []
    assert await rep(a).sync_with("b") is True


async def test_tombstones_are_collected_after_the_grace_period(trio3: list[Agent]) -> None:
    a, b, _ = trio3
    local_write(rep(a), [("service/gone", {})])
    local_write(rep(a), [("service/gone", None)])
    await wait_for(lambda: len({rep(x).doc.root_hash for x in trio3}) == 1, 5)
    assert rep(a).collect_garbage() == []  # an hour's grace by default
    core = rep(a).core
    core.config = replace(core.config, gc_grace_ms=0)
    assert rep(a).collect_garbage() == ["service/gone"]
    assert rep(a).siblings("service/gone") == ()
    # Tombstones count in the digest only through the known map: still in sync with b.
    assert rep(a).doc.root_hash == rep(b).doc.root_hash
    assert a.counters["config.tombstones_collected"] == 1


async def test_in_sync_anti_entropy_is_a_few_dozen_bytes(trio3: list[Agent]) -> None:
    a, b, _ = trio3
    entities = {f"service/s{i:03d}": {"protocol": "tcp"} for i in range(200)}
    assert (await write(a, entities))[0] == 200
    await wait_for(lambda: rep(b).doc.root_hash == rep(a).doc.root_hash, 5)
    before = (a.counters["config.sync_bytes"], a.counters["config.sync_in_sync"])
    assert await rep(a).sync_with("b")
    sent = a.counters["config.sync_bytes"] - before[0]
    # The periodic syncs (every 500 ms, here and at the peers) may add exchanges of their own in
    # the window; every one of them is between equal documents, so each must be as small.
    exchanges = a.counters["config.sync_in_sync"] - before[1]
    assert exchanges >= 1
    assert sent < 60 * exchanges, (sent, exchanges)  # a 32-byte root + "in sync", any size
