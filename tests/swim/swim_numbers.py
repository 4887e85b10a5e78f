"""Process-wide numbers past two bytes, for tests of the tables' wide arrays (``numbering.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gossipmesh.swim.numbering import Numbering

T = TypeVar("T")


def hold_past_two_bytes(numbering: Numbering[T], make: Callable[[int], T]) -> list[int]:
    """Hold fillers until the numbering hands out only fresh numbers above 16 bits (free ones,
    left by earlier tests in this process, are handed out first)."""
    held: list[int] = []
    while True:
        n = numbering.acquire(make(len(held)))  # the numbering keeps the item while held
        held.append(n)
        if n == len(numbering) - 1 and n > 0x10000:
            return held
