"""Fault injection's packet loss (``FaultInjector.loss``): the share of datagrams lost, drawn from
the injected random, and its bounds."""

from __future__ import annotations

import random

import pytest

from gossipmesh.agent.faults import FaultInjector
from gossipmesh.ids import Address


def test_no_loss_by_default_and_after_clear() -> None:
    faults = FaultInjector(random.Random(1))
    assert not any(faults.loses() for _ in range(1000))
    faults.set(frozenset(), loss=1.0)
    assert all(faults.loses() for _ in range(1000))
    faults.clear()
    assert faults.loss == 0.0
    assert not any(faults.loses() for _ in range(1000))


def test_loss_is_the_share_of_datagrams_lost() -> None:
    faults = FaultInjector(random.Random(7))
    faults.set(frozenset(), loss=0.25)
    lost = sum(faults.loses() for _ in range(20000))
    assert 4500 < lost < 5500


def test_loss_leaves_the_drop_set_alone_and_the_reverse() -> None:
    peer = Address("10.0.0.2", 7946)
    faults = FaultInjector(random.Random(3))
    faults.set(frozenset({peer}), loss=0.5)
    assert faults.blocks(peer) and faults.blocks(Address("10.0.0.2", 0))
    assert not faults.blocks(Address("10.0.0.3", 7946))
    assert faults.dropped == frozenset({peer}) and faults.loss == 0.5


@pytest.mark.parametrize("loss", [-0.1, 1.01])
def test_loss_outside_zero_to_one_is_refused(loss: float) -> None:
    with pytest.raises(ValueError):
        FaultInjector().set(frozenset(), loss=loss)
