"""Stateful: replicas on a lossy, reordering, duplicating channel, then anti-entropy.

Every replica must end identical, and no acknowledged write may be lost: each one is either still
a current entry everywhere or was replaced by a write that had seen it. Writes are signed for real,
by two operators (replica i signs as operator i % 2), through the agent's authority.
"""

from __future__ import annotations

import pytest
from crdt_helpers import T0, new_doc, snapshot, write
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_crdt_sync import push_pull

from gossipmesh.crdt import sync
from gossipmesh.crdt.document import Entry

N = 4
KEYS = ["route/a", "route/b", "service/c", "policy/d"]


class Convergence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.docs = [new_doc() for _ in range(N)]
        self.wall_ms = T0
        self.channel: list[tuple[int, bytes]] = []  # (destination, encoded delta), in flight
        self.acked: list[Entry] = []

    def _send(self, src: int, msg: bytes) -> None:
        for dst in range(N):
            if dst != src:
                self.channel.append((dst, msg))

    @rule(src=st.integers(0, N - 1), key=st.sampled_from(KEYS), v=st.integers(0, 9),
          delete=st.booleans(), advance=st.integers(0, 50))  # fmt: skip
    def write(self, src: int, key: str, v: int, delete: bool, advance: int) -> None:
        self.wall_ms += advance
        body = None if delete else {"v": v}
        delta = write(self.docs[src], key, body, f"n{src}", self.wall_ms, src % 2)
        self.acked.extend(delta.entries)
        if not delta.is_empty:
            self._send(src, sync.encode(sync.DeltaMessage(delta)))

    @precondition(lambda self: self.channel)
    @rule(i=st.integers(0, 10**6), duplicate=st.booleans(), forward=st.booleans())
    def deliver(self, i: int, duplicate: bool, forward: bool) -> None:
        idx = i % len(self.channel)  # any message: reordering
        dst, msg = self.channel[idx] if duplicate else self.channel.pop(idx)
        result = sync.handle(self.docs[dst], sync.decode(msg), self.wall_ms).merged
        assert result is not None
        if forward and result.forward is not None:  # eager push of what was new
            self._send(dst, sync.encode(sync.DeltaMessage(result.forward)))

    @precondition(lambda self: self.channel)
    @rule(i=st.integers(0, 10**6))
    def drop(self, i: int) -> None:
        self.channel.pop(i % len(self.channel))

    @rule(a=st.integers(0, N - 1), b=st.integers(0, N - 1))
    def anti_entropy_pair(self, a: int, b: int) -> None:
        if a != b:
            push_pull(self.docs[a], self.docs[b], self.wall_ms)

    @invariant()
    def no_acked_write_lost_locally(self) -> None:
        for e in self.acked:
            assert self.docs[int(e.writer[1:])].has_seen(e.key, e.dot)

    def teardown(self) -> None:
        # Heal: a ring of push-pulls twice round reaches everyone.
        for _ in range(2):
            for i in range(N):
                push_pull(self.docs[i], self.docs[(i + 1) % N], self.wall_ms)
        first = snapshot(self.docs[0])
        for d in self.docs:
            assert snapshot(d) == first
        doc = self.docs[0]
        for e in self.acked:
            assert doc.has_seen(e.key, e.dot)
            current = doc.siblings(e.key)
            assert any(c.dot == e.dot for c in current) or any(c.covers(e) for c in current)
        for key in KEYS:
            values = {str(d.get(key)) for d in self.docs}
            assert len(values) == 1


TestConvergence = Convergence.TestCase
TestConvergence.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.slow
class TestConvergenceLong(Convergence.TestCase):  # type: ignore[misc,valid-type]
    settings = settings(max_examples=400, stateful_step_count=80, deadline=None)
