"""The warm start's two paths give the very same run.

``harness.warm_start`` merges the full state through the join path at host 0 and hands every
other host the same outcome through ``SwimNode.answer_joins`` (the ledger learning in bulk:
``ObserverLedger.all_learned``); a cluster of cores that are not plain ``SwimNode``s takes the
join path at every host. Same seed, both ways: every core, the ledger, the pending events and
then the run itself (its trace hash, a few seconds on, with a crash) must be the same.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.node import SwimNode
from simulations.cluster import Cluster
from simulations.harness import build, warm_start
from simulations.scenarios import Hooks, Options


class JoinPathCore(SwimNode):
    """The real core under another type: the warm start takes the join path for it."""


def _join_path_core(name: str, address: Address, config: Any, rng: Any, now_ms: int,
                    incarnation: int, authority: Authority) -> SwimNode:  # fmt: skip
    return JoinPathCore(name, address, config, rng, now_ms, incarnation=incarnation,
                        authority=authority)  # fmt: skip


def _state(c: Cluster) -> Any:
    cores: list[Any] = []
    for node in c.nodes:
        core = node.core
        if core is None:  # crashed
            cores.append(None)
            continue
        # Claims are signed afresh in every cluster (randomised ECDSA): compare what they say.
        members = [(m.name, m.incarnation, m.state, m.address, m.meta) for m in core.members()]
        cores.append((members, node.rng.getstate(), dict(core.stats)))
    heap = [(e[0], e[1], e[2], e[3], e[4], repr(e[5])) for e in c.engine.queued()]
    views = [list(v) if v is not None else None for v in c.views]
    return cores, views, c.n_view, repr(c.ledger), c.signed_max, heap


@pytest.mark.parametrize(("nodes", "seed"), [(2, 1), (7, 2), (40, 3), (75, 4)])
def test_answered_hosts_are_the_join_path_hosts(nodes: int, seed: int) -> None:
    opts = Options("steady", nodes=nodes, seed=seed)
    fast = build(opts, Hooks(), lifeguard=True, loss=0.0)
    slow = build(opts, Hooks(core_factory=_join_path_core), lifeguard=True, loss=0.0)
    try:
        warm_start(fast)
        warm_start(slow)
    finally:
        gc.unfreeze()  # what warm_start froze (``run`` does the same at its end)
    assert type(slow.nodes[1].core) is JoinPathCore and type(fast.nodes[1].core) is SwimNode
    assert _state(fast) == _state(slow)
    for c in (fast, slow):
        c.at(2_000, c.crash, nodes - 1)
        c.run_until(8_000)
    assert _state(fast) == _state(slow)
    assert fast.engine.trace_hash() == slow.engine.trace_hash()


@pytest.mark.parametrize("odd", ["none", "suspect", "stranger", "elsewhere"])
def test_all_learned_records_what_member_changed_records(odd: str) -> None:
    # In bulk when every member is a plain ALIVE record of a host at its own address; else one
    # pair at a time: the ledger ends the same either way.
    from gossipmesh.swim.member import Member, MemberState

    def booted() -> Cluster:
        c = build(Options("steady", nodes=6, seed=5), Hooks(), lifeguard=True, loss=0.0)
        for i in range(6):
            c.boot(i, ())
        return c

    one, bulk = booted(), booted()
    members = [node.core.local_member() for node in one.nodes if node.core is not None]
    if odd == "suspect":
        m = members[2]
        members[2] = Member(m.name, m.address, m.incarnation, MemberState.SUSPECT, m.meta)
    elif odd == "stranger":
        members.append(Member("nobody", Address("10.9.9.9", 7946), 0, MemberState.ALIVE, b""))
    elif odd == "elsewhere":
        m = members[3]
        members[3] = Member(m.name, Address("10.9.9.9", 7946), 0, MemberState.ALIVE, b"")
    observers = [1, 2, 4, 5]
    for o in observers:
        for m in members:
            if m.name != one.nodes[o].name:
                one.observed.member_changed(one.nodes[o], m)
    bulk.observed.all_learned(observers, members)

    def ledger(c: Cluster) -> Any:
        views = [list(v) if v is not None else None for v in c.views]
        return views, c.n_view, repr(c.ledger), c.signed_max

    assert ledger(one) == ledger(bulk)
