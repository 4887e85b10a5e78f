"""A scheduled traffic shift: a route destination's weight that follows a timetable.

Theory of operation
-------------------
A destination may carry ``shift``: its weight goes from ``from`` to ``to`` in ``steps`` equal
steps spread over ``duration_ms``, starting at ``start_ms`` (wall clock, milliseconds since the
epoch), optionally holding for ``pause_ms`` after step ``pause_after_step``. The schedule is part
of the signed, replicated route entity, so once written nobody has to write again: every agent
evaluates it against its own clock (``weight_at``) and rebuilds its routing table at each step
(``next_change_ms``). Agents whose clocks agree within a step show the same split; the document's
HLC already refuses entries from clocks a day off.

Step ``k`` (0 .. steps) starts at ``start_ms + k * duration_ms / steps`` (plus ``pause_ms`` for the
steps after the pause) and sets the weight ``from + (to - from) * k / steps``, rounded down
toward ``from``. Before ``start_ms`` the weight is ``from``; from the last step on, ``to``.

Pure: no clock is read here, every function takes the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossipmesh.config.fields import read_int, read_mapping, reject_unknown
from gossipmesh.errors import ConfigValidationError

MAX_STEPS = 1000
MAX_DURATION_MS = 30 * 24 * 3600 * 1000  # a month
MAX_START_MS = 2**53 - 1
FIELDS = ("from", "to", "start_ms", "duration_ms", "steps", "pause_after_step", "pause_ms")


@dataclass(frozen=True, slots=True)
class Shift:
    from_weight: int
    to_weight: int
    start_ms: int
    duration_ms: int
    steps: int
    pause_after_step: int = 0  # 0: no pause
    pause_ms: int = 0

    @property
    def step_ms(self) -> int:
        return max(1, self.duration_ms // self.steps)

    def step_at(self, wall_ms: int) -> int:
        """The step in force at ``wall_ms``: 0 before the start, ``steps`` at the end."""
        t = wall_ms - self.start_ms
        if t < 0:
            return 0
        p = self.pause_after_step
        if self.pause_ms and p and t >= p * self.step_ms:
            t = p * self.step_ms if t < p * self.step_ms + self.pause_ms else t - self.pause_ms
        return min(self.steps, t // self.step_ms)

    def weight_at(self, wall_ms: int) -> int:
        return self.weight_of_step(self.step_at(wall_ms))

    def weight_of_step(self, k: int) -> int:
        delta = (self.to_weight - self.from_weight) * k
        # int() truncates toward zero: the weight moves no further than the step allows.
        return self.from_weight + int(delta / self.steps)

    def step_start_ms(self, k: int) -> int:
        """When step ``k`` (1 .. steps) begins."""
        extra = self.pause_ms if self.pause_after_step and k > self.pause_after_step else 0
        return self.start_ms + k * self.step_ms + extra

    def next_change_ms(self, wall_ms: int) -> int | None:
        """When the next step begins after ``wall_ms``; None once the shift is complete."""
        k = self.step_at(wall_ms)
        if k >= self.steps:
            return None
        return self.step_start_ms(k + 1)

    def change_points(self) -> list[int]:
        return [self.start_ms - 1] + [self.step_start_ms(k) for k in range(1, self.steps + 1)]


def read_shift(value: object, path: str, max_weight: int) -> Shift:
    body = read_mapping(value, path)
    reject_unknown(body, FIELDS, path)
    for name in ("from", "to", "start_ms", "duration_ms", "steps"):
        if name not in body:
            raise ConfigValidationError(f"{path}.{name}", "required")
    steps = read_int(body["steps"], f"{path}.steps", 1, MAX_STEPS)
    pause_after = read_int(body.get("pause_after_step", 0), f"{path}.pause_after_step", 0, steps)
    shift = Shift(
        from_weight=read_int(body["from"], f"{path}.from", 0, max_weight),
        to_weight=read_int(body["to"], f"{path}.to", 0, max_weight),
        start_ms=read_int(body["start_ms"], f"{path}.start_ms", 0, MAX_START_MS),
        duration_ms=read_int(body["duration_ms"], f"{path}.duration_ms", 1, MAX_DURATION_MS),
        steps=steps,
        pause_after_step=pause_after,
        pause_ms=read_int(body.get("pause_ms", 0), f"{path}.pause_ms", 0, MAX_DURATION_MS),
    )
    if shift.duration_ms < shift.steps:
        raise ConfigValidationError(f"{path}.steps", "at most one step per millisecond")
    return shift


def shift_body(s: Shift) -> dict[str, Any]:
    body: dict[str, Any] = {"from": s.from_weight, "to": s.to_weight, "start_ms": s.start_ms,
                            "duration_ms": s.duration_ms, "steps": s.steps}  # fmt: skip
    if s.pause_after_step and s.pause_ms:
        body["pause_after_step"] = s.pause_after_step
        body["pause_ms"] = s.pause_ms
    return body


def progress(s: Shift, wall_ms: int) -> Mapping[str, Any]:
    """Where a shift stands at ``wall_ms`` (for ``gossipmesh shift status``)."""
    k = s.step_at(wall_ms)
    return {"step": k, "steps": s.steps, "weight": s.weight_of_step(k),
            "from": s.from_weight, "to": s.to_weight,
            "next_change_ms": s.next_change_ms(wall_ms), "done": k >= s.steps}  # fmt: skip
