"""Revocation reaches SWIM: a member whose certificate is revoked leaves the agent's view within
seconds and cannot come back with that certificate (two in-process agents on loopback)."""

from __future__ import annotations

from pathlib import Path

import trio
from test_agent import make_agent, states, wait_for

from gossipmesh.identity import fingerprint


async def test_a_revoked_member_is_declared_dead_and_stays_dead(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a = await nursery.start(make_agent("a", "127.0.0.2", tmp_path).run)
    b = await nursery.start(make_agent("b", "127.0.0.3", tmp_path).run)
    assert a.address is not None
    assert await b.join([a.address]) == {str(a.address): True}

    async def both_alive() -> bool:
        return await states(a) == await states(b) == {"a": "alive", "b": "alive"}

    await wait_for(both_alive)
    # What the config replica does when a revocation arrives (DESIGN-11 D5).
    a.identity.trust.revoke(fingerprint(b.identity.credentials.cert_der))

    async def b_dead_at_a() -> bool:
        return (await states(a)).get("b") == "dead"

    await wait_for(b_dead_at_a, timeout_s=5.0)
    assert a.core_stats["invalidated.cert.revoked"] == 1

    # b hears it is dead and refutes; a refuses the refutation: b stays dead there.
    async def refused() -> bool:
        return a.core_stats.get("reject.cert.revoked", 0) > 0

    await wait_for(refused)
    assert (await states(a))["b"] == "dead"
    a.stop()
    b.stop()
