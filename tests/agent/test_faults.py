"""Fault injection's packet loss (``FaultInjector.loss``): the share of datagrams lost, drawn from
the injected random, its bounds, and the admin API that sets it (in-process, real sockets)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from admin_http import http
from agent_procs import requires_loopback_aliases

from gossipmesh.agent.faults import FaultInjector, install_faults
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.crypto import Keyring
from gossipmesh.ids import Address


def test_no_loss_by_default_and_after_clear() -> None:
    faults = FaultInjector(random.Random(1))
    assert not any(faults.loses() for _ in range(1000))
    faults.set(frozenset(), loss=1.0)
    assert all(faults.loses() for _ in range(1000))
    faults.clear()
    assert faults.loss == 0.0
    assert not any(faults.loses() for _ in range(1000))


def test_loss_is_the_share_of_datagrams_lost() -> None:
    faults = FaultInjector(random.Random(7))
    faults.set(frozenset(), loss=0.25)
    lost = sum(faults.loses() for _ in range(20000))
    assert 4500 < lost < 5500


def test_loss_leaves_the_drop_set_alone_and_the_reverse() -> None:
    peer = Address("10.0.0.2", 7946)
    faults = FaultInjector(random.Random(3))
    faults.set(frozenset({peer}), loss=0.5)
    assert faults.blocks(peer) and faults.blocks(Address("10.0.0.2", 0))
    assert not faults.blocks(Address("10.0.0.3", 7946))
    assert faults.dropped == frozenset({peer}) and faults.loss == 0.5


@pytest.mark.parametrize("loss", [-0.1, 1.01])
def test_loss_outside_zero_to_one_is_refused(loss: float) -> None:
    with pytest.raises(ValueError):
        FaultInjector().set(frozenset(), loss=loss)


def make_agent(tmp_path: Path) -> Agent:
    settings = load_settings(
        {
            "name": "a",
            "bind": "127.0.0.2:0",
            "admin": "127.0.0.2:0",
            "profile": "local",
            "cluster": "t",
            "data_dir": str(tmp_path / "a"),
            "no_proxy": True,
            "enable_fault_injection": True,
        }
    )
    log = EventLog(stream=open(tmp_path / "a.log", "a"), level="debug")  # noqa: SIM115
    agent = Agent(settings, keyring=Keyring([bytes(range(32))]), log=log)
    install_faults(agent)
    return agent


@requires_loopback_aliases
async def test_loss_through_the_admin_api(nursery: trio.Nursery, tmp_path: Path) -> None:
    agent = await nursery.start(make_agent(tmp_path).run)
    try:
        for bad in (-0.5, 2, "x", True):
            status, body = await http(agent, "POST", "/v1/faults", {"drop": [], "loss": bad})
            assert status == 400, body
        assert (await http(agent, "GET", "/v1/faults"))[1] == {"drop": [], "loss": 0.0}
        status, body = await http(agent, "POST", "/v1/faults", {"drop": [], "loss": 1})
        assert status == 200 and body == {"drop": [], "loss": 1.0}
        peer = Address("127.0.0.9", 9)
        await agent.transport.send_packet(peer, b"x")
        assert agent.transport.counters["faults.udp_lost"] == 1
        assert agent.transport.counters["udp.sent"] == 0
        status, body = await http(agent, "DELETE", "/v1/faults")
        assert status == 200 and body == {"drop": [], "loss": 0.0}
        await agent.transport.send_packet(peer, b"x")
        assert agent.transport.counters["faults.udp_lost"] == 1
        assert agent.transport.counters["udp.sent"] == 1
    finally:
        agent.stop()
