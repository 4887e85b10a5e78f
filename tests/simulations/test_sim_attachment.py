"""The hook for a second per-node core: user payloads, broadcasts, timers and TCP-like exchanges."""

from __future__ import annotations

from gossipmesh.ids import Address
from simulations.cluster import Cluster
from simulations.engine import derive_rng
from simulations.hosts import Attachment, SimNode
from simulations.network import Latency, Network
from simulations.scenarios import swim_config


class Recorder(Attachment):
    """Writes down what arrives; node 0 broadcasts, then asks node 1 for a digest."""

    def __init__(self, log: dict[str, list[object]]) -> None:
        self.log = log

    def start(self, host: SimNode, now_ms: int) -> None:
        if host.idx == 0:
            host.set_timer("broadcast", now_ms + 20_000)

    def on_timer(self, host: SimNode, token: object, now_ms: int) -> None:
        host.queue_broadcast(b"config-delta-1")
        host.exchange(host.cluster.nodes[1].address, b"digest?", token="ex-1")

    def on_user_message(self, host: SimNode, src: Address, payload: bytes, now_ms: int) -> None:
        self.log.setdefault(host.name, []).append(payload)

    def handle_exchange(self, host: SimNode, src: Address, data: bytes, now_ms: int) -> bytes:
        return b"digest from " + host.name.encode() + b" for " + data

    def on_exchange_reply(self, host: SimNode, token: object, reply: bytes, now_ms: int) -> None:
        self.log.setdefault("replies", []).append((token, reply))


def test_an_attachment_can_broadcast_and_exchange() -> None:
    log: dict[str, list[object]] = {}
    c = Cluster(
        3,
        swim_config("lan"),
        Network(derive_rng(3, "network"), Latency(1, 0.5, 0.6)),
        attachment_factory=lambda host, previous: Recorder(log),
    )
    for _ in range(20):
        c.add_node()
    c.at(0, c.boot, 0, ())
    for i in range(1, 20):
        c.at(10 * i, c.boot, i, [0])
    c.run_until(40_000)
    receivers = [k for k in log if k.startswith("node-")]
    assert len(receivers) == 19  # everyone but the sender got the broadcast exactly once
    assert all(log[k] == [b"config-delta-1"] for k in receivers)
    assert log["replies"] == [("ex-1", b"digest from node-00001 for digest?")]
