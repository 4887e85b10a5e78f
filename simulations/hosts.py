"""The host model: what a simulated host is, the core it runs, and the handle a second core uses.

Theory of operation
-------------------
A ``SimNode`` is one simulated host. It carries the ground truth about itself (``state``: UP,
DOWN (crashed), LEFT, or NOT_STARTED; these four constants are the only truth the checkers
compare the observers' views with), the real sans-IO core it runs (``core``, built by a
``CoreFactory``; ``default_core_factory`` builds the real ``SwimNode``), and the runtime's
bookkeeping for it: a *generation* bumped on every crash and restart so a dead process's timers
never fire into its successor, the incarnation it booted at and the highest it ever held, and
its slowness (``packet_lag_ms``, ``timer_lag_ms``) or pause (``paused_until_ms``). The
``Cluster`` (``cluster.py``) owns every host and changes these fields; nothing here acts on its
own.

``Core`` is the part of the core's contract the simulator drives; a test can swap in a broken
core through a ``CoreFactory``.

Extension hook for a second core (the config CRDT)
-------------------------------------------------
Pass ``attachment_factory(host, previous) -> Attachment`` to the ``Cluster``. Each (re)booted
host gets one ``Attachment``; ``previous`` is the old one when a node restarts *with* its data,
else ``None``. The attachment receives ``UserMessage`` payloads and member changes, and acts
through its host: ``host.queue_broadcast(payload)`` (piggyback on SWIM gossip),
``host.send_user_message(payload, fanout)``, ``host.set_timer(token, at_ms)`` (delivered back as
``on_timer``) and ``host.exchange(to, data, token)``, a TCP-like request/reply answered by the
peer attachment's ``handle_exchange`` (delivered back as ``on_exchange_reply`` /
``on_exchange_failed``). The host's ``rng`` is a child of the master seed, so the second core
stays replayable too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.member import Member, MemberState

if TYPE_CHECKING:
    from simulations.cluster import Cluster

# Ground-truth states of a host.
NOT_STARTED = 0
UP = 1
DOWN = 2
LEFT = 3


class Core(Protocol):
    """The part of ``SwimNode``'s contract the simulator drives (docs/ARCHITECTURE.md)."""

    def start(self, now_ms: int) -> list[Any]: ...
    def join(self, seeds: Sequence[Address], now_ms: int) -> list[Any]: ...
    def handle_packet(self, src: Address, data: bytes, now_ms: int) -> list[Any]: ...
    def handle_timer(self, timer: object, now_ms: int) -> list[Any]: ...
    def push_pull_payload(self, join: bool) -> bytes: ...
    def handle_push_pull_request(
        self, src: Address, data: bytes, now_ms: int
    ) -> tuple[bytes, list[Any]]: ...
    def handle_push_pull_reply(self, src: Address, data: bytes, now_ms: int) -> list[Any]: ...
    def push_pull_failed(self, to: Address, now_ms: int) -> list[Any]: ...
    def leave(self, now_ms: int) -> list[Any]: ...
    def queue_broadcast(self, payload: bytes, now_ms: int) -> None: ...
    def send_user_message(self, payload: bytes, fanout: int, now_ms: int) -> list[Any]: ...
    def members(self) -> list[Member]: ...
    def member(self, name: str) -> Member | None: ...
    def local_member(self) -> Member: ...


CoreFactory = Callable[[str, Address, Any, random.Random, int, int, Authority], Core]


def default_core_factory(
    name: str,
    address: Address,
    config: Any,
    rng: random.Random,
    now_ms: int,
    incarnation: int,
    authority: Authority,
) -> Core:
    from gossipmesh.swim.node import SwimNode  # the real core; imported late on purpose

    return SwimNode(name, address, config, rng, now_ms, incarnation=incarnation,
                    authority=authority)  # fmt: skip


class Attachment:
    """Base for a second per-node core (e.g. the config CRDT). Every hook defaults to a no-op."""

    def start(self, host: SimNode, now_ms: int) -> None:
        pass

    def on_user_message(self, host: SimNode, src: Address, payload: bytes, now_ms: int) -> None:
        pass

    def on_member_changed(
        self, host: SimNode, member: Member, previous: MemberState | None, now_ms: int
    ) -> None:
        pass

    def on_timer(self, host: SimNode, token: object, now_ms: int) -> None:
        pass

    def handle_exchange(self, host: SimNode, src: Address, data: bytes, now_ms: int) -> bytes:
        return b""

    def on_exchange_reply(self, host: SimNode, token: object, reply: bytes, now_ms: int) -> None:
        pass

    def on_exchange_failed(self, host: SimNode, token: object, now_ms: int) -> None:
        pass


AttachmentFactory = Callable[["SimNode", Attachment | None], Attachment]


@dataclass(slots=True)
class SimNode:
    """One simulated host: the truth about it, its core, and the handle its attachment uses."""

    idx: int
    name: str
    address: Address
    cluster: Cluster
    state: int = NOT_STARTED
    core: Core | None = None
    attachment: Attachment | None = None
    generation: int = 0
    incarnation_at_boot: int = 0
    last_incarnation: int = 0
    boots: int = 0
    packet_lag_ms: int = 0
    timer_lag_ms: int = 0
    paused_until_ms: int = 0  # a frozen process: its inputs and timers wait until then
    sent: int = 0
    rng: random.Random = field(default_factory=random.Random)

    # -- the handle an attachment acts through ----------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.cluster.engine.now_ms

    def queue_broadcast(self, payload: bytes) -> None:
        assert self.core is not None
        self.core.queue_broadcast(payload, self.now_ms)

    def send_user_message(self, payload: bytes, fanout: int) -> None:
        assert self.core is not None
        self.cluster.apply(self, self.core.send_user_message(payload, fanout, self.now_ms))

    def set_timer(self, token: object, at_ms: int) -> None:
        self.cluster.set_attachment_timer(self, token, at_ms)

    def exchange(self, to: Address, data: bytes, token: object) -> None:
        self.cluster.streams.start_exchange(self, to, data, token)
