"""Member states and the read-only view of a member that the core hands to its callers.

State precedence for the same incarnation is ALIVE < SUSPECT < DEAD; LEFT is a DEAD that the member
announced itself, so the rest of the mesh reports "left" rather than "failed". A higher incarnation
always wins, which is how a member refutes a rumour about itself.

A ``Member`` says only what the mesh agrees on (name, address, incarnation, state, metadata, and
the ``Proof`` of it: the subject's certificate and signed alive claim, and the signed accusation
behind a suspect, dead or left state, see ``authority.py``); when this node learnt it is the
member table's business. So two nodes that agree about a member hold
equal snapshots, and ``interned_member`` makes them the *same* object: a process that runs many
cores (the simulator runs 10,000) then pays one pointer per (observer, member) pair instead of a
snapshot, a name, an address and a metadata buffer each. The intern table holds its snapshots
weakly, so it never keeps alive a member that no table holds any more.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass

from gossipmesh.ids import Address

MAX_META_BYTES = 512


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    # Members are singletons, so identity hashing is exact; Enum's own hashes the name in Python
    # code, which showed up in profiles of every dict keyed by a state.
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class Proof:
    """Why a member's snapshot is believed: the subject's own word, and its accuser's.

    ``cert`` is the subject's node certificate (DER); ``alive_signature`` its signature over its
    alive claim at ``alive_incarnation`` with the snapshot's address and metadata. For a SUSPECT,
    DEAD or LEFT snapshot, ``accuser`` signed ``accusation`` over that state at the snapshot's
    incarnation (the subject itself for LEFT); both are empty for ALIVE. Invariant kept by the
    core: ``alive_incarnation <= incarnation <= alive_incarnation + 1``.
    """

    cert: bytes
    alive_incarnation: int
    alive_signature: bytes
    accuser: str = ""
    accusation: bytes = b""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Member:
    """A snapshot of one member as this node currently sees it (immutable, often shared).

    ``proof`` is None only in snapshots built outside the core (tests, listeners' fixtures);
    every snapshot the core keeps or reports carries one."""

    name: str
    address: Address
    incarnation: int
    state: MemberState
    meta: bytes
    proof: Proof | None = None


_interned: weakref.WeakValueDictionary[
    tuple[str, Address, int, MemberState, bytes, Proof | None], Member
] = weakref.WeakValueDictionary()


def interned_member(
    name: str,
    address: Address,
    incarnation: int,
    state: MemberState,
    meta: bytes,
    proof: Proof | None = None,
) -> Member:
    """The shared snapshot equal to ``Member(name, address, incarnation, state, meta, proof)``."""
    key = (name, address, incarnation, state, meta, proof)
    m = _interned.get(key)
    if m is None:
        m = Member(name, address, incarnation, state, meta, proof)
        _interned[key] = m
    return m


def event_kind(previous: MemberState | None, state: MemberState) -> str:
    """How a change from ``previous`` to ``state`` reads to people and listeners: ``join`` (new,
    or back from dead/left), ``update`` (same state: incarnation or metadata), else the new state
    as a verb (``alive``, ``suspect``, ``failed``, ``left``)."""
    if previous is None or (
        previous in (MemberState.DEAD, MemberState.LEFT) and state is MemberState.ALIVE
    ):
        return "join"
    if previous is state:
        return "update"
    return _STATE_VERB[state]


_STATE_VERB = {
    MemberState.ALIVE: "alive",
    MemberState.SUSPECT: "suspect",
    MemberState.DEAD: "failed",
    MemberState.LEFT: "left",
}
