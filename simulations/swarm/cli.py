"""``python -m simulations swarm`` (and ``gossipmesh simulate swarm``): run, replay, shrink, report.

Theory of operation
-------------------
Two modes, one exit-code contract (0 every seed passed, 1 a seed failed, 2 bad options):

- **swarm**: ``--seeds N [--first-seed S] --nodes LO..HI [--jobs J] [--max-wall SECONDS]
  [--hold-s SECONDS]``  runs seeds S..S+N-1 (each: ``generate`` -> ``run_plan``; with ``--max-wall`` only the first
  ones that fit in that time, and the report says how many), prints a line per failure as it happens, then shrinks
  each failure (``--shrink-max`` of them, first ones first) and prints the command that
  replays the shrunk plan, and a summary: seeds per second, faults carried out by kind, the
  settle bound and the settle times seen. ``--markdown FILE`` writes that as a report;
  ``--traces FILE`` one line per seed (seed, nodes, events, settle time, PASS/FAIL, trace hash,
  digest of the final member tables),
  so two builds can be compared seed by seed (a storage-only change must leave it identical).
- **replay**: ``--seed S --nodes N --plan '...'`` runs exactly that plan (the command a failure
  prints) and shows every check.

``--hold-s`` is the hold window past the settle bound in which the settled properties must keep
holding (``runner.HOLD_MS`` by default; 0 = off, the check at the bound alone). The report
states it; a replay command printed for a run with another window carries ``--hold-s``, and
shrinking runs every candidate with the same window, so a relapse shrinks as a relapse.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn

from simulations.swarm.generate import generate
from simulations.swarm.plan import parse_plan
from simulations.swarm.pool import run_seeds
from simulations.swarm.runner import HOLD_MS, Outcome, run_plan
from simulations.swarm.shrink import Shrunk, shrink


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _nodes(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("..")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nodes takes N or LO..HI, got {text!r}") from None
    if not 3 <= a <= b <= 5_000:
        raise argparse.ArgumentTypeError(f"--nodes needs 3 <= LO <= HI <= 5000, got {text!r}")
    return a, b


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{prog} swarm", description="Random fault plans against the real cores, "
                "every invariant checked on each seed, failures shrunk.")  # fmt: skip
    p.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    p.add_argument("--first-seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--nodes", type=_nodes, default=(20, 200), metavar="LO..HI",
                   help="cluster size, drawn per seed (default 20..200)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--max-wall", type=float, dest="max_wall_s", default=None, metavar="SECONDS",
                   help="start no seed after this many wall seconds; the report counts the "
                   "seeds that ran (1..N in order)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="replay: the seed of --plan")
    p.add_argument("--plan", default=None, help="replay exactly this plan (with --seed, --nodes N)")
    p.add_argument("--shrink-max", type=int, default=3,
                   help="failures to shrink (default 3; 0: none)")  # fmt: skip
    p.add_argument("--shrink-runs", type=int, default=80, help="runs per shrink (default 80)")
    p.add_argument("--hold-s", type=float, dest="hold_s", default=HOLD_MS / 1000,
                   metavar="SECONDS", help="after the settle bound, keep running this long and "
                   "check every 2 s that the settled properties still hold (a break fails the "
                   f"seed as relapsed); default {HOLD_MS // 1000}, 0: off")  # fmt: skip
    p.add_argument("--markdown", dest="md_file", default=None, metavar="FILE.md")
    p.add_argument("--json", dest="json_file", default=None, metavar="FILE")
    p.add_argument("--traces", dest="traces_file", default=None, metavar="FILE",
                   help="write one line per seed: seed nodes events settled_ms ok trace tables")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no per-seed progress")
    return p


def main(argv: Sequence[str], prog: str = "python -m simulations") -> int:
    ns = build_parser(prog).parse_args(argv)
    if ns.seeds < 1 or ns.jobs < 1:
        sys.stderr.write(f"{prog} swarm: error: --seeds and --jobs must be at least 1\n")
        return 2
    if not 0 <= ns.hold_s <= 3_600:
        sys.stderr.write(f"{prog} swarm: error: --hold-s must be within 0..3600\n")
        return 2
    ns.hold_ms = round(ns.hold_s * 1000)
    # the window a printed replay command must carry: none when it is the default
    ns.hold_arg = None if ns.hold_ms == HOLD_MS else ns.hold_ms / 1000
    if ns.plan is not None or ns.seed is not None:
        return _replay(ns, prog)
    return _swarm(ns, prog, argv)


def _replay(ns: argparse.Namespace, prog: str) -> int:
    lo, hi = ns.nodes
    if ns.seed is None or lo != hi:
        sys.stderr.write(f"{prog} swarm: error: a replay needs --seed S and --nodes N\n")
        return 2
    try:
        plan = (parse_plan(ns.seed, lo, ns.plan) if ns.plan is not None
                else generate(ns.seed, lo, hi))  # fmt: skip
    except ValueError as exc:
        sys.stderr.write(f"{prog} swarm: error: {exc}\n")
        return 2
    out = run_plan(plan, hold_ms=ns.hold_ms)
    print(plan.command(prog, ns.hold_arg))
    _print_outcome(out)
    return 0 if out.ok else 1


def _print_outcome(out: Outcome) -> None:
    settled = "never" if out.settled_ms is None else f"{out.settled_ms / 1000:.0f}s"
    hold = f"hold {out.hold_ms / 1000:g}s" + (
        ""
        if out.relapsed_ms is None
        else f", relapsed {out.relapsed_ms / 1000:.0f}s after the heal"
    )
    print(f"seed {out.seed}: {out.nodes} nodes, {out.simulated_ms / 1000:.0f}s simulated, "
          f"settled {settled} after the heal (bound {out.settle_bound_ms / 1000:.0f}s, {hold}), "
          f"trace {out.trace[:16]}, {'PASS' if out.ok else 'FAIL'}")  # fmt: skip
    for name, detail in out.failures:
        print(f"  FAIL {name}: {detail}")
    if out.error is not None:
        print("  a core raised:\n" + out.error)


def _swarm(ns: argparse.Namespace, prog: str, argv: Sequence[str]) -> int:
    lo, hi = ns.nodes
    seeds = range(ns.first_seed, ns.first_seed + ns.seeds)
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    runs = run_seeds(seeds, lo, hi, ns.jobs, hold_ms=ns.hold_ms)
    for out in runs:
        outcomes.append(out)
        if ns.max_wall_s is not None and time.perf_counter() - start > ns.max_wall_s:
            print(f"--max-wall {ns.max_wall_s:g}s reached after {len(outcomes)} seeds",
                  file=sys.stderr)  # fmt: skip
            runs.close()  # stops the pool (the seeds in flight are not counted)
            break
        if not out.ok:
            plan = generate(out.seed, lo, hi)
            what = out.error.strip().splitlines()[-1] if out.error else \
                "; ".join(n for n, _ in out.failures)  # fmt: skip
            print(f"seed {out.seed} FAILED ({what}): {plan.command(prog, ns.hold_arg)}",
                  flush=True)  # fmt: skip
        elif not ns.quiet and len(outcomes) % 100 == 0:
            rate = len(outcomes) / (time.perf_counter() - start)
            print(f"{len(outcomes)} seeds, {rate:.2f} seeds/s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    failed = [o for o in outcomes if not o.ok]
    shrunk: list[tuple[Outcome, Shrunk]] = []
    for out in failed[: ns.shrink_max]:
        res = shrink(generate(out.seed, lo, hi), out,
                     lambda p: run_plan(p, hold_ms=ns.hold_ms), max_runs=ns.shrink_runs)  # fmt: skip
        shrunk.append((out, res))
        print(f"seed {out.seed} shrunk in {res.runs} runs to {len(res.plan.faults)} faults, "
              f"{res.plan.nodes} nodes: {res.plan.command(prog, ns.hold_arg)}", flush=True)  # fmt: skip
    summary = summarize(outcomes, wall, ns.jobs, lo, hi, ns.hold_ms)
    if ns.traces_file:
        with open(ns.traces_file, "w") as fh:
            fh.writelines(f"{o.seed} {o.nodes} {o.events} {o.settled_ms} "
                          f"{'PASS' if o.ok else 'FAIL'} {o.trace} {o.tables}\n"
                          for o in sorted(outcomes, key=lambda o: o.seed))  # fmt: skip
    command = " ".join([prog, "swarm", *argv])
    text = to_markdown(command, summary, outcomes, shrunk, prog, lo, hi, ns.hold_arg)
    print(text)
    if ns.md_file:
        with open(ns.md_file, "w") as fh:
            fh.write(text)
    if ns.json_file:
        with open(ns.json_file, "w") as fh:
            json.dump({"command": command, **summary,
                       "failures": [{"seed": o.seed, "failures": o.failures, "error": o.error}
                                    for o in failed]}, fh, indent=2)  # fmt: skip
    return 1 if failed else 0


def summarize(
    outcomes: list[Outcome], wall_s: float, jobs: int, lo: int, hi: int, hold_ms: int = HOLD_MS
) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    for o in outcomes:
        kinds.update(dict(o.counts))
    settled = sorted(o.settled_ms for o in outcomes if o.settled_ms is not None)
    bounds = [o.settle_bound_ms for o in outcomes]
    return {
        "seeds": len(outcomes),
        "failed": sum(1 for o in outcomes if not o.ok),
        "wall_s": round(wall_s, 1),
        "jobs": jobs,
        "seeds_per_s": round(len(outcomes) / wall_s, 3) if wall_s else None,
        "nodes": f"{lo}..{hi}",
        "simulated_s": round(sum(o.simulated_ms for o in outcomes) / 1000),
        "events": sum(o.events for o in outcomes),
        "faults": dict(sorted(kinds.items())),
        "settle_bound_s": [min(bounds) / 1000, max(bounds) / 1000] if bounds else None,
        "hold_s": hold_ms / 1000,
        "relapsed": sum(1 for o in outcomes if o.relapsed_ms is not None),
        "settled_s_p50": settled[len(settled) // 2] / 1000 if settled else None,
        "settled_s_p99": settled[int(0.99 * (len(settled) - 1))] / 1000 if settled else None,
        "settled_s_max": settled[-1] / 1000 if settled else None,
        "slowest": _slowest(outcomes),
    }


def _slowest(outcomes: list[Outcome], k: int = 3) -> str:
    """The ``k`` seeds that took longest to settle after the heal, to trace first."""
    timed = [(o.settled_ms, o.seed) for o in outcomes if o.settled_ms is not None]
    timed.sort(key=lambda t: (-t[0], t[1]))
    return ", ".join(f"seed {seed} ({ms / 1000:.0f} s)" for ms, seed in timed[:k]) or "-"


def to_markdown(
    command: str,
    s: dict[str, Any],
    outcomes: list[Outcome],
    shrunk: list[tuple[Outcome, Shrunk]],
    prog: str,
    lo: int,
    hi: int,
    hold_s: float | None = None,
) -> str:
    lines = [
        f"# Swarm: {s['seeds']} seeds, {s['nodes']} nodes",
        "",
        f"`{command}`",
        "",
        f"- seeds: **{s['seeds']}**, failed: **{s['failed']}**",
        f"- wall: {s['wall_s']} s with {s['jobs']} process(es): **{s['seeds_per_s']} seeds/s**",
        f"- simulated: {s['simulated_s']} s, {s['events']:,} events",
        f"- settle bound after the last heal: {s['settle_bound_s']} s (by cluster size); "
        f"settled (every view whole, every document identical, from then on) p50 "
        f"{s['settled_s_p50']} s, p99 {s['settled_s_p99']} s, max {s['settled_s_max']} s",
        f"- hold window past the bound: {s['hold_s']:g} s, the settled properties checked every "
        f"2 s of it (0: off); relapsed: {s['relapsed']}",
        "",
        f"- slowest to settle: {s['slowest']}",
        f"- messages forged or replayed by captured hosts: {s['faults'].get('forged_sent', 0):,}",
        "",
        "| fault (carried out) | count |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:,} |" for k, v in s["faults"].items() if k != "forged_sent"]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines += ["", "## Failures", ""]
        for o in failed:
            lines.append(f"- seed {o.seed}: `{generate(o.seed, lo, hi).command(prog, hold_s)}`")
            for name, detail in o.failures:
                lines.append(f"  - {name}: {detail[:400]}")
            if o.error:
                lines.append(f"  - exception: {o.error.strip().splitlines()[-1][:400]}")
        for o, res in shrunk:
            lines.append(f"- seed {o.seed} shrunk ({res.runs} runs): "
                         f"`{res.plan.command(prog, hold_s)}`")  # fmt: skip
    return "\n".join(lines) + "\n"
