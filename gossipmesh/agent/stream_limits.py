"""The gossip TCP port's limits: frame cap, stream slots, buffered bytes, and where they come from.

Theory of operation
-------------------
Every stream on the gossip port carries sealed frames (``streams.py``); the largest frame an honest
member ever sends is the largest payload of a stream kind:

- ``pushpull``: the whole member table. One record is at most ``PUSH_PULL_RECORD_MAX_BYTES``
  (computed below from the field bounds in ``gossipmesh/swim``: name, host, metadata, certificate,
  two signatures, the accuser's name, msgpack headers), about 2.2 KiB; a real one, with a P-256
  certificate and a short name, is about 550 bytes (20,000 members are 11 MB). So
  ``FRAME_MAX_BYTES`` (8 MiB) holds 3,700 members at the worst record size and about 15,000 at the
  real one.
- ``config-sync``: legs 3 and 4 carry at most ``crdt/sync.MAX_SYNC_BATCH_BYTES`` (2 MiB,
  estimated per entry, so a few percent more once encoded) of entries and known maps; a larger
  difference takes more exchanges (the initiator starts the next at once).
- ``config-push``: one local commit (its values come from an admin body of at most
  ``http.MAX_BODY_BYTES``, 1 MiB, plus one signature per entry) or what one merge learned (at
  most a sync leg).
- ``keyop``, ``records-sync``: a key or a JSON reply; at most ``MAX_SYNC_RECORDS`` node records of
  at most 64 KiB each, which a frame of 8 MiB bounds again.

so ``FRAME_MAX_BYTES`` is the push-pull bound, four times the config bound; the old cap was 16 MiB
(SWIM's ``push_pull_max_bytes``, which still bounds what the core decodes; an operator who sets it
lower lowers the frame cap with it).

A frame's length arrives before its bytes, and a sealed frame can only be checked once it is all
here, so bytes from anyone are buffered before they are known to come from a member. Three limits
keep that bounded and keep the port usable during a flood:

- ``BUFFER_MAX_BYTES`` (4 frames at the cap): bytes all inbound streams may hold at once, taken
  when a frame's length is read and given back when the frame is opened or the stream ends; a
  frame that does not fit is refused at its header (``dropped.stream_buffer_full``), before any
  of it is read, so 32 concurrent oversize frames cost nothing and 32 frames at the cap cost at
  most this;
- ``UNVERIFIED_MAX`` (64) streams that have not yet delivered a first frame that opens with the
  cluster key; when one more arrives the *oldest* is closed (``dropped.stream_evicted``). A
  member sends its first frame at once, so slow sockets can never keep it out: they only evict
  each other;
- ``VERIFIED_MAX`` (32) streams past their first frame, of which ``RESERVED_FOR_PRIORITY`` (8)
  only ``pushpull`` (joins) and ``keyop`` (key operations) may take, so a burst of config or
  record syncs cannot lock out an operator.

Every stream also has a deadline (the agent's stream timeout, SWIM's ``push_pull_timeout_ms``):
the first frame must arrive within it, and the handler must be done within it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossipmesh.crdt.sync import MAX_SYNC_BATCH_BYTES
from gossipmesh.ids import MAX_NODE_NAME_BYTES
from gossipmesh.swim.fields import (
    MAX_HOST_BYTES,
    MAX_MEMBER_CERT_BYTES,
    SIGNATURE_BYTES,
)
from gossipmesh.swim.member import MAX_META_BYTES

# msgpack: a str/bin header is at most 3 bytes below 64 KiB, an int at most 9, the list 1.
_STR = 3
_INT = 9
PUSH_PULL_RECORD_MAX_BYTES = (
    1
    + (MAX_NODE_NAME_BYTES + _STR)  # name
    + (MAX_HOST_BYTES + _STR)  # host
    + _INT * 3  # port, incarnation, state
    + (MAX_META_BYTES + _STR)  # meta
    + (MAX_MEMBER_CERT_BYTES + _STR)  # certificate
    + _INT  # alive incarnation
    + (SIGNATURE_BYTES + _STR)  # alive signature
    + (MAX_NODE_NAME_BYTES + _STR)  # accuser
    + (SIGNATURE_BYTES + _STR)  # accusation
)
PUSH_PULL_RECORD_TYPICAL_BYTES = 550  # measured: 20,000 members with certificates are 11 MB
FRAME_MAX_BYTES = 8 * 1024 * 1024
CONFIG_FRAME_MAX_BYTES = MAX_SYNC_BATCH_BYTES * 2  # a sync leg, with the estimate's headroom
BUFFER_MAX_BYTES = 4 * FRAME_MAX_BYTES
UNVERIFIED_MAX = 64
VERIFIED_MAX = 32
RESERVED_FOR_PRIORITY = 8
PRIORITY_KINDS = frozenset({"pushpull", "keyop"})

assert CONFIG_FRAME_MAX_BYTES < FRAME_MAX_BYTES


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The limits one agent's gossip port keeps (exported in ``/metrics`` and ``/v1/self``)."""

    frame_max_bytes: int = FRAME_MAX_BYTES
    buffer_max_bytes: int = BUFFER_MAX_BYTES
    unverified_max: int = UNVERIFIED_MAX
    verified_max: int = VERIFIED_MAX
    reserved_for_priority: int = RESERVED_FOR_PRIORITY

    @classmethod
    def for_push_pull(cls, push_pull_max_bytes: int, seal_overhead: int) -> StreamLimits:
        """The defaults, with the frame cap lowered to SWIM's ``push_pull_max_bytes`` if that is
        lower (the buffer stays four frames)."""
        frame = min(FRAME_MAX_BYTES, push_pull_max_bytes) + seal_overhead
        return cls(frame_max_bytes=frame, buffer_max_bytes=4 * frame)

    def as_dict(self) -> dict[str, int]:
        return {
            "stream_frame_max_bytes": self.frame_max_bytes,
            "stream_buffer_max_bytes": self.buffer_max_bytes,
            "stream_unverified_max": self.unverified_max,
            "stream_verified_max": self.verified_max,
            "stream_reserved_for_priority": self.reserved_for_priority,
        }


class ByteBudget:
    """Bytes the inbound streams may buffer at once (one owner: the trio thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n
        assert self.used >= 0, "gave back more than was taken"
