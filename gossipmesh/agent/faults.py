"""Fault injection for tests and demos: make this agent deaf and mute towards chosen peers.

Theory of operation
-------------------
Partitions are the failure the config replica exists to survive, and testing them needs a way to
cut links without root (no iptables in CI, and agents share one loopback). With
``--enable-fault-injection`` (refused unless the admin API is on loopback, since it lets any local
caller cut the node off), the admin API gains:

| method | path       | what |
|--------|------------|------|
| GET    | /v1/faults | the addresses currently dropped |
| POST   | /v1/faults | ``{"drop": ["HOST:PORT", ...], "loss": 0.2}``: replace the set of dropped gossip addresses and the share of datagrams lost (``loss`` optional, 0 by default) |
| DELETE | /v1/faults | drop nothing any more, lose nothing |

Without the flag the routes do not exist (404). The runtime consults one predicate,
``agent.transport_filter(address) -> bool``, on every path: outgoing and incoming UDP (matched on
the gossip ``HOST:PORT``), outgoing TCP streams (refused as if the connection failed) and
incoming TCP streams (closed at once). An incoming TCP connection comes from an ephemeral port,
so it is matched on the host alone (the runtime passes port 0): on a shared machine give each
agent its own loopback IP, as the tests do. Both directions are cut, so two groups that each drop
the other are fully partitioned even though each side only configured its own half. Every drop is
counted under ``faults.*`` in ``/v1/health``.

``loss`` is packet loss where the kernel offers none (no ``netem`` in a container, and the chaos
harness, ``benchmarks/chaos.py``, runs agents in network namespaces whose only fault tools are
links): each gossip datagram in or out, to or from anyone, is dropped with that probability
(counted under ``faults.udp_lost``). TCP streams are not affected: lost segments on a real network
delay a stream, they do not refuse it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

MAX_DROPPED = 1024


class FaultInjector:
    """The set of gossip addresses this agent pretends it cannot reach (nor hear from), and the
    share of its datagrams it loses."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._dropped: frozenset[Address] = frozenset()
        self._hosts: frozenset[str] = frozenset()
        self._loss = 0.0
        self._rng = rng if rng is not None else random.Random()

    @property
    def dropped(self) -> frozenset[Address]:
        return self._dropped

    @property
    def loss(self) -> float:
        return self._loss

    def set(self, addresses: frozenset[Address], loss: float = 0.0) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss {loss} is not in [0, 1]")
        self._dropped = addresses
        self._hosts = frozenset(a.host for a in addresses)
        self._loss = loss

    def clear(self) -> None:
        self.set(frozenset())

    def loses(self) -> bool:
        """True: lose this datagram (one draw per datagram, in or out)."""
        return self._loss > 0.0 and self._rng.random() < self._loss

    def blocks(self, address: Address) -> bool:
        """True: drop traffic to/from ``address``. Port 0 means "any port on this host" (incoming
        TCP, whose source port is ephemeral)."""
        if not self._dropped:
            return False
        if address.port == 0:
            return address.host in self._hosts
        return address in self._dropped


def install_faults(agent: Agent) -> FaultInjector:
    """Register the routes and hook the injector into the agent's transports."""
    injector = FaultInjector(random.Random(agent.rng.getrandbits(64)))
    agent.transport_filter = injector.blocks
    agent.transport.loss = injector.loses

    def view() -> JSONResponse:
        return JSONResponse({"drop": sorted(str(a) for a in injector.dropped),
                             "loss": injector.loss})  # fmt: skip

    async def get(req: Request) -> Response:
        return view()

    async def post(req: Request) -> Response:
        data = req.json_object()
        drop = data.get("drop")
        if not isinstance(drop, list) or not all(isinstance(a, str) for a in drop):
            raise HTTPError(400, "bad_request", '"drop" must be a list of "HOST:PORT" strings')
        if len(drop) > MAX_DROPPED:
            raise HTTPError(400, "bad_request", f"at most {MAX_DROPPED} addresses")
        loss = data.get("loss", 0)
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss <= 1:
            raise HTTPError(400, "bad_request", '"loss" must be a number from 0 to 1')
        try:
            addresses = frozenset(Address.parse(a) for a in drop)
        except UsageError as exc:
            raise HTTPError(400, "bad_address", str(exc)) from exc
        injector.set(addresses, float(loss))
        agent.log.warn("faults_set", drop=sorted(str(a) for a in addresses), loss=float(loss))
        return view()

    async def delete(req: Request) -> Response:
        injector.clear()
        agent.log.info("faults_cleared")
        return view()

    agent.router.add("GET", "/v1/faults", get)
    agent.router.add("POST", "/v1/faults", post)
    agent.router.add("DELETE", "/v1/faults", delete)
    return injector
