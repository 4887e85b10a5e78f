"""What one real failure costs in probes, at cluster sizes no laptop can stage: the `crash`
scenario of the simulator (real SWIM core, seeded) with one victim, summing every core's probe
counters afterwards.

    python benchmarks/swim_probe_load.py 100 1000

Prints, per size: routine probes over the run, confirmation probes (Lifeguard: members that heard
a suspicion probe the suspect themselves, ~fanout of them) and last-word probes (a member whose
suspicion deadline fires before it has heard "dead" probes once more before declaring it).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from typing import Any

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Authority
from gossipmesh.swim.node import SwimNode
from simulations.scenarios import Hooks, Options, run

COUNTERS = ("probes", "confirm_probes", "confirm_probes.final", "suspicions", "deaths")


def probe_load(nodes: int, seed: int = 1) -> dict[str, Any]:
    cores: list[SwimNode] = []

    def factory(
        name: str,
        address: Address,
        config: Any,
        rng: random.Random,
        now_ms: int,
        incarnation: int,
        authority: Authority,
    ) -> SwimNode:
        node = SwimNode(
            name, address, config, rng, now_ms, incarnation=incarnation, authority=authority
        )
        cores.append(node)
        return node

    result = run(
        Options(scenario="crash", nodes=nodes, seed=seed, kill=1), Hooks(core_factory=factory)
    )
    total: Counter[str] = Counter()
    for core in cores:
        for key in COUNTERS:
            total[key] += core.stats.get(key, 0)
    checks_ok = all(check.ok for r in result.runs for check in r.checks)
    return {"nodes": nodes, "checks_ok": checks_ok, **total}


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [100, 1000]
    if any(not 3 <= n <= 5000 for n in sizes):
        print("sizes must be 3-5000 (full membership is n² records)", file=sys.stderr)
        return 2
    print(
        f"{'nodes':>6}{'probes':>10}{'confirm':>9}{'last-word':>11}{'last-word/member':>18}  checks"
    )
    for n in sizes:
        r = probe_load(n)
        share = r["confirm_probes.final"] / (n - 1)
        print(f"{n:>6}{r['probes']:>10}{r['confirm_probes']:>9}{r['confirm_probes.final']:>11}"
              f"{share:>18.2f}  {'pass' if r['checks_ok'] else 'FAIL'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
