"""Command line: ``python -m simulations SCENARIO --nodes N --seed S …`` (and ``gossipmesh simulate``).

Theory of operation
-------------------
The CLI is thin, in the fastapi-cli manner: parse, validate into an ``Options`` value, run the
scenario with a rich progress bar, render a summary table, optionally write ``--json`` and
``--plot``, and turn the outcome into an exit code at this one boundary:

- 0: every checker passed;
- 1: a checker failed, or a core raised and stopped the run: the failures (or the traceback),
  the seed and the exact command to reproduce are printed;
- 2: bad options: one clear line on stderr, nothing run.

argparse rather than typer here, because ``python -m simulations`` must work without the
gossipmesh CLI and because argparse lets us replace its multi-line usage dump with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from simulations.scenarios import SCENARIOS, Hooks, Options, ScenarioResult, run


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def build_parser(prog: str = "python -m simulations") -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog=prog,
        description="Deterministic simulations of the real gossipmesh SWIM and config cores.",
    )
    p.add_argument("scenario", choices=SCENARIOS, metavar="SCENARIO",
                   help="one of: " + ", ".join(SCENARIOS)
                   + " (and `swarm`: random fault plans, see `swarm -h`)")  # fmt: skip
    g = p.add_argument_group("common")
    g.add_argument("--nodes", type=int, default=100, help="cluster size (default 100)")
    g.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    g.add_argument("--duration", type=float, dest="duration_s", default=None,
                   help="simulated seconds after warm-up (per-scenario default)")  # fmt: skip
    g.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    g.add_argument("--duplicate", type=float, default=0.0, help="packet duplication probability")
    g.add_argument("--profile", choices=("lan", "wan", "local"), default="lan")
    g.add_argument("--latency-ms", type=float, default=None, help="base one-way latency")
    g.add_argument("--jitter-ms", type=float, default=None, help="median lognormal jitter")
    g.add_argument("--no-lifeguard", dest="lifeguard", action="store_false",
                   help="disable Lifeguard (awareness and dynamic suspicion)")  # fmt: skip
    g.add_argument("--lifeguard", dest="lifeguard", action="store_true", default=True,
                   help=argparse.SUPPRESS)  # fmt: skip
    g.add_argument("--join-spread", type=float, dest="join_spread_s", default=None,
                   help="bootstrap: hosts boot within this many seconds")  # fmt: skip
    g.add_argument("--cold-start", action="store_true",
                   help="bootstrap with the join storm instead of a converged warm start")  # fmt: skip
    g.add_argument("--warmup-max", type=float, dest="warmup_max_s", default=180.0)
    g.add_argument("--fault-at", type=float, dest="fault_at_s", default=5.0,
                   help="seconds after warm-up when faults start")  # fmt: skip
    g.add_argument("--settle", type=float, dest="settle_s", default=None,
                   help="seconds after faults end before checking")  # fmt: skip
    g.add_argument("--json", dest="json_file", default=None, metavar="FILE")
    g.add_argument("--plot", dest="plot_file", default=None, metavar="FILE.png")
    g.add_argument("--markdown", dest="md_file", default=None, metavar="FILE.md",
                   help="write a markdown report")  # fmt: skip
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    s = p.add_argument_group("scenario options")
    s.add_argument("--kill", type=int, default=3, help="crash/loss: hosts to crash")
    s.add_argument("--loss-rates", type=_rates, default=(0.0, 0.05, 0.1, 0.2, 0.3),
                   help="loss: comma-separated sweep")  # fmt: skip
    s.add_argument("--slow", type=int, default=None, help="slow-nodes: how many (default N/20)")
    s.add_argument("--slow-delay-ms", type=int, default=10_000,
                   help="slow-nodes: inbound packet lag")  # fmt: skip
    s.add_argument("--slow-timer-delay-ms", type=int, default=None,
                   help="slow-nodes: timer lag (default packet lag / 10)")  # fmt: skip
    s.add_argument("--split", choices=("half", "one"), default="half",
                   help="partition: 50/50 or 1-vs-rest")  # fmt: skip
    s.add_argument("--hold", type=float, dest="hold_s", default=30.0,
                   help="partition: seconds before healing")  # fmt: skip
    s.add_argument("--asymmetric", action="store_true", help="partition: cut a->b only")
    s.add_argument("--flaps", type=int, default=0, help="partition: flapping links during hold")
    s.add_argument("--captured", type=int, default=0,
                   help="any SWIM scenario: hosts whose key an attacker holds; they forge "
                   "membership from --fault-at for --attack-for seconds")  # fmt: skip
    s.add_argument(
        "--attack-for",
        type=float,
        dest="attack_s",
        default=30.0,
        help="seconds the captured hosts attack (default 30)",
    )
    s.add_argument("--churn-rate", type=float, default=0.5, help="churn: events per second")
    s.add_argument("--churn-for", type=float, dest="churn_s", default=60.0,
                   help="churn: seconds of churn")  # fmt: skip
    k = p.add_argument_group("config scenarios (config-spread, partition-edit)")
    k.add_argument("--writes", type=int, default=5, help="config-spread: tracked writes, 5 s apart")
    k.add_argument("--eager-fanout", type=int, default=3,
                   help="members a fresh delta is pushed to directly (agent: 3)")  # fmt: skip
    k.add_argument("--forward-fanout", type=int, default=2,
                   help="members a merged delta's new part is forwarded to (agent: 2)")  # fmt: skip
    k.add_argument("--sync-interval-ms", type=int, default=3000,
                   help="anti-entropy base period before size scaling (agent: 3000)")  # fmt: skip
    k.add_argument("--no-anti-entropy", dest="anti_entropy", action="store_false",
                   help="switch config-sync off (to watch what gossip alone does)")  # fmt: skip
    return p


def options_from_args(ns: argparse.Namespace) -> Options:
    skip = {"json_file", "plot_file", "md_file", "quiet"}
    return Options(**{k: v for k, v in vars(ns).items() if k not in skip})


def main(argv: Sequence[str] | None = None, prog: str = "python -m simulations") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["swarm"]:  # the fault swarm has options of its own (simulations/swarm/)
        from simulations.swarm.cli import main as swarm_main

        return swarm_main(argv[1:], prog)
    parser = build_parser(prog)
    ns = parser.parse_args(argv)
    opts = options_from_args(ns)
    try:
        opts.validate()
    except ValueError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    if ns.plot_file:
        from simulations import plot

        missing = plot.missing_dependency()
        if missing:
            sys.stderr.write(
                f"{prog}: error: --plot needs {missing} (pip install 'gossipmesh[plot]')\n"
            )
            return 2

    from rich.console import Console

    console = Console(stderr=True)
    result = _run_with_progress(opts, console, quiet=ns.quiet)

    from simulations import report

    out = Console()
    if result.error is not None:  # stopped on an exception: no complete run to summarise
        report.render_failure(result, out)
        return 1
    report.render_summary(result, out)
    if ns.json_file:
        with open(ns.json_file, "w") as fh:
            json.dump(report.to_json(result), fh, indent=2)
    if ns.plot_file:
        from simulations import plot

        plot.plot(result, ns.plot_file)
    if ns.md_file:
        with open(ns.md_file, "w") as fh:
            fh.write(report.to_markdown(result, plot_file=ns.plot_file))
    if not result.ok:
        report.render_failure(result, out)
        return 1
    return 0


def _run_with_progress(opts: Options, console: Any, quiet: bool) -> ScenarioResult:
    if quiet:
        return run(opts)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sim]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(label: str, done_ms: int, total_ms: int) -> None:
            task = tasks.get(label)
            if task is None:
                task = tasks[label] = bar.add_task(label, total=max(1, total_ms), sim="")
            bar.update(task, completed=min(done_ms, total_ms), sim=f"{done_ms / 1000:.0f}s sim")

        return run(opts, Hooks(progress=progress))


def entry() -> None:
    code = main()
    # Everything the command writes is written and closed by now. A big run's cluster is 10^8
    # objects, and an interpreter exit frees them one by one: 80 s of a 226 s run at 20,000
    # hosts. The process is ending, so leave the memory to the kernel (mypy exits so too).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
