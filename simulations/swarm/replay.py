"""Replayed messages: a captured host resends genuine packets it received, long after the fact.

Theory of operation
-------------------
``captured.py``'s attacker forges: claims signed with its own key for others, invented members,
accusations out of bound. A thief of a node's key can also *replay*: every packet the captured
host receives carries other members' genuine, validly signed claims and accusations (alive at an
old incarnation, a suspicion since refuted, a death of a host that has since restarted). Resent
later, they must be taken as the old news they are: nothing they say may move a view backwards
(the ledger's monotone-incarnation check) or revive what is gone for good (completeness, once
the attack stops and the cluster settles).

``RecordingCore`` wraps the captured host's real core and keeps the last ``RECORD_MAX`` packets
it was handed (the core itself is untouched: every call is forwarded as is). ``Replayer`` sends,
every ``period_ms`` until ``until_ms``, one recorded packet at least ``age_ms`` old, from the
captured host's address to a random live host, through the simulated network like any other
datagram. Its choices come from its own rng, so a run replays.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from gossipmesh.ids import Address
from simulations.cluster import Cluster
from simulations.hosts import UP

RECORD_MAX = 256


class RecordingCore:
    """A core, forwarded as is, that remembers the packets it was handed (see above)."""

    def __init__(self, core: Any) -> None:
        self.inner = core
        self.recorded: deque[tuple[int, bytes]] = deque(maxlen=RECORD_MAX)

    def handle_packet(self, src: Address, data: bytes, now_ms: int) -> list[Any]:
        self.recorded.append((now_ms, data))
        return self.inner.handle_packet(src, data, now_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Replayer:
    """Resends old genuine packets from captured host ``idx`` (see the module docstring)."""

    def __init__(
        self,
        c: Cluster,
        idx: int,
        rng: random.Random,
        *,
        until_ms: int,
        period_ms: int = 300,
        age_ms: int = 2_000,
    ) -> None:
        self.c = c
        self.idx = idx
        self.rng = rng
        self.until_ms = until_ms
        self.period_ms = period_ms
        self.age_ms = age_ms
        self.sent = 0

    def start(self, at_ms: int) -> None:
        self.c.at(at_ms, self._tick)

    def _tick(self) -> None:
        c = self.c
        now = c.engine.now_ms
        host = c.nodes[self.idx]
        if now >= self.until_ms:
            return
        core = host.core
        if host.state == UP and isinstance(core, RecordingCore):
            old = [data for t, data in core.recorded if t <= now - self.age_ms]
            live = [n.idx for n in c.nodes if n.state == UP and n.idx != self.idx]
            if old and live:
                target = c.nodes[self.rng.choice(live)].address
                c.send_from(self.idx, target, self.rng.choice(old))
                self.sent += 1
        c.at(now + self.period_ms, self._tick)
