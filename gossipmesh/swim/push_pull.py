"""``StateSync``: push-pull, the full state exchange -- on join, periodically, and to reconnect.

Theory of operation
-------------------
A push-pull sends our whole member table to one peer over a stream and merges the peer's table
from its answer; the runtime carries the bytes (``StartPushPull``, then ``handle_push_pull_reply``
or ``push_pull_failed``). Three things start one:

- joining: one exchange per seed; the reply is merged *quietly* (learned, not re-gossiped: it is
  the seed's view, which the cluster already knows, and re-gossiping all of it from every
  newcomer would make a mass join cost O(n^2) broadcasts). Refutations about ourselves are
  still gossiped.
- the periodic timer: with one random alive member, every ``push_pull_interval_ms``, scaled up
  in big clusters as memberlist does (``push_pull_scale_ms``);
- reconnecting (Serf): with a random member we hold DEAD (not LEFT) for at most
  ``reconnect_timeout_ms``, with probability dead/live, so that two halves of a healed partition
  find each other again: the member hears it is dead and refutes.

Merging goes through ``rumours.py`` like any other news, except that a remote SUSPECT or DEAD
becomes our SUSPECT: one member's mistaken view must not kill a member here, and the accused
still gets its chance to refute. At most ``push_pull_concurrency_max`` outgoing exchanges are
pending; one the runtime never reported expires after twice the push-pull timeout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address, Millis
from gossipmesh.swim.effects import Effect, StartPushPull
from gossipmesh.swim.messages import (
    Alive,
    Dead,
    PushPull,
    Suspect,
    decode_push_pull,
    encode_push_pull,
)
from gossipmesh.swim.rumours import Rumours
from gossipmesh.swim.state import ALIVE, DEAD, LEFT, NodeState, is_alive

# memberlist's pushPullScaleThreshold: above this many members the push-pull interval grows.
PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale_ms(interval_ms: int, n: int) -> int:
    """memberlist's pushPullScale: one extra interval per doubling of n above 32 members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_ms
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval_ms


class StateSync:
    """Push-pull for one node (see the module docstring)."""

    def __init__(self, state: NodeState, rumours: Rumours) -> None:
        self.state = state
        self.rumours = rumours
        self._table = state.table
        self._pending: dict[Address, Millis] = {}  # outgoing periodic/reconnect, started at
        self._joins: dict[Address, None] = {}  # seeds asked for a join exchange, not yet answered

    def join(self, seeds: Sequence[Address]) -> list[Effect]:
        """Ask each seed for a full state exchange; the runtime retries if all fail."""
        st = self.state
        out: list[Effect] = []
        for seed in seeds:
            if seed != st.address:
                self._joins[seed] = None
                out.append(StartPushPull(seed, True))
                st.count("push_pull.started")
        return out

    def periodic(self, now_ms: Millis, out: list[Effect]) -> None:
        """The push-pull timer fired: exchange with one random alive member."""
        targets = self._table.random_members(1, is_alive)
        if targets:
            self._start(targets[0].address, now_ms, out)

    def reconnect(self, now_ms: Millis, out: list[Effect]) -> None:
        """The reconnect timer fired: maybe exchange with a member we hold dead."""
        st = self.state
        horizon = now_ms - st.config.reconnect_timeout_ms
        candidates = []
        for name in self._table.gone_names():
            m = self._table.get(name)
            since = self._table.gone_since(name)
            if m is not None and m.state is DEAD and since is not None and since >= horizon:
                candidates.append(m)
        if not candidates:
            return
        # Serf: attempt with probability failed/alive, so a mostly healthy cluster does not
        # hammer a few dead members from every node at once.
        prob = len(candidates) / max(1, self._table.live_count)
        rng = st.rng
        if rng.random() > prob:
            return
        target = candidates[rng.randrange(len(candidates))]
        st.count("reconnect.attempts")
        self._start(target.address, now_ms, out)

    def _start(self, to: Address, now_ms: Millis, out: list[Effect]) -> None:
        st = self.state
        pending = self._pending
        if pending:
            # The runtime reports every outcome; this only guards against a lost callback.
            expiry = now_ms - 2 * st.config.push_pull_timeout_ms
            for addr in [a for a, t in pending.items() if t < expiry]:
                del pending[addr]
        if to in pending or len(pending) >= st.config.push_pull_concurrency_max:
            st.count("push_pull.skipped")
            return
        pending[to] = now_ms
        st.count("push_pull.started")
        out.append(StartPushPull(to, False))

    def payload(self, join: bool) -> bytes:
        """Our full member table, encoded as a stream payload (frame it with wire.encode_frame)."""
        return encode_push_pull(PushPull(join, tuple(self._table.values())))

    def handle_request(
        self, src: Address, data: bytes, now_ms: Millis
    ) -> tuple[bytes, list[Effect]]:
        """Merge a peer's state and answer with ours; ``b""`` for a bad request."""
        out: list[Effect] = []
        if not self._merge(data, now_ms, out):
            return b"", out
        self.state.count("push_pull.served")
        # Built after the merge so a refutation it triggered is already in our answer.
        return self.payload(False), out

    def handle_reply(self, src: Address, data: bytes, now_ms: Millis) -> list[Effect]:
        self._pending.pop(src, None)
        out: list[Effect] = []
        st = self.state
        # A join reply is merged quietly (see the module docstring); ``queue_self_alive``
        # ignores quiet, so refutations about ourselves are still gossiped.
        st.quiet = self._joins.pop(src, 0) is None
        try:
            self._merge(data, now_ms, out)
        finally:
            st.quiet = False
        return out

    def failed(self, to: Address) -> list[Effect]:
        self._pending.pop(to, None)
        self._joins.pop(to, None)
        self.state.count("push_pull.failed")
        return []

    def _merge(self, data: bytes, now_ms: Millis, out: list[Effect]) -> bool:
        st = self.state
        try:
            pp = decode_push_pull(data, st.config.push_pull_max_bytes)
        except DecodeError as exc:
            st.count("drop.push_pull." + exc.reason)
            return False
        st.count("push_pull.merged")
        rumours = self.rumours
        me = st.name
        for r in pp.members:
            state = r.state
            if state is ALIVE:
                rumours.on_alive(r, now_ms, out)
            elif state is LEFT:
                rumours.on_dead(Dead(r.name, r.incarnation, r.name, True), now_ms, out)
            else:
                # A remote SUSPECT or DEAD becomes our SUSPECT: their view alone must not
                # kill a member here, and the accused still gets its chance to refute.
                if r.name not in self._table and r.name != me:
                    rumours.on_alive(Alive(r.name, r.incarnation, r.address, r.meta), now_ms, out)
                rumours.on_suspect(Suspect(r.name, r.incarnation, me), now_ms, out)
        return True
