"""What the simulator's warm start costs, per (observer, member) pair, and where it goes.

Builds the cluster ``python -m simulations steady --nodes N --seed 1`` would build and runs
``harness.warm_start`` alone (no simulated time), timing it and its parts: booting the hosts
(their certificates and first signed claims, O(n)), host 0 merging the full state through the
join path (every claim checked once, O(n)), ``SwimNode.answer_joins`` giving every other host
the same outcome (O(n^2): one random draw and one probe-order swap a pair), the ledger
learning the views (``ObserverLedger.all_learned``), and the rest (the join-path merges,
re-arming the timers). CPU seconds (``process_time``) are printed
beside wall seconds: on a shared machine the CPU figure is the one to compare. Not a test: one
process, bounded by ``--nodes``.

    python benchmarks/sim_warm_start.py --nodes 2000

On a tree before ``answer_joins`` existed (every host merging through the join path) the parts
that do not exist are simply not printed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipmesh.swim.node import SwimNode  # noqa: E402
from simulations.cluster import Cluster  # noqa: E402
from simulations.harness import build, warm_start  # noqa: E402
from simulations.scenarios import Hooks, Options  # noqa: E402
from simulations.views import ObserverLedger  # noqa: E402

MAX_NODES = 20_000


def _timed(owner: Any, name: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` so the CPU seconds spent in it add up in ``spent[name]``."""
    real: Callable[..., Any] | None = getattr(owner, name, None)
    if real is None:
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - t

    setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    args = ap.parse_args()
    n = max(2, min(args.nodes, MAX_NODES))
    spent: dict[str, float] = {}
    for owner, name in ((Cluster, "boot"), (SwimNode, "answer_joins"),
                        (ObserverLedger, "all_learned")):  # fmt: skip
        _timed(owner, name, spent)
    cluster = build(Options("steady", nodes=n, seed=1), Hooks(), lifeguard=True, loss=0.0)
    cpu, wall = time.process_time(), time.perf_counter()
    warm_start(cluster)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pairs = n * n
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} hosts, {pairs:,} pairs: warm start {cpu:.2f} s CPU ({wall:.2f} s wall) = "
          f"{cpu / pairs * 1e6:.3f} us CPU a pair; max RSS {rss_mb:.0f} MB")  # fmt: skip
    rest = cpu - sum(spent.values())
    # The rest: the join-path merges (host 0's, or every host's on a tree before answer_joins)
    # and re-arming the timers.
    for name, secs in [*sorted(spent.items(), key=lambda kv: -kv[1]), ("join path etc.", rest)]:
        print(f"  {name:>14}: {secs:7.2f} s CPU = {secs / pairs * 1e6:.3f} us a pair")


if __name__ == "__main__":
    main()
