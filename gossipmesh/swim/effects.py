"""What the SWIM core asks its runtime to do. The core never performs I/O; it returns these.

The contract with a runtime (the trio agent or the simulator):

- ``SendPacket(to, data)``: send ``data`` (a plaintext compound packet, at most the configured
  packet size) as one UDP datagram. The runtime encrypts it and delivers it; on the other side it
  decrypts and calls ``node.handle_packet(src, data, now_ms)``. Loss is fine: SWIM expects it.
- ``StartPushPull(to, join)``: open a TCP stream to ``to``, send ``node.push_pull_payload(join)``,
  read one reply, and call ``node.handle_push_pull_reply(to, reply, now_ms)``; if the stream fails
  or times out call ``node.push_pull_failed(to, now_ms)``. On the receiving side the runtime reads
  the request and answers with what ``node.handle_push_pull_request(src, data, now_ms)`` returns.
- ``SetTimer(timer, at_ms)``: call ``node.handle_timer(timer, now_ms)`` once at or after ``at_ms``.
  There is no cancel: a timer carries the token and incarnation it was set for and the core re-checks
  it on firing, so a late, duplicated or obsolete timer is harmless.
- ``MemberChanged(member, previous)``: a member joined (``previous is None``), changed state,
  incarnation or metadata. Runtimes log it, stream it to monitors and update the catalog.
- ``MemberReaped(name)``: a dead or left member was forgotten after the reap interval.
- ``UserMessage(src, payload)``: an application payload (for example a config delta) arrived,
  either piggybacked on gossip or sent directly; the core delivers each one it has not seen recently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from gossipmesh.ids import Address, Millis
from gossipmesh.swim.member import Member, MemberState

# ``SendPacket`` and ``SetTimer`` are named tuples, not frozen dataclasses like the others: as
# immutable, built in half the time (a frozen dataclass's ``__init__`` sets each field through
# ``object.__setattr__``), and they are nearly every effect a node returns: a probe or a gossip
# tick sets a timer, every ping and ack is a packet.


class SendPacket(NamedTuple):
    to: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StartPushPull:
    to: Address
    join: bool


class SetTimer(NamedTuple):
    timer: object  # opaque and hashable to the runtime; the core's own Timer tuple
    at_ms: Millis


@dataclass(frozen=True, slots=True)
class MemberChanged:
    member: Member
    previous: MemberState | None


@dataclass(frozen=True, slots=True)
class MemberReaped:
    name: str


@dataclass(frozen=True, slots=True)
class UserMessage:
    src: Address
    payload: bytes


Effect = SendPacket | StartPushPull | SetTimer | MemberChanged | MemberReaped | UserMessage
