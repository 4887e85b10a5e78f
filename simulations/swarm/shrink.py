"""The swarm's shrinker: a failing plan reduced to a small one that still fails the same way.

Theory of operation
-------------------
Like Hypothesis's shrinker or delta debugging (Zeller), and with the same contract: the result
still fails, and no single step of the search makes it smaller and still failing. "Fails the
same way" means the same failed check names (or, for a core that raised, an exception of the
same type), so shrinking never trades the bug for another one. "Smaller" is, in order:

1. fewer faults: drop chunks of the fault list, halves first, then quarters, down to single
   faults (ddmin);
2. fewer hosts: rename the hosts the faults name to 0..k-1 (keeping their order), then try
   smaller clusters down to max(3, k);
3. shorter: halve each fault's duration, and pull the whole schedule earlier.

Every candidate is run from scratch with the same seed (``run``), so the result replays with
the one command ``SwarmPlan.command()`` prints. ``max_runs`` bounds the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from simulations.swarm.plan import Fault, SwarmPlan
from simulations.swarm.runner import Outcome

MIN_NODES = 3


def signature(o: Outcome) -> frozenset[str]:
    """How a run failed: its failed checks, or the exception a core raised."""
    if o.error is not None:
        last = o.error.strip().splitlines()[-1]
        return frozenset({"exception:" + last.split(":")[0]})
    return frozenset(name for name, _ in o.failures)


@dataclass(slots=True)
class Shrunk:
    plan: SwarmPlan
    outcome: Outcome
    runs: int


def shrink(
    plan: SwarmPlan, first: Outcome, run: Callable[[SwarmPlan], Outcome], max_runs: int = 80
) -> Shrunk:
    want = signature(first)
    best, best_out, runs = plan, first, 0

    def fails(candidate: SwarmPlan) -> bool:
        nonlocal best, best_out, runs
        if runs >= max_runs:
            return False
        runs += 1
        out = run(candidate)
        if not out.ok and signature(out) & want:
            best, best_out = candidate, out
            return True
        return False

    progress = True
    while progress and runs < max_runs:
        progress = False
        # 1. fewer faults (ddmin over the list)
        chunks = 2
        while len(best.faults) >= 1 and runs < max_runs:
            faults = best.faults
            size = max(1, len(faults) // chunks)
            removed = False
            for start in range(0, len(faults), size):
                if fails(replace(best, faults=faults[:start] + faults[start + size :])):
                    removed = progress = True
                    break
            if removed:
                chunks = max(2, chunks - 1)
            elif size == 1:
                break
            else:
                chunks = min(len(faults), chunks * 2)
        # 2. fewer hosts
        compact = _compact(best)
        if compact != best and fails(compact):
            progress = True
        used = 1 + max((h for f in best.faults for h in f.hosts), default=-1)
        floor = max(MIN_NODES, used)
        while best.nodes > floor and runs < max_runs:
            half = max(floor, (best.nodes + floor) // 2)
            if fails(replace(best, nodes=half)) or fails(replace(best, nodes=best.nodes - 1)):
                progress = True
            else:
                break
        # 3. shorter
        for i, f in enumerate(best.faults):
            if f.dur_ms > 500:
                shorter = replace(f, dur_ms=f.dur_ms // 2)
                if fails(replace(best, faults=_put(best.faults, i, shorter))):
                    progress = True
        first_ms = min((f.at_ms for f in best.faults), default=0)
        if first_ms > 1_000:
            moved = tuple(replace(f, at_ms=f.at_ms - first_ms + 1_000) for f in best.faults)
            if fails(replace(best, faults=moved)):
                progress = True
    return Shrunk(best, best_out, runs)


def _put(faults: tuple[Fault, ...], i: int, f: Fault) -> tuple[Fault, ...]:
    return tuple(sorted(faults[:i] + (f,) + faults[i + 1 :]))


def _compact(plan: SwarmPlan) -> SwarmPlan:
    """The same plan with the hosts it names renamed 0..k-1, in order."""
    used = sorted({h for f in plan.faults for h in f.hosts})
    rename = {h: i for i, h in enumerate(used)}
    faults = tuple(sorted(replace(f, hosts=tuple(rename[h] for h in f.hosts))
                          for f in plan.faults))  # fmt: skip
    return replace(plan, faults=faults)
