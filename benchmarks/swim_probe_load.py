"""What failures cost in probes, and what capping last-word probes changes, at cluster sizes no
laptop can stage: a scenario of the simulator (real SWIM core, seeded), summing every core's
probe counters afterwards, once per ``last_word_grace_ms`` asked for.

    python benchmarks/swim_probe_load.py 100 1000                       # crash, default grace
    python benchmarks/swim_probe_load.py 100 --grace-ms 0 1000          # before/after issue 19
    python benchmarks/swim_probe_load.py 100 --scenario loss --loss-rates 0.1 0.3 --grace-ms 0 1000
    python benchmarks/swim_probe_load.py 100 --scenario slow-nodes --grace-ms 0 1000

Prints, per size, grace and run: routine probes over the run, confirmation probes (Lifeguard:
members that heard a suspicion probe the suspect themselves, ~fanout of them), last-word probes
(a member whose suspicion deadline fires before it has heard "dead" probes once more before
declaring it), how many members deferred theirs (issue 19: they wait the grace for others'
verdict), how many of those took it after the grace ("late") and how many took it at once
because their health score was above 0 ("sick"), last-word probes per crash per member, and
the simulator's detection and false-positive metrics for the same run. ``--grace-ms 0`` is the behaviour before the cap: it
draws nothing from the rng, so its runs are the old runs event for event.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from typing import Any

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.node import SwimNode
from simulations.scenarios import Hooks, Options, run

COUNTERS = (
    "probes",
    "confirm_probes",
    "confirm_probes.final",
    "last_word.deferred",
    "last_word.after_grace",
    "last_word.unhealthy",
    "suspicions",
    "deaths",
)
SLOW_KEYS = ("false_dead_of_slow", "false_dead_of_healthy", "false_dead_by_slow")
# Scenarios whose runs never restart a host: a name seen twice starts the next run's cluster.
SCENARIOS = ("crash", "loss", "slow-nodes")


def probe_load(
    nodes: int,
    *,
    scenario: str = "crash",
    grace_ms: int | None = None,
    seed: int = 1,
    kill: int = 3,
    loss_rates: tuple[float, ...] = (0.1, 0.3),
    slow_delay_ms: int = 5000,
    duration_s: float | None = None,
) -> list[dict[str, Any]]:
    """One row per run of the scenario: its probe counters and its simulator metrics."""
    groups: list[list[SwimNode]] = []
    seen: set[str] = set()

    def factory(
        name: str,
        address: Address,
        config: Any,
        rng: random.Random,
        now_ms: int,
        incarnation: int,
        authority: Authority,
    ) -> SwimNode:
        if not groups or name in seen:
            groups.append([])
            seen.clear()
        seen.add(name)
        if grace_ms is not None:
            config = config.replace(last_word_grace_ms=grace_ms)
        node = SwimNode(
            name, address, config, rng, now_ms, incarnation=incarnation, authority=authority
        )
        groups[-1].append(node)
        return node

    opts = Options(
        scenario=scenario,
        nodes=nodes,
        seed=seed,
        kill=kill,
        loss_rates=loss_rates,
        slow_delay_ms=slow_delay_ms,
        duration_s=duration_s,
    )
    result = run(opts, Hooks(core_factory=factory))
    if result.error:
        raise RuntimeError(result.error)
    rows = []
    for r, cores in zip(result.runs, groups, strict=True):
        total: Counter[str] = Counter()
        for core in cores:
            for key in COUNTERS:
                total[key] += core.stats.get(key, 0)
        m = r.metrics
        killed = m.get("killed") or 0
        rows.append(
            {
                "nodes": nodes,
                "scenario": scenario,
                "run": r.label,
                "grace_ms": grace_ms,
                "checks_ok": all(check.ok for check in r.checks),
                "trace": r.trace_hash,
                **total,
                "last_word_per_crash_per_member": (
                    total["confirm_probes.final"] / killed / (nodes - 1) if killed else None
                ),
                "first_dead_mean_s": m["first_dead_s"]["mean"],
                "all_dead_mean_s": m["all_dead_s"]["mean"],
                "all_dead_max_s": m["all_dead_s"]["max"],
                "false_suspect": m["false_suspect"],
                "false_dead": m["false_dead"],
                "false_dead_hosts": m["false_dead_subjects"],
                # slow-nodes: whose false deaths (the slow members', the healthy ones')
                **{k: m[k] for k in SLOW_KEYS if k in m},
                "msgs_per_node_per_period": m["msgs_per_node_per_period"],
                "wall_s": m["wall_s"],
            }
        )
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 1000])
    ap.add_argument("--scenario", choices=SCENARIOS, default="crash")
    ap.add_argument("--grace-ms", nargs="+", type=int, default=None,
                    help="last_word_grace_ms values to compare (default: the preset's)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill", type=int, default=3, help="crash: victims")
    ap.add_argument("--loss-rates", nargs="+", type=float, default=[0.1, 0.3])
    ap.add_argument("--slow-delay-ms", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=None, help="seconds (loss: 40 in make.sh)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    if any(not 3 <= n <= 5000 for n in args.sizes):
        print("sizes must be 3-5000 (full membership is n² records)", file=sys.stderr)
        return 2
    graces: list[int | None] = list(args.grace_ms) if args.grace_ms else [None]
    print(f"{'nodes':>6} {'run':>14}{'grace':>7}{'probes':>9}{'confirm':>8}{'last-word':>10}"
          f"{'deferred':>9}{'late':>5}{'sick':>5}{'lw/crash/member':>16}{'1st DEAD':>9}{'all DEAD':>9}{'max':>7}"
          f"{'false SUSP':>11}{'false DEAD':>11}  checks")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        for g in graces:
            for r in probe_load(
                n,
                scenario=args.scenario,
                grace_ms=g,
                seed=args.seed,
                kill=args.kill,
                loss_rates=tuple(args.loss_rates),
                slow_delay_ms=args.slow_delay_ms,
                duration_s=args.duration,
            ):
                rows.append(r)
                print(f"{n:>6} {r['run']:>14}{_fmt(g, 'd'):>7}{r['probes']:>9}"
                      f"{r['confirm_probes']:>8}{r['confirm_probes.final']:>10}"
                      f"{r['last_word.deferred']:>9}{r['last_word.after_grace']:>5}"
                      f"{r['last_word.unhealthy']:>5}"
                      f"{_fmt(r['last_word_per_crash_per_member'], '.3f'):>16}"
                      f"{_fmt(r['first_dead_mean_s'], '.2f'):>9}"
                      f"{_fmt(r['all_dead_mean_s'], '.2f'):>9}{_fmt(r['all_dead_max_s'], '.2f'):>7}"
                      f"{r['false_suspect']:>11,}{r['false_dead']:>11,}"
                      f"  {'pass' if r['checks_ok'] else 'FAIL'} {r['trace'][:12]}"
                      + "".join(f" {k[11:]}={r[k]}" for k in SLOW_KEYS if k in r),
                      flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
