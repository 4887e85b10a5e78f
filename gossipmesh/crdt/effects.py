"""What the config replica core asks its runtime to do. The core never performs I/O; it returns these.

The contract with a runtime (the trio agent's ``gossipmesh/agent/replica.py`` or the simulator's
``simulations/config_core.py``). Effects come in a list and are carried out in order:

- ``Persist(delta)``: append ``encode_delta(delta)`` to the durable log. It is always the first
  effect of its step, and the runtime carries it out synchronously, before any later effect of the
  step and before it acknowledges anything (an HTTP answer, an ``ok`` on a push stream): nothing is
  observable that would not survive ``kill -9``. A runtime without a store skips it.
- ``SaveSnapshot()``: replace the log by the document's full state (``core.doc``). Follows a
  ``Persist`` that filled the log, or a tombstone collection (the log still holds the tombstones).
- ``Changed(keys)``: these keys' effective values may have changed; tell the listeners.
- ``Gossip(payload, broadcast, fanout)``: ``payload`` (already tagged) on SWIM's piggyback
  broadcast if ``broadcast``, and as a direct user message to ``fanout`` random alive members if
  ``fanout``. If SWIM refuses it as too large (``LimitExceededError``), the runtime calls
  ``core.gossip_refused(effect, now_ms)`` and carries out what that returns (pushes over streams).
- ``OpenExchange(to, token, body)``: open a stream of kind ``token.kind.value`` to ``to`` with
  ``body`` as its first frame and read one reply; then call ``core.exchange_reply(token, reply,
  now_ms, wall_ms)``, or ``core.exchange_failed(token, now_ms)`` if the stream fails or times out.
  Every token gets exactly one of the two. The serving side feeds the first frame to
  ``core.serve_sync`` / ``core.serve_push`` and sends back the ``Served.reply`` they return.
- ``SendSyncPush(token, to, data)``: the third leg of a sync: send ``data`` to the same peer after
  the reply (on the same stream in the agent) and read one more reply, the fourth leg, which goes
  to ``core.sync_push_reply(token, reply, now_ms, wall_ms)``. The peer feeds the third leg to
  ``core.serve_sync_push`` and sends back the ``Served.reply`` it returns. If the send or the
  read fails the runtime calls ``core.exchange_failed(token, now_ms)``.
- ``SaveWriter(writer)``: the replica started a new writer id (its counters ran out): store it
  where the next start will find it, before the write that uses it is acknowledged.
- ``SetTimer(timer, at_ms)``: call ``core.handle_timer(timer, now_ms)`` once at or after ``at_ms``.
  There is no cancel: the timer carries its generation and the core re-checks it when it fires.
- ``Refused(origin, reasons, whole_delta)`` and ``SyncDone(...)``: reports for logs and
  measurements; the counters in ``core.counters`` already hold the same facts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gossipmesh.crdt.entries import Delta
from gossipmesh.ids import Address


class ExchangeKind(enum.Enum):
    """The two request/reply exchanges; the value is the agent's stream kind."""

    SYNC = "config-sync"  # Digest -> SyncReply (-> SyncPush -> DeltaMessage)
    PUSH = "config-push"  # a delta too large for a packet -> "ok" once merged and persisted


@dataclass(frozen=True, slots=True)
class Exchange:
    """The token of one exchange this core started (hashable data, handed back by the runtime)."""

    kind: ExchangeKind
    seq: int
    peer: str


@dataclass(frozen=True, slots=True)
class SyncTimer:
    """The periodic anti-entropy timer; only the latest generation is live."""

    generation: int


@dataclass(frozen=True, slots=True)
class Persist:
    delta: Delta


@dataclass(frozen=True, slots=True)
class SaveSnapshot:
    pass


@dataclass(frozen=True, slots=True)
class Changed:
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class Gossip:
    payload: bytes  # tagged: TAG + encoded delta
    broadcast: bool
    fanout: int


@dataclass(frozen=True, slots=True)
class OpenExchange:
    to: Address
    token: Exchange
    body: bytes  # first frame: the sender's name, then the message (see replica.frame)


@dataclass(frozen=True, slots=True)
class SendSyncPush:
    token: Exchange
    to: Address
    data: bytes  # an encoded SyncPush (the stream already names the sender)


@dataclass(frozen=True, slots=True)
class SaveWriter:
    writer: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: SyncTimer
    at_ms: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Remote input refused: a whole delta that did not decode, or entries that failed checks."""

    origin: str
    reasons: tuple[str, ...]
    whole_delta: bool


@dataclass(frozen=True, slots=True)
class SyncDone:
    """A sync this core started is over. Byte counts are of the messages (digest, reply, third
    and fourth legs); ``framed_bytes`` is the first frame with the sender's name."""

    token: Exchange
    in_sync: bool
    sent_bytes: int
    framed_bytes: int
    received_bytes: int
    pushed_bytes: int
    back_bytes: int = 0


Effect = (
    Persist
    | SaveSnapshot
    | Changed
    | Gossip
    | OpenExchange
    | SendSyncPush
    | SaveWriter
    | SetTimer
    | Refused
    | SyncDone
)


@dataclass(frozen=True, slots=True)
class Served:
    """What the serving side of an exchange answers: ``reply`` (``b""``: close without one), the
    effects of the step, who spoke (``""`` if the frame was unreadable), and whether a third leg
    (a ``SyncPush``) may follow on the same exchange."""

    reply: bytes
    effects: tuple[Effect, ...] = ()
    peer: str = ""
    awaits_push: bool = False
