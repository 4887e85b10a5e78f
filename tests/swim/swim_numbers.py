"""Process-wide numbers past two bytes, for tests of the tables' wide arrays (``numbering.py``)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

from gossipmesh.swim.numbering import Numbering

T = TypeVar("T")


def hold_past_two_bytes(numbering: Numbering[T], make: Callable[[int], T]) -> list[int]:
    """Hold fillers until the numbering hands out only fresh numbers above 16 bits (free ones,
    left by earlier tests in this process, are handed out first). Collects first: tables that
    earlier tests dropped in cycles would otherwise give their numbers back in mid-test, and a
    name numbered after that could get one of those small numbers."""
    gc.collect()
    held: list[int] = []
    while True:
        size = len(numbering)
        n = numbering.acquire(make(len(held)))  # the numbering keeps the item while held
        held.append(n)
        # A fresh number grows the numbering (a freed one, even the top one, does not): none
        # is free any more.
        if len(numbering) > size and n > 0x10000:
            return held
