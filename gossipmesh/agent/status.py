"""Why an agent calls itself ``degraded`` in ``/v1/health`` (and ``gossipmesh status``).

``ok`` must mean the mesh is whole as far as this agent can tell. After a key rotation that left
members behind, each half of a split cluster sees the other dead, and every agent used to say
``ok``. So the status is ``degraded``, with one human-readable reason per problem, when:

- members are dead or suspect (a dead member stays until it is reaped, 24 h by default, or comes
  back: an operator should look);
- messages failed to decrypt recently (``DecryptWatch``): someone is sealing with a key we lack.

Members that left gracefully are not a problem. The reasons name at most ``MAX_NAMED`` members or
addresses each, so the answer stays small in a large mesh.
"""

from __future__ import annotations

from collections.abc import Iterable

from gossipmesh.agent.decrypt_watch import RECENT_WINDOW_S, RecentFailures
from gossipmesh.swim.member import Member, MemberState

MAX_NAMED = 5


def degraded_reasons(members: Iterable[Member], decrypts: RecentFailures) -> list[str]:
    """One line per problem; empty when the agent is healthy."""
    reasons = []
    by_state: dict[MemberState, list[str]] = {MemberState.DEAD: [], MemberState.SUSPECT: []}
    for m in members:
        if m.state in by_state:
            by_state[m.state].append(m.name)
    for state, names in by_state.items():
        if names:
            noun = "member" if len(names) == 1 else "members"
            reasons.append(f"{len(names)} {noun} {state.value}: {_named(sorted(names))}")
    if decrypts.count:
        reasons.append(
            f"{decrypts.count} messages failed to decrypt in the last {RECENT_WINDOW_S:g} s, "
            f"from {_named(list(decrypts.addresses))} (a member with another key?)"
        )
    return reasons


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


__all__ = ["degraded_reasons"]
