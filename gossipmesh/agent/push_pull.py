"""Push-pull over TCP: the agent's half of the SWIM core's full state exchange.

Theory of operation
-------------------
The core asks for an exchange with ``StartPushPull(to, join)``; ``PushPullStreams.start`` runs it
as a background task: take the core's payload, open a ``pushpull`` stream to the peer, send it,
read one reply frame, all within ``stream_timeout_s``, and feed the outcome back to the core
(``handle_push_pull_reply`` or ``push_pull_failed``). Every started exchange is reported to the
core exactly once, whatever happens. At most ``push_pull_concurrency_max`` run at once (the core
bounds its own too); one over the limit is reported failed at once and counted.

Serving: a peer's ``pushpull`` stream carries its payload; the core merges it and answers with
ours, or with ``b""`` for a request it rejected, which closes the stream without a reply.

A join (``Joiner``, ``join.py``) waits for the outcome of its exchanges through
``add_join_waiter``; a graceful leave hands our "left" record to a few members directly with
``notify_leave``, which merges it as left on their side. Why the latest exchange with a join target
failed (``failure_reason``: refused, timed out, closed unanswered, an answer that does not open)
is kept for it, so the joiner's ``join_retry`` line and ``gossipmesh join`` can say it: a peer
with another gossip key or cluster name closes our stream without a word (it logs
``decrypt_failed`` at its end), which is otherwise indistinguishable from silence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from gossipmesh.agent.streams import SealedStream
from gossipmesh.errors import CoreError, DecodeError
from gossipmesh.ids import Address

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

JoinWaiter = Callable[[bool], None]
MAX_FAILURE_REASONS = 256  # join targets whose latest failure is remembered (oldest forgotten)

KEY_OR_CLUSTER = "another gossip key or cluster name (its log says decrypt_failed)"


def failure_reason(exc: BaseException) -> str:
    """One line on why a push-pull exchange failed, for the operator."""
    cause = exc.__cause__
    if type(exc) is OSError and not exc.strerror and cause is not None:
        # trio.open_tcp_stream: "all attempts to connect failed", the attempts' errors as cause.
        attempts = cause.exceptions if isinstance(cause, BaseExceptionGroup) else (cause,)
        if attempts:
            return failure_reason(attempts[0])
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: no agent listens on that gossip port"
    if isinstance(exc, trio.TooSlowError):
        return "timed out: nothing answered (a firewall, or no agent there)"
    if isinstance(exc, EOFError):
        return f"it closed the stream without answering: {KEY_OR_CLUSTER}, or it refused us"
    if isinstance(exc, DecodeError) and exc.reason == "decrypt":
        return f"its answer does not open with our keys: {KEY_OR_CLUSTER}"
    if isinstance(exc, DecodeError):
        return f"bad answer ({exc.reason})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


class PushPullStreams:
    """Runs and serves push-pull exchanges for one agent (see the module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._in_flight = 0
        self._max = agent.swim_config.push_pull_concurrency_max
        self._join_waiters: dict[Address, list[JoinWaiter]] = {}
        self._failures: dict[Address, str] = {}  # join targets only; see the module doc
        self.nursery: trio.Nursery | None = None  # where exchanges run; set while the agent runs

    @property
    def has_room(self) -> bool:
        """True if one more exchange may start now."""
        return self._in_flight < self._max

    def add_join_waiter(self, to: Address, waiter: JoinWaiter) -> None:
        """``waiter(ok)`` runs once the next join exchange with ``to`` is over."""
        self._join_waiters.setdefault(to, []).append(waiter)

    def last_failure(self, to: Address) -> str | None:
        """Why the latest join exchange with ``to`` failed (None: it answered, or never tried)."""
        return self._failures.get(to)

    async def serve(self, stream: SealedStream, src: Address, body: bytes) -> None:
        """The ``pushpull`` stream handler."""
        reply = await self._agent.call(
            lambda node, now: node.handle_push_pull_request(src, body, now)
        )
        if reply:  # the core answers b"" to a request it rejected: close without a reply
            await stream.send(reply)

    def start(self, to: Address, join: bool) -> None:
        assert self.nursery is not None
        if self._in_flight >= self._max:
            self._agent.counters["dropped.push_pull_limit"] += 1
            self.nursery.start_soon(self._done, to, join, None)
            return
        self._in_flight += 1
        self.nursery.start_soon(self._run, to, join)

    async def _run(self, to: Address, join: bool) -> None:
        agent = self._agent
        reply: bytes | None = None
        try:
            payload = await agent.call(lambda node, now: (node.push_pull_payload(join), []))
            with trio.fail_after(agent.stream_timeout_s):
                stream = await agent.open_stream(to, "pushpull", payload)
                try:
                    reply = await stream.receive()
                finally:
                    await stream.aclose()
        except (
            OSError,
            trio.TooSlowError,
            EOFError,
            DecodeError,
            trio.BrokenResourceError,
            CoreError,
        ) as exc:
            agent.counters["push_pull.failed"] += 1
            agent.log.debug("push_pull_failed", peer=str(to), error=repr(exc))
            if join:
                self._failures.pop(to, None)
                if len(self._failures) >= MAX_FAILURE_REASONS:
                    del self._failures[next(iter(self._failures))]
                self._failures[to] = failure_reason(exc)
        finally:
            self._in_flight -= 1
        await self._done(to, join, reply)

    async def _done(self, to: Address, join: bool, reply: bytes | None) -> None:
        agent = self._agent
        try:
            if reply is None:
                await agent.call(lambda node, now: (None, node.push_pull_failed(to, now)))
            else:
                agent.counters["push_pull.ok"] += 1
                await agent.call(
                    lambda node, now: (None, node.handle_push_pull_reply(to, reply, now))
                )
        except CoreError:
            pass  # the agent logged and counted the core's bug; the exchange is over either way
        if join:
            if reply is not None:
                self._failures.pop(to, None)
            for waiter in self._join_waiters.pop(to, []):
                waiter(reply is not None)

    async def notify_leave(self, to: Address) -> None:
        """Hand our full state, with our "left" record, to ``to``; its reply is not merged."""
        agent = self._agent
        try:
            payload = await agent.call(lambda node, now: (node.push_pull_payload(False), []))
            stream = await agent.open_stream(to, "pushpull", payload)
            try:
                await stream.receive()
            finally:
                await stream.aclose()
        except (OSError, EOFError, DecodeError, trio.BrokenResourceError, CoreError):
            agent.counters["leave_notify.failed"] += 1
