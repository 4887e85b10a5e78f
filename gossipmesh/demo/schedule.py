"""The demo's scheduled traffic shift: the canary's v2 from 50 to 100 % over the run's tail.

Theory of operation
-------------------
At ``AT_SCHEDULE`` the script writes the canary route once more, with a ``shift`` on both
destinations (config/shift.py): v2 from 50 to 100 and v1 from 50 to 0 (weights are relative,
so v2 alone at 100 would only be 100/150 of the traffic), in ``SCHEDULE_STEPS`` steps. Nobody
writes again: every agent moves through the steps on its own wall clock.

The rest of the run is cut into ``steps + 1`` equal windows: step 0 (still 50/50) from the write,
then one window per step, the last one (100 % v2) being the settle margin before traffic stops.
So ``duration_ms`` is the rest of the run minus one window, and every step, the last included,
gets the same number of requests to judge it by.

``Schedule`` ties the wall-clock schedule the agents follow to the demo's own clock (seconds
since traffic started), so the dashboard and the summary can say which step a request fell in.
Pure: the caller reads both clocks once, at the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gossipmesh.config.shift import Shift, shift_body
from gossipmesh.demo.plan import CANARY_AFTER, canary_route

SCHEDULE_STEPS = 4
SCHEDULE_TO = (0, 100)  # v1, v2 weights at the end


@dataclass(frozen=True, slots=True)
class Schedule:
    start_s: float  # the demo clock when the shift starts (the write)
    start_ms: int  # the same moment on the wall clock: what the agents evaluate
    step_ms: int
    steps: int

    @property
    def step_s(self) -> float:
        return self.step_ms / 1000

    @property
    def end_s(self) -> float:
        """When the last step begins (the shift is complete)."""
        return self.start_s + self.steps * self.step_s

    def shifts(self) -> tuple[Shift, Shift]:
        """(v1's, v2's) schedules."""
        duration_ms = self.step_ms * self.steps
        v1 = Shift(CANARY_AFTER[0], SCHEDULE_TO[0], self.start_ms, duration_ms, self.steps)
        v2 = Shift(CANARY_AFTER[1], SCHEDULE_TO[1], self.start_ms, duration_ms, self.steps)
        return v1, v2

    def route(self) -> dict[str, Any]:
        """The canary route with both destinations on the schedule."""
        body = canary_route(*CANARY_AFTER)
        body["destinations"] = [{**d, "shift": shift_body(s)}
                                for d, s in zip(body["destinations"], self.shifts(), strict=True)]  # fmt: skip
        return body

    def step_at(self, t_s: float) -> int:
        """The step in force at demo time ``t_s`` (0 before the start, ``steps`` at the end)."""
        return self.shifts()[1].step_at(self.start_ms + round((t_s - self.start_s) * 1000))

    def weights(self, k: int) -> tuple[int, int]:
        v1, v2 = self.shifts()
        return v1.weight_of_step(k), v2.weight_of_step(k)

    def step_start_s(self, k: int) -> float:
        return self.start_s + k * self.step_s

    def describe(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "steps": self.steps, "step_s": round(self.step_s, 3),
                "start_ms": self.start_ms,
                "weights": [list(self.weights(k)) for k in range(self.steps + 1)]}  # fmt: skip


def plan_schedule(now_s: float, wall_ms: int, run_end_s: float) -> Schedule:
    """A schedule from ``now_s`` (= ``wall_ms``) whose last step holds for one window before
    ``run_end_s``."""
    window_ms = int((run_end_s - now_s) * 1000) // (SCHEDULE_STEPS + 1)
    return Schedule(now_s, wall_ms, max(1, window_ms), SCHEDULE_STEPS)
