"""TCP-like streams: the push-pull legs of the SWIM cores and the exchanges of their attachments.

Theory of operation
-------------------
A ``StartPushPull`` effect (and an attachment's ``host.exchange``) becomes a TCP-like
request/reply between two hosts, carried as engine events:

- the request travels one leg (network latency, plus the receiver's ``packet_lag_ms`` with
  ±50 % jitter when it is a slow node), then the peer's handler runs: the core's
  ``handle_push_pull_request``, or the peer attachment's ``handle_exchange``;
- the reply travels back the same way and is handed to the initiator
  (``handle_push_pull_reply`` / ``on_exchange_reply``);
- if either leg is blocked (partition) or the peer is not up, the initiator is told it failed
  (``push_pull_failed`` / ``on_exchange_failed``) at the start plus the TCP timeout, as a real
  connect or read timeout would; a reply that arrives after that deadline fails the same way.

Each leg carries a ticket ``(generation, started_ms, data[, token])``: the initiator's
generation, so the reply or failure meant for a process that has since crashed or restarted is
dropped, and the start time the deadline is measured from. A leg due at a paused host waits
for it (``Cluster.deferred``), like every other input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossipmesh.ids import Address
from simulations.events import (
    K_EX_FAIL,
    K_EX_REPLY,
    K_EX_REQUEST,
    K_PP_FAIL,
    K_PP_REPLY,
    K_PP_REQUEST,
)
from simulations.hosts import UP, SimNode

if TYPE_CHECKING:
    from simulations.cluster import Cluster


class Streams:
    """The stream legs of one cluster; registers their handlers on the cluster's engine."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        e = cluster.engine
        e.register(K_PP_REQUEST, self._on_pp_request)
        e.register(K_PP_REPLY, self._on_pp_reply)
        e.register(K_PP_FAIL, self._on_pp_fail)
        e.register(K_EX_REQUEST, self._on_ex_request)
        e.register(K_EX_REPLY, self._on_ex_reply)
        e.register(K_EX_FAIL, self._on_ex_fail)

    def _leg_delay(self, src: int, dst: int) -> int:
        c = self.cluster
        lag = c.nodes[dst].packet_lag_ms
        if lag:
            lag = int(lag * (0.5 + c.rng.random()))
        return c.network.latency(src, dst) + lag

    # -- push-pull ---------------------------------------------------------------------------

    def start_push_pull(
        self, node: SimNode, to: Address, join: bool, data: bytes | None = None
    ) -> None:
        """``node``'s core asked for a push-pull with ``to``; ``data`` replaces its payload (a
        captured host's forgery), else the core's own ``push_pull_payload(join)`` is sent."""
        assert node.core is not None
        c = self.cluster
        now = c.engine.now_ms
        c.network.stats.streams += 1
        dst = c.by_address.get(to)
        if data is None:
            data = node.core.push_pull_payload(join)
        ticket = (node.generation, now, data)
        if dst is None or not c.network.link_up(node.idx, dst):
            c.engine.schedule(now + c.tcp_timeout_ms, K_PP_FAIL, node.idx, to, ticket)
            return
        c.engine.schedule(now + self._leg_delay(node.idx, dst), K_PP_REQUEST, node.idx, dst,
                          ticket)  # fmt: skip

    def _on_pp_request(self, src: int, dst: int, ticket: tuple[int, int, bytes]) -> None:
        c = self.cluster
        if c.paused and c.deferred(dst, K_PP_REQUEST, src, dst, ticket):
            return
        engine = c.engine
        peer = c.nodes[dst]
        initiator = c.nodes[src]
        _gen, started, data = ticket
        if peer.core is None or peer.state != UP:
            engine.schedule(started + c.tcp_timeout_ms, K_PP_FAIL, src, peer.address, ticket)
            return
        engine.trace(K_PP_REQUEST, src, dst, len(data))
        reply, effects = peer.core.handle_push_pull_request(initiator.address, data,
                                                            engine.now_ms)  # fmt: skip
        if effects:
            c.apply(peer, effects)
        if not c.network.link_up(dst, src):
            engine.schedule(started + c.tcp_timeout_ms, K_PP_FAIL, src, peer.address, ticket)
            return
        engine.schedule(engine.now_ms + self._leg_delay(dst, src), K_PP_REPLY, src, dst,
                        (ticket[0], started, reply))  # fmt: skip

    def _on_pp_reply(self, src: int, dst: int, ticket: tuple[int, int, bytes]) -> None:
        c = self.cluster
        if c.paused and c.deferred(src, K_PP_REPLY, src, dst, ticket):
            return
        node = c.nodes[src]
        generation, started, reply = ticket
        if node.generation != generation or node.core is None:
            return
        engine = c.engine
        peer_addr = c.nodes[dst].address
        if engine.now_ms - started > c.tcp_timeout_ms:
            # The reply came back, but after the read deadline: the runtime would have given up.
            c.network.stats.streams_failed += 1
            c.apply(node, node.core.push_pull_failed(peer_addr, engine.now_ms))
            return
        engine.trace(K_PP_REPLY, dst, src, len(reply))
        c.apply(node, node.core.handle_push_pull_reply(peer_addr, reply, engine.now_ms))

    def _on_pp_fail(self, src: int, to: Address, ticket: tuple[int, int, bytes]) -> None:
        c = self.cluster
        if c.paused and c.deferred(src, K_PP_FAIL, src, to, ticket):
            return
        node = c.nodes[src]
        if node.generation != ticket[0] or node.core is None:
            return
        c.network.stats.streams_failed += 1
        c.engine.trace(K_PP_FAIL, src, c.by_address.get(to, -1), 0)
        c.apply(node, node.core.push_pull_failed(to, c.engine.now_ms))

    # -- attachment exchanges ----------------------------------------------------------------

    def start_exchange(self, node: SimNode, to: Address, data: bytes, token: object) -> None:
        c = self.cluster
        now = c.engine.now_ms
        dst = c.by_address.get(to)
        ticket = (node.generation, now, data, token)
        if dst is None or not c.network.link_up(node.idx, dst):
            c.engine.schedule(now + c.tcp_timeout_ms, K_EX_FAIL, node.idx, dst, ticket)
            return
        c.engine.schedule(now + self._leg_delay(node.idx, dst), K_EX_REQUEST, node.idx, dst,
                          ticket)  # fmt: skip

    def _on_ex_request(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        c = self.cluster
        if c.paused and c.deferred(dst, K_EX_REQUEST, src, dst, ticket):
            return
        engine = c.engine
        peer = c.nodes[dst]
        generation, started, data, token = ticket
        if peer.attachment is None or peer.state != UP or not c.network.link_up(dst, src):
            engine.schedule(started + c.tcp_timeout_ms, K_EX_FAIL, src, dst, ticket)
            return
        engine.trace(K_EX_REQUEST, src, dst, len(data))
        reply = peer.attachment.handle_exchange(peer, c.nodes[src].address, data,
                                                engine.now_ms)  # fmt: skip
        engine.schedule(engine.now_ms + self._leg_delay(dst, src), K_EX_REPLY, src, dst,
                        (generation, started, reply, token))  # fmt: skip

    def _on_ex_reply(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        c = self.cluster
        if c.paused and c.deferred(src, K_EX_REPLY, src, dst, ticket):
            return
        node = c.nodes[src]
        generation, started, reply, token = ticket
        if node.generation != generation or node.attachment is None:
            return
        now = c.engine.now_ms
        if now - started > c.tcp_timeout_ms:
            node.attachment.on_exchange_failed(node, token, now)
            return
        c.engine.trace(K_EX_REPLY, dst, src, len(reply))
        node.attachment.on_exchange_reply(node, token, reply, now)

    def _on_ex_fail(self, src: int, dst: int, ticket: tuple[int, int, bytes, object]) -> None:
        c = self.cluster
        if c.paused and c.deferred(src, K_EX_FAIL, src, dst, ticket):
            return
        node = c.nodes[src]
        if node.generation != ticket[0] or node.attachment is None:
            return
        node.attachment.on_exchange_failed(node, ticket[3], c.engine.now_ms)
