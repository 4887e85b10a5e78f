"""Member states and the read-only view of a member that the core hands to its callers.

State precedence for the same incarnation is ALIVE < SUSPECT < DEAD; LEFT is a DEAD that the member
announced itself, so the rest of the mesh reports "left" rather than "failed". A higher incarnation
always wins, which is how a member refutes a rumour about itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gossipmesh.ids import Address, Millis

MAX_META_BYTES = 512


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member as this node currently sees it."""

    name: str
    address: Address
    incarnation: int
    state: MemberState
    meta: bytes
    state_changed_ms: Millis
