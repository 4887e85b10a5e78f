"""Joining a cluster: through given addresses, at boot through seeds or saved peers, with retries.

Theory of operation
-------------------
``join(addresses)`` resolves each address, asks the core for a join exchange with every one
(``SwimNode.join``: one push-pull each, whose reply is merged quietly) and waits, up to a timeout,
for their outcomes (``PushPullStreams.add_join_waiter``). It reports which answered; once one has,
the peers are saved at once, so a crash right after joining still finds its way back.

At boot, ``auto_join`` joins the ``--join`` seeds, else the peers saved in the data directory,
retrying with exponential backoff (``JOIN_BACKOFF_S``) until one answers -- or until a peer
reaches us first, which joins us just as well. After a successful join one more push-pull with a
random member (``settle_sync``) fills in the members that joined at the same time as we did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from gossipmesh.agent.push_pull import PushPullStreams
from gossipmesh.errors import CoreError
from gossipmesh.ids import Address
from gossipmesh.swim.member import MemberState

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

JOIN_BACKOFF_S = (0.5, 30.0)  # first retry delay, cap


class Joiner:
    """Joins for one agent (see the module docstring)."""

    def __init__(self, agent: Agent, push_pulls: PushPullStreams) -> None:
        self._agent = agent
        self._push_pulls = push_pulls

    async def join(self, addresses: Sequence[Address], timeout_s: float = 5.0) -> dict[str, bool]:
        """Push-pull with each address (resolved); report which answered within the timeout."""
        agent = self._agent
        resolved: dict[str, Address | None] = {}
        for addr in addresses:
            resolved[str(addr)] = await resolve(addr)
        results: dict[str, bool] = {k: False for k in resolved}
        targets = {a for a in resolved.values() if a is not None and a != agent.address}
        if not targets:
            return results
        done = trio.Event()
        outcome: dict[Address, bool] = {}

        def waiter_for(a: Address) -> Callable[[bool], None]:
            def record(ok: bool) -> None:
                outcome[a] = ok
                if len(outcome) == len(targets):
                    done.set()

            return record

        for target in targets:
            self._push_pulls.add_join_waiter(target, waiter_for(target))
        try:
            await agent.call(lambda node, now: (None, node.join(sorted(targets), now)))
        except CoreError:
            return results  # the agent logged the core's bug; no exchange was started
        with trio.move_on_after(timeout_s):
            await done.wait()
        if any(outcome.values()):
            agent.save_peers()  # a crash right after joining must still find its way back
        for text, a in resolved.items():
            results[text] = a is not None and outcome.get(a, False)
        return results

    async def auto_join(self) -> None:
        """Join the --join seeds (else the saved peers), retrying with backoff until one answers."""
        agent = self._agent
        seeds = list(agent.settings.join)
        source = "flags"
        if not seeds and agent.store is not None:
            seeds = [p for p in agent.store.load_peers() if p != agent.address]
            source = "saved_peers"
        if not seeds:
            return
        delay, cap = JOIN_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            results = await self.join(seeds)
            if any(results.values()):
                agent.log.info("joined", via=[k for k, v in results.items() if v], source=source)
                await self.settle_sync()
                return
            alive = [m for m in await agent.members() if m.state is MemberState.ALIVE]
            if len(alive) > 1:
                agent.log.info("joined", via="peer contacted us", source=source)
                return
            agent.log.warn("join_retry", seeds=[str(s) for s in seeds], attempt=attempt, in_s=delay,
                           reasons=await self.reasons(seeds))  # fmt: skip
            await trio.sleep(delay)
            delay = min(cap, delay * 2)

    async def reasons(self, seeds: Sequence[Address]) -> dict[str, str]:
        """Why each seed did not answer, as far as this side can tell."""
        out: dict[str, str] = {}
        for seed in seeds:
            resolved = await resolve(seed)
            if resolved is None:
                out[str(seed)] = f"cannot resolve host {seed.host!r}"
            else:
                out[str(seed)] = self._push_pulls.last_failure(resolved) or "no answer"
        return out

    async def settle_sync(self) -> None:
        """One more push-pull with a random member shortly after joining.

        Members that join together learn of each other by gossip, and each rumour is sent only
        λ·⌈log10(n+1)⌉ times (2 in the local profile), so a node can miss a later joiner until
        the next periodic push-pull. One extra exchange a couple of probe intervals after joining
        closes most of that gap for one TCP round trip; both sides learn what the other missed.
        """
        agent = self._agent
        await trio.sleep(2 * agent.swim_config.probe_interval_ms / 1000)
        me = agent.settings.name
        peers = [
            m.address
            for m in await agent.members()
            if m.name != me and m.state is MemberState.ALIVE
        ]
        if peers and self._push_pulls.has_room:
            self._push_pulls.start(agent.rng.choice(peers), join=False)


async def resolve(addr: Address) -> Address | None:
    """The IPv4 address (else the first address) ``addr``'s host resolves to; None if none."""
    try:
        infos = await trio.socket.getaddrinfo(addr.host, addr.port, type=trio.socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, _, _, _, sockaddr in infos:
        if family == trio.socket.AF_INET:
            return Address(str(sockaddr[0]), int(sockaddr[1]))
    return Address(str(infos[0][4][0]), int(infos[0][4][1])) if infos else None
