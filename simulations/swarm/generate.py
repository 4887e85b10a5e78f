"""The swarm's plan generator: one seed, one fault plan, always the same one.

Theory of operation
-------------------
``generate(seed, nodes_min, nodes_max)`` draws from ``derive_rng(seed, "swarm-plan")`` (never from
the network's or a core's rng, so the plan does not move when a core changes how much randomness
it uses) a cluster size and a schedule of faults inside a window of ``WINDOW_MS`` after the warm
start. Every kind of ``FaultKind`` can be drawn; some rules keep a plan meaningful rather than
merely destructive:

- Partitions do not overlap in time (the simulated network gives each host one group; two live
  partitions would fight over it). Five shapes: halves, a minority, one host, a bridge host that
  hears both sides, and one-way.
- Permanent crashes and leaves take at most a quarter of the initial hosts, so a majority is
  always left to carry the cluster (a plan that kills everyone tests nothing).
- Config writes come in rounds: a round writes one key through one to three random hosts at
  the same millisecond (concurrent writes of one key), sometimes with a delete among them.
- Clock skew is drawn inside the HLC drift bound (500 ms) or beyond it (0.6-3 s).
- At most one captured host per plan, sending forged and replayed messages for a while.

Everything ends by ``WINDOW_MS`` (the runner then heals everything and lets the cluster settle).
"""

from __future__ import annotations

import random

from simulations.engine import derive_rng
from simulations.swarm.plan import Fault, FaultKind, SwarmPlan

WINDOW_MS = 40_000
START_MS = 2_000
KEYS = 8  # config keys the writes draw from: few, so writes collide
HLC_DRIFT_BOUND_MS = 500

K = FaultKind
# Relative weights of the kinds drawn (writes come in rounds, drawn separately).
_WEIGHTS: tuple[tuple[FaultKind, int], ...] = (
    (K.PARTITION_HALF, 3),
    (K.PARTITION_MINORITY, 2),
    (K.PARTITION_ONE, 2),
    (K.PARTITION_BRIDGE, 2),
    (K.PARTITION_ONEWAY, 2),
    (K.CRASH, 2),
    (K.BOUNCE, 2),
    (K.WIPE, 2),
    (K.PAUSE, 2),
    (K.SLOW, 2),
    (K.LOSS, 2),
    (K.DUPLICATE, 2),
    (K.SKEW, 3),
    (K.JOIN, 2),
    (K.LEAVE, 2),
    (K.CAPTURED, 1),
)


def generate(seed: int, nodes_min: int, nodes_max: int) -> SwarmPlan:
    rng = derive_rng(seed, "swarm-plan")
    n = rng.randint(nodes_min, nodes_max)
    faults: list[Fault] = []
    gone_budget = max(1, n // 4)  # permanent crashes and leaves
    partition_free_ms = START_MS  # partitions are laid end to end, never overlapping
    captured = False
    kinds = [k for k, _ in _WEIGHTS]
    weights = [w for _, w in _WEIGHTS]
    for _ in range(rng.randint(2, 8)):
        kind = rng.choices(kinds, weights)[0]
        at = rng.randrange(START_MS, WINDOW_MS - 5_000)
        if kind in (K.CRASH, K.LEAVE):
            if gone_budget == 0:
                continue
            gone_budget -= 1
            faults.append(Fault(at, kind, 0, (rng.randrange(n),)))
        elif kind is K.CAPTURED:
            if captured:
                continue
            captured = True
            faults.append(Fault(at, kind, rng.randrange(5_000, 20_000), (rng.randrange(n),)))
        elif kind.value.startswith("partition"):
            f = _partition(rng, kind, n, max(at, partition_free_ms))
            if f is not None:
                faults.append(f)
                partition_free_ms = f.end_ms + rng.randrange(0, 3_000)
        else:
            faults.append(_timed(rng, kind, n, at))
    for _ in range(rng.randint(1, 5)):
        faults.extend(_write_round(rng, n))
    return SwarmPlan(seed, n, tuple(sorted(faults)))


def _partition(rng: random.Random, kind: FaultKind, n: int, at: int) -> Fault | None:
    dur = rng.randrange(3_000, 20_000)
    if at + dur > WINDOW_MS:
        return None
    hosts = list(range(n))
    rng.shuffle(hosts)
    if kind is K.PARTITION_HALF:
        side = hosts[: n // 2]
    elif kind is K.PARTITION_MINORITY:
        side = hosts[: rng.randint(1, max(1, (n - 1) // 3))]
    elif kind is K.PARTITION_ONE:
        side = hosts[:1]
    elif kind is K.PARTITION_BRIDGE:
        # hosts[0] is the bridge; the next ones one side, every other host the other side
        side = hosts[: 1 + rng.randint(1, max(1, (n - 1) // 2))]
        return Fault(at, kind, dur, (side[0], *sorted(side[1:])))
    else:
        side = hosts[: rng.randint(1, max(1, n // 2))]
    return Fault(at, kind, dur, tuple(sorted(side)))


def _timed(rng: random.Random, kind: FaultKind, n: int, at: int) -> Fault:
    host = (rng.randrange(n),)
    if kind in (K.BOUNCE, K.WIPE):
        return Fault(at, kind, rng.randrange(1_000, 20_000), host)
    if kind is K.PAUSE:
        return Fault(at, kind, rng.randrange(500, 8_000), host)
    if kind is K.SLOW:
        return Fault(at, kind, rng.randrange(3_000, 20_000), host, rng.randrange(100, 3_000))
    if kind in (K.LOSS, K.DUPLICATE):
        return Fault(at, kind, rng.randrange(2_000, 20_000), (), rng.randrange(20, 400))
    if kind is K.SKEW:
        beyond = rng.random() < 0.5
        size = (rng.randrange(600, 3_000) if beyond
                else rng.randrange(10, HLC_DRIFT_BOUND_MS))  # fmt: skip
        sign = rng.choice((-1, 1))
        return Fault(at, kind, rng.randrange(5_000, 30_000), host, sign * size)
    if kind is K.JOIN:
        return Fault(at, kind, 0, (), rng.randint(1, 2))
    raise ValueError(f"not a timed fault kind: {kind}")


def _write_round(rng: random.Random, n: int) -> list[Fault]:
    at = rng.randrange(START_MS, WINDOW_MS - 2_000)
    key = rng.randrange(KEYS)
    writers = rng.sample(range(n), min(n, rng.randint(1, 3)))
    out = []
    for w in writers:
        kind = K.DELETE if rng.random() < 0.2 else K.WRITE
        out.append(Fault(at, kind, 0, (w,), key))
    return out
