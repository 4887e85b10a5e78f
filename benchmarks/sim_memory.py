"""Where the simulator's memory goes, per (observer, member) pair.

Builds the cluster ``python -m simulations steady`` would build (real SWIM cores, signed
membership), warm-starts it (every host knows every other one), runs ``--seconds`` of simulated
steady state, then takes a ``tracemalloc`` snapshot (one frame per allocation) and prints the
allocation sites by bytes per pair, largest first, with the traced total and the process's max
RSS. Not a test: one process, bounded by ``--nodes`` (at most 5,000: the snapshot itself needs
memory) and ``--seconds``.

    python benchmarks/sim_memory.py --nodes 2000 --seconds 5

Tracing slows the warm start about threefold; the bytes are what they are without it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.harness import build, warm_start  # noqa: E402
from simulations.scenarios import Hooks, Options  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0, help="simulated steady state")
    ap.add_argument("--top", type=int, default=12, help="allocation sites to print")
    args = ap.parse_args()
    n = max(10, min(args.nodes, 5000))
    tracemalloc.start(1)
    cluster = build(Options("steady", nodes=n, seed=1), Hooks(), lifeguard=True, loss=0.0)
    warm_start(cluster)
    cluster.run_until(int(args.seconds * 1000))
    gc.collect()
    stats = tracemalloc.take_snapshot().statistics("lineno")
    pairs = n * n
    total = sum(s.size for s in stats)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} hosts, {pairs:,} pairs: traced {total / 1e6:.1f} MB = {total / pairs:.1f} B a pair;"
          f" max RSS {rss_mb:.0f} MB")  # fmt: skip
    for s in stats[: args.top]:
        frame = s.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"{s.size / pairs:8.1f} B a pair  {s.count:>9,} blocks  {where}")


if __name__ == "__main__":
    main()
