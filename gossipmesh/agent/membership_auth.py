"""The agent's membership authority, and keeping the SWIM core in step with revocations.

Theory of operation
-------------------
The SWIM core checks every membership claim through an ``Authority`` (``swim/authority.py``);
the agent's is a ``MembershipAuthority`` over its own node credentials and its ``TrustStore``
(``agent.identity``), checking certificates against the wall clock.

The trust store changes under the core: the config replica writes revocations into it as they
arrive (DESIGN-11 D5), and certificates expire. A claim made after that is refused at once (every
check consults the store), but members already in the table would stay until they next spoke.
So ``watch_trust`` asks the core to ``revalidate`` every member whenever the store's version
moves (checked every ``TRUST_POLL_S``) and every ``EXPIRY_CHECK_S`` for expiry: a member whose
certificate is revoked or expired is declared dead here within about a second, which takes it
out of every route (see ``SwimNode.revalidate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from gossipmesh.agent.events import wall_ms
from gossipmesh.agent.node_identity import AgentIdentity
from gossipmesh.identity.membership import MembershipAuthority, VerificationMemo

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

TRUST_POLL_S = 1.0
EXPIRY_CHECK_S = 60.0


def build_authority(identity: AgentIdentity) -> MembershipAuthority:
    """The authority the agent's SWIM core checks claims with."""
    return MembershipAuthority(identity.credentials, VerificationMemo(identity.trust), wall_ms)


async def watch_trust(agent: Agent) -> None:
    """Revalidate the member table when revocations change, and now and then for expiry."""
    trust = agent.identity.trust
    seen = trust.version
    since_s = 0.0
    while True:
        await trio.sleep(TRUST_POLL_S)
        since_s += TRUST_POLL_S
        if trust.version == seen and since_s < EXPIRY_CHECK_S:
            continue
        seen = trust.version
        since_s = 0.0
        await agent.call(lambda node, now: (None, node.revalidate(now)))
