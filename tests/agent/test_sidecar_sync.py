"""The ``records-sync`` repair path between two in-process agents on real sockets, with gossip
out of the picture (the agents never join), so only the push-pull can move records."""

from __future__ import annotations

from pathlib import Path

import trio
from test_agent import make_agent

from gossipmesh.agent.events import wall_ms
from gossipmesh.agent.records_sync import SYNC_KIND, RecordSync
from gossipmesh.agent.runtime import Agent
from gossipmesh.config.identity import RecordSigner
from gossipmesh.crdt.records import RecordBody, ServiceInstance, make_record
from gossipmesh.identity import NodeCredentials, playground_root


def body(port: int) -> RecordBody:
    return RecordBody((ServiceInstance("web", "127.0.0.1", port, (), 1, "passing"),), ("h", 1))


async def test_one_sync_moves_records_both_ways(nursery: trio.Nursery, tmp_path: Path) -> None:
    agents: dict[str, Agent] = {}
    syncs: dict[str, RecordSync] = {}
    changes = {"a": 0, "b": 0}
    for name, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
        agent = make_agent(name, ip, tmp_path)

        def bump(n: str = name) -> None:
            changes[n] += 1

        syncs[name] = RecordSync(agent, bump)
        agents[name] = await nursery.start(agent.run)
    a, b = agents["a"], agents["b"]
    # Certificates normally come from SWIM; these agents never meet, so hand them over.
    syncs["a"].keys.learn("b", b.identity.credentials.cert_der)
    syncs["b"].keys.learn("a", a.identity.credentials.cert_der)
    rec_a = await syncs["a"].publish(body(1))
    rec_b = await syncs["b"].publish(body(2))
    # A third node's record that b holds and a has no certificate for: a parks it.
    third = NodeCredentials.issue(playground_root(a.settings.cluster), "c", now_ms=wall_ms())
    syncs["b"].keys.learn("c", third.cert_der)
    syncs["b"]._accept(make_record("c", 3, body(3), RecordSigner(third)))
    assert syncs["a"].table.get("b") is None

    assert b.address is not None
    assert await syncs["a"].sync_with(b.address)
    assert syncs["a"].table.get("b") == rec_b
    assert "c" in syncs["a"]._pending and syncs["a"].table.get("c") is None
    # The initiator pushed back what b lacked; the server side runs on after our close.
    with trio.fail_after(5):
        while syncs["b"].table.get("a") != rec_a:
            await trio.sleep(0.01)
    assert changes["a"] >= 2 and changes["b"] >= 3
    assert a.counters["records.sync_ok"] == 1
    assert a.counters["records.unknown_owner"] == 1

    # An in-sync pair exchanges nothing new.
    before = dict(syncs["b"].table.versions())
    assert await syncs["b"].sync_with(a.address)  # type: ignore[arg-type]
    assert syncs["b"].table.versions() == before

    # Garbage on the stream kind is counted by the runtime, and the agent keeps serving.
    stream = await a.open_stream(b.address, SYNC_KIND, b"\xc1 not msgpack")
    await stream.aclose()
    with trio.fail_after(5):
        while not b.counters["dropped.stream_records_sync"]:
            await trio.sleep(0.01)
    assert await syncs["a"].sync_with(b.address)
    a.stop()
    b.stop()
