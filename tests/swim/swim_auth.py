"""Signed membership for the SWIM tests: real certificates, and messages signed by any member.

Every test node gets a real ``MembershipAuthority`` from one in-process CA (the simulator's,
``simulations/identity.py``: deterministic certificates, one shared verification memo), so the
tests exercise the very checks the agent runs. ``alive``/``suspect``/``dead`` build messages as
the named member would sign them (cached: the same bytes each time, so the shared memo answers
repeats); ``shape`` strips signatures and certificates so assertions compare what a message says.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gossipmesh.identity.membership import MembershipAuthority
from gossipmesh.ids import Address
from gossipmesh.swim.messages import Alive, Dead, Message, Suspect
from simulations.identity import EPOCH_MS, SimIdentities

IDS = SimIdentities("swim-test")


def authority(name: str) -> MembershipAuthority:
    return IDS.authority(name, lambda: EPOCH_MS)


@cache
def alive(name: str, incarnation: int, address: Address, meta: bytes = b"") -> Alive:
    return IDS.alive(name, incarnation, address, meta)


@cache
def suspect(name: str, incarnation: int, by: str) -> Suspect:
    return IDS.suspect(name, incarnation, by)


@cache
def dead(name: str, incarnation: int, by: str, left: bool = False) -> Dead:
    return IDS.dead(name, incarnation, by, left)


def shape(m: Message) -> Any:
    """What a message says, without signatures or certificates (for assertions)."""
    if isinstance(m, Alive):
        return ("alive", m.name, m.incarnation, m.address, m.meta)
    if isinstance(m, Suspect):
        return ("suspect", m.name, m.incarnation, m.source)
    if isinstance(m, Dead):
        return ("dead", m.name, m.incarnation, m.source, m.left)
    return m


def shapes(msgs: list[Message]) -> list[Any]:
    return [shape(m) for m in msgs]
