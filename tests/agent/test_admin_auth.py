"""The admin API's bearer token, in-process on real sockets: which requests need it, what a
request without it gets (401, counted, nothing changed), the token file, and key ids."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from admin_http import http

from gossipmesh.agent.config_api import install_config_routes
from gossipmesh.agent.faults import install_faults
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.replica import ConfigReplica
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.crypto import Keyring, encode_key, key_id

KEY = bytes(range(32))
NEW_KEY = bytes(range(1, 33))
ROUTE = {"destinations": [{"service": "api"}]}

# Every state-changing endpoint, plus the reads that need the token on loopback.
GUARDED = [
    ("POST", "/v1/join", {"addresses": ["127.0.0.9:7946"]}),
    ("POST", "/v1/leave", None),
    ("POST", "/v1/keys", {"op": "install", "key": encode_key(NEW_KEY)}),
    ("PUT", "/v1/config/route/web", ROUTE),
    ("DELETE", "/v1/config/route/web", None),
    ("POST", "/v1/config/apply", {"entities": {"route/web": ROUTE}}),
    ("POST", "/v1/faults", {"drop": ["127.0.0.9:7946"]}),
    ("DELETE", "/v1/faults", None),
    ("GET", "/v1/keys", None),
    ("GET", "/v1/monitor", None),
]
OPEN_READS = ["/v1/members", "/v1/self", "/v1/health", "/v1/config", "/v1/faults"]


def make_agent(tmp_path: Path, data_dir: bool = True, config: bool = True) -> Agent:
    settings = load_settings(
        {
            "name": "a",
            "bind": "127.0.0.2:0",
            "admin": "127.0.0.2:0",
            "profile": "local",
            "cluster": "t",
            "data_dir": str(tmp_path / "a") if data_dir else None,
            "no_proxy": True,
            "enable_fault_injection": True,
        }
    )
    log = EventLog(stream=open(tmp_path / "a.log", "a"), level="debug")  # noqa: SIM115
    agent = Agent(settings, keyring=Keyring([KEY]), log=log)
    if not config:
        return agent
    replica = ConfigReplica.open(agent, settings.data_dir)
    agent.config = replica
    install_config_routes(replica)
    install_faults(agent)
    return agent


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Agent]:
    a = await nursery.start(make_agent(tmp_path).run)
    assert isinstance(a.config, ConfigReplica)
    await nursery.start(a.config.run)
    yield a
    a.stop()


async def raw_request(agent: Agent, head: str) -> bytes:
    assert agent.admin_address is not None
    stream = await trio.open_tcp_stream(agent.admin_address.host, agent.admin_address.port)
    async with stream:
        await stream.send_all(head.encode() + b"connection: close\r\n\r\n")
        buf = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                buf += chunk
    return buf


async def test_no_token_or_a_wrong_one_is_401_counted_and_changes_nothing(agent: Agent) -> None:
    tries = 0
    for method, path, body in GUARDED:
        right = agent.admin_auth.token
        for token in (None, "x" * 43, right[:-1] + ("A" if right[-1] != "A" else "B")):
            status, data = await http(agent, method, path, body, token=token)
            assert status == 401, (method, path, data)
            assert data["error"] == "unauthorized" and "Bearer" in data["detail"]
            tries += 1
    # Another scheme with the right token is no bearer token either.
    reply = await raw_request(
        agent,
        f"POST /v1/leave HTTP/1.1\r\nhost: x\r\nauthorization: Basic {agent.admin_auth.token}\r\n",
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert body.count(b"\n") == 1 and json.loads(body)["error"] == "unauthorized"  # one line
    tries += 1
    health = await agent.health()
    assert health["counters"]["admin.unauthorized"] == tries
    # Nothing changed: not leaving, same ring, no config, no faults, nobody joined.
    assert not agent.leaving and agent.keyring.keys() == [KEY]
    status, config = await http(agent, "GET", "/v1/config")
    assert status == 200 and config["entities"] == {}
    status, faults = await http(agent, "GET", "/v1/faults")
    assert status == 200 and faults["drop"] == []
    assert [m.name for m in await agent.members()] == ["a"]
    # The right token opens the same doors: the write now reaches the config API, which wants
    # an operator's signature (signed configuration), so it is refused there, not at the door.
    status, data = await http(agent, "PUT", "/v1/config/route/web", ROUTE)
    assert status == 403 and data["error"] == "unsigned", data
    status, keys = await http(agent, "GET", "/v1/keys")
    assert status == 200
    assert (await agent.health())["counters"]["admin.unauthorized"] == tries


async def test_reads_stay_open_on_loopback(agent: Agent) -> None:
    for path in OPEN_READS:
        status, _ = await http(agent, "GET", path, token=None)
        assert status == 200, path
    assert "admin.unauthorized" not in (await agent.health())["counters"]


async def test_keys_are_shown_by_id_never_as_keys(agent: Agent) -> None:
    status, listed = await http(agent, "GET", "/v1/keys")
    assert status == 200
    assert listed["keys"] == {key_id(KEY): 1}
    assert listed["nodes"]["a"]["primary"] == key_id(KEY)
    status, installed = await http(
        agent, "POST", "/v1/keys", {"op": "install", "key": encode_key(NEW_KEY)}
    )
    assert status == 200 and installed["keys"] == {key_id(KEY): 1, key_id(NEW_KEY): 1}
    for answer in (listed, installed):
        text = json.dumps(answer)
        assert encode_key(KEY) not in text and encode_key(NEW_KEY) not in text


async def test_the_token_file_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "a" / "admin.token"
    async with trio.open_nursery() as nursery:
        a = await nursery.start(make_agent(tmp_path).run)
        assert path.read_text().strip() == a.admin_auth.token and len(a.admin_auth.token) == 43
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        status, me = await http(a, "GET", "/v1/self", token=None)
        assert status == 200 and me["admin_token_file"] == str(path) and me["admin_tls"] is False
        a.stop()
    async with trio.open_nursery() as nursery:
        b = await nursery.start(make_agent(tmp_path).run)
        assert b.admin_auth.token == a.admin_auth.token  # kept: scripts keep working
        b.stop()
    assert path.exists()


async def test_without_a_data_dir_the_token_lives_in_a_private_temp_dir(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        a = await nursery.start(make_agent(tmp_path, data_dir=False).run)
        status, me = await http(a, "GET", "/v1/self", token=None)
        path = Path(me["admin_token_file"])
        assert path.read_text().strip() == a.admin_auth.token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        a.stop()
    logged = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    assert [e["path"] for e in logged if e["event"] == "admin_token_temporary"] == [str(path)]
    assert not path.parent.exists()  # removed when the agent stopped


def test_a_loose_data_dir_is_tightened_with_one_warning(tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "peers.json").write_text("[]\n")
    os.chmod(data / "peers.json", 0o644)
    make_agent(tmp_path, config=False)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "peers.json").stat().st_mode) == 0o600
    logged = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    warned = [e for e in logged if e["event"] == "data_dir_tightened"]
    assert len(warned) == 1 and warned[0]["level"] == "warn"
    make_agent(tmp_path, config=False)  # already tight: no second line
    logged = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    assert len([e for e in logged if e["event"] == "data_dir_tightened"]) == 1
