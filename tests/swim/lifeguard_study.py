"""Measurements behind the suspicion presets, in the deterministic harness (no sockets, no sleeps).

Two questions decide whether halving α (with β doubled, K=3 and confirmation probes) is safe:

- **How fast is a real failure seen?** ``detection_ms``: crash one member of an ``n``-member
  cluster at a random phase of the probe cycle and time until every survivor holds it DEAD.
- **Does it kill live members?** ``false_positives``: run a cluster under uniform packet loss
  and/or with slow members (datagrams to them handled 300..800 ms late) and count live members
  declared DEAD by anyone (must be 0), next to the suspicions raised and refuted (those are fine).

The tests in ``test_swim_lifeguard.py`` run small versions; run this file for the full numbers:

    python tests/swim/lifeguard_study.py            # detection at n=20, FP runs at 20/50 x 300 s

Every run is seeded; the same seed gives the same numbers.
"""

from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass

from swim_harness import World

from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.member import MemberState

DEAD = MemberState.DEAD
SUSPECT = MemberState.SUSPECT


@dataclass
class Detection:
    total_ms: int  # crash -> every survivor holds the victim DEAD
    first_suspect_ms: int  # crash -> first survivor suspects it
    first_dead_ms: int  # crash -> first survivor declares it dead
    confirm_probes: int  # confirmation probes started by all survivors for this crash
    final_probes: int  # last-word probes (a non-prober's suspicion deadline came first)


def converged(w: World, n: int) -> bool:
    """Every node knows all ``n`` members, all alive."""
    return w.all_alive() and all(len(node.members()) == n for node in w.nodes.values())


def detection(config: SwimConfig, n: int = 20, seed: int = 1, latency_ms: int = 1) -> Detection:
    w = World(config=config, seed=seed, latency_ms=latency_ms)
    w.cluster(n)
    # Time failure detection, not join convergence: a member that has not heard of the victim
    # yet can never "see it failed" (the benchmark, too, waits until every agent sees n alive).
    w.run_until_true(lambda: converged(w, n), limit_ms=120_000)
    rnd = random.Random(f"detect:{seed}")
    w.run_for(5_000 + rnd.randrange(config.probe_interval_ms))  # a random phase of the cycle
    victim = f"n{rnd.randrange(1, n)}"
    before = sum(node.stats["confirm_probes"] for node in w.nodes.values())
    before_final = sum(node.stats["confirm_probes.final"] for node in w.nodes.values())
    w.crash(victim)
    t0 = w.now_ms
    w.run_until_true(lambda: w.all_see(victim, DEAD), limit_ms=200_000, check_every_ms=5)
    total = w.now_ms - t0
    changes = [c for c in w.changes(victim) if c[0] >= t0 and c[1] != victim]
    first_suspect = min(t for t, _, _, st in changes if st is SUSPECT) - t0
    first_dead = min(t for t, _, _, st in changes if st is DEAD) - t0
    after = sum(node.stats["confirm_probes"] for node in w.nodes.values())
    after_final = sum(node.stats["confirm_probes.final"] for node in w.nodes.values())
    return Detection(total, first_suspect, first_dead, after - before, after_final - before_final)


def detection_ms(config: SwimConfig, n: int = 20, seed: int = 1) -> int:
    return detection(config, n, seed).total_ms


@dataclass
class FalsePositives:
    deaths: int  # live members declared DEAD (by any observer): must be 0
    suspicions: int  # SUSPECT transitions about live members, summed over observers
    refutes: int  # refutations by the accused
    confirm_probes: int
    probes_failed: int


def false_positives(
    config: SwimConfig,
    n: int,
    duration_ms: int,
    *,
    loss: float = 0.0,
    slow: int = 0,
    slow_lo_ms: int = 300,
    slow_hi_ms: int = 800,
    seed: int = 1,
) -> FalsePositives:
    w = World(config=config, seed=seed)
    w.cluster(n)
    w.run_until_true(lambda: converged(w, n), limit_ms=120_000)
    rnd = random.Random(f"faults:{seed}")
    if loss > 0:
        w.drop = lambda s, d: rnd.random() < loss
    if slow > 0:
        names = {f"n{i}" for i in rnd.sample(range(1, n), slow)}
        w.slow_nodes(names, slow_lo_ms, slow_hi_ms, rnd)
    t0 = w.now_ms
    w.run_for(duration_ms)
    changes = [c for c in w.changes() if c[0] >= t0 and c[1] != c[2]]
    deaths = sum(1 for _, _, _, st in changes if st is DEAD)
    suspicions = sum(1 for _, _, _, st in changes if st is SUSPECT)
    nodes = list(w.nodes.values())
    return FalsePositives(
        deaths,
        suspicions,
        sum(x.stats["refutes"] for x in nodes),
        sum(x.stats["confirm_probes"] for x in nodes),
        sum(x.stats["probes.failed"] + x.stats["confirm_probes.failed"] for x in nodes),
    )


def _main() -> None:
    seeds = range(1, 12)
    configs = {"lan (new)": SwimConfig.lan(), "memberlist lan": SwimConfig.memberlist("lan")}
    print("detection at n=20, crash -> all survivors hold it DEAD (ms)")
    for label, cfg in configs.items():
        runs = [detection(cfg, 20, s) for s in seeds]
        totals = [r.total_ms for r in runs]
        print(
            f"  {label:15} median {statistics.median(totals):7.0f}  "
            f"min {min(totals):6d}  max {max(totals):6d}  "
            f"first-suspect median {statistics.median(r.first_suspect_ms for r in runs):6.0f}  "
            f"first-dead median {statistics.median(r.first_dead_ms for r in runs):6.0f}  "
            f"confirm probes/kill {statistics.mean(r.confirm_probes for r in runs):4.1f} "
            f"(+{statistics.mean(r.final_probes for r in runs):4.1f} last-word)"
        )
        sys.stdout.flush()
    print("false positives, 300 simulated s per run, 3 seeds each (sums over the seeds)")
    for label, cfg in configs.items():
        for n in (20, 50):
            for loss, slow in ((0.05, 0), (0.10, 0), (0.0, 3), (0.05, 3)):
                fps = [
                    false_positives(cfg, n, 300_000, loss=loss, slow=slow, seed=n + i)
                    for i in range(3)
                ]
                print(
                    f"  {label:15} n={n:3} loss={loss:4.0%} slow={slow}: "
                    f"deaths={sum(r.deaths for r in fps)} "
                    f"suspicions={sum(r.suspicions for r in fps)} "
                    f"refutes={sum(r.refutes for r in fps)} "
                    f"confirm_probes={sum(r.confirm_probes for r in fps)}"
                )
                sys.stdout.flush()


if __name__ == "__main__":
    _main()
