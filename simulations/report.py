"""Reports: the summary table, the failure banner, JSON for machines, markdown for humans.

Theory of operation
-------------------
A ``ScenarioResult`` is rendered three ways from the same numbers: a rich table on the terminal,
a JSON document (``--json``; every metric, every check, the fault log, the trace hash and the
command), and a markdown page (``--markdown``) that also states what theory predicts, so each
committed result under ``simulations/results/`` carries its own yardstick:

- SWIM (Das et al. 2002): with each member pinging one random member per protocol period T, the
  expected time until *some* member pings a failed one is e/(e-1) ≈ 1.58 periods, independent of
  N, counted in synchronous rounds from a round boundary to the end of the detecting round.
- Our core is memberlist-style: each member runs its own, unsynchronised period and walks a
  shuffled round-robin list; a member becomes *suspect* only at the end of the probe's period (T
  after the ping, once the indirect probes also failed). With N-1 probers at random phases the
  wait until the first ping of the victim is ~(N-1)/N·T, so the expected *first suspicion* is
  ≈ (2 - 1/N)·T, not 1.58·T. We measure first suspicion (the earliest SUSPECT by any live member)
  and first DEAD; both are printed next to their predictions.
- Declared dead = first suspicion + the Lifeguard suspicion timeout (memberlist's formula):
  min = α·max(1, log10 N)·T, max = β·min, shrinking with confirmations c towards min as
  max - (max - min)·log(c+1)/log(k+1), k = α - 2.
- Constant load: in steady state every member sends one ping and answers one per period on
  average, so ~2 datagrams per member per period, whatever N.
- Dissemination: infection-style gossip reaches everyone in O(log N) gossip rounds.
"""

from __future__ import annotations

import math
from typing import Any

from simulations.scenarios import ScenarioResult, swim_config


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def theory(result: ScenarioResult, nodes: int | None = None) -> dict[str, float]:
    """Predictions for this run's profile and size (seconds unless named otherwise)."""
    opts = result.options
    cfg = swim_config(opts.profile, opts.lifeguard)
    n = nodes or opts.nodes
    t = cfg.probe_interval_ms / 1000
    scale = max(1.0, math.log10(n))
    susp_min = cfg.suspicion_mult * scale * t
    susp_max = cfg.suspicion_max_timeout_mult * susp_min
    return {
        "probe_interval_s": t,
        "swim_first_detection_s": math.e / (math.e - 1) * t,
        "async_first_suspect_s": (2 - 1 / n) * t,
        "suspicion_min_s": susp_min,
        "suspicion_max_s": susp_max,
        "first_dead_s": (2 - 1 / n) * t + susp_min,
        "msgs_per_member_per_period": 2.0,
        "gossip_rounds_log_n": math.log(n) / math.log(cfg.gossip_nodes + 1),
    }


def render_summary(result: ScenarioResult, console: Any) -> None:
    from rich.table import Table

    runs = result.runs
    table = Table(title=f"{result.options.scenario}: {result.options.nodes} nodes, "
                  f"seed {result.options.seed}, profile {result.options.profile}")  # fmt: skip
    table.add_column("metric")
    for r in runs:
        table.add_column(r.label, justify="right")
    rows = [
        ("simulated s", lambda m: m["simulated_s"]),
        ("warm-up s", lambda m: m["warmup_s"]),
        ("wall s", lambda m: m["wall_s"]),
        ("events/s", lambda m: m["events_per_s"]),
        ("msgs/node/period", lambda m: m["msgs_per_node_per_period"]),
        ("false DEAD", lambda m: m["false_dead"]),
        ("false SUSPECT", lambda m: m["false_suspect"]),
        ("first suspect p50 s", lambda m: m["first_suspect_s"]["p50"]),
        ("first suspect mean s", lambda m: m["first_suspect_s"]["mean"]),
        ("first DEAD mean s", lambda m: m["first_dead_s"]["mean"]),
        ("all DEAD max s", lambda m: m["all_dead_s"]["max"]),
        ("heal → whole s", lambda m: m["heal_to_whole_s"]),
        ("dropped (loss)", lambda m: m["dropped"]["loss"]),
        ("push-pulls (failed)", lambda m: f"{m['push_pulls']} ({m['push_pulls_failed']})"),
    ]
    if "acked_writes" in runs[0].metrics:  # config scenarios
        rows += [
            ("acked config writes", lambda m: m["acked_writes"]),
            ("spread p50 s (worst write)", lambda m: m.get("spread_p50_s_max")),
            ("spread p99 s (worst write)", lambda m: m.get("spread_p99_s_max")),
            ("spread p99.9 s (worst write)", lambda m: m.get("spread_p99.9_s_max")),
            ("spread p100 s (worst write)", lambda m: m.get("spread_p100_s_max")),
            ("in-sync pair bytes (mean)", lambda m: m["insync_bytes_mean"]),
            ("config identical after heal s", lambda m: m.get("config_identical_after_heal_s")),
        ]
    for name, get in rows:
        table.add_row(name, *(_fmt(get(r.metrics)) for r in runs))
    table.add_row("checks", *("[green]pass" if r.ok else "[red]FAIL" for r in runs))
    table.add_row("trace", *(r.trace_hash[:12] for r in runs))
    console.print(table)


def render_failure(result: ScenarioResult, console: Any) -> None:
    opts = result.options
    if result.error is not None:
        console.print(result.error.rstrip(), markup=False, highlight=False)
        last = result.error.rstrip().splitlines()[-1]
        console.print(f"[red]FAILED[/red] the run stopped: {last}", markup=True, highlight=False)
    for r in result.runs:
        for c in r.checks:
            if not c.ok:
                console.print(f"[red]FAILED[/red] {r.label}: {c.name}: {c.detail}")
    console.print(f"seed={opts.seed}; you can reproduce this failure with:")
    console.print(f"  {opts.command()}", markup=False)


def to_json(result: ScenarioResult) -> dict[str, Any]:
    return {
        "scenario": result.options.scenario,
        "command": result.options.command(),
        "options": {k: getattr(result.options, k) for k in result.options.__slots__},
        "ok": result.ok,
        "theory": theory(result),
        "runs": [
            {
                "label": r.label,
                "ok": r.ok,
                "trace_hash": r.trace_hash,
                "metrics": r.metrics,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks],
                "faults": [{"t_s": t / 1000, "what": w} for t, w in r.faults],
                "series": {
                    k: v
                    for k, v in r.series.items()
                    if k in ("first_suspect_s", "first_dead_s", "all_dead_s")
                },
            }
            for r in result.runs
        ],
    }


def to_markdown(result: ScenarioResult, plot_file: str | None = None) -> str:
    opts = result.options
    th = theory(result)
    lines = [
        f"# {opts.scenario}: {opts.nodes} nodes (seed {opts.seed}, profile {opts.profile})",
        "",
        "Made with:",
        "",
        "```",
        opts.command() + (f" --plot {plot_file}" if plot_file else ""),
        "```",
        "",
        f"Outcome: **{'all checks passed' if result.ok else 'CHECKS FAILED'}**.",
        "",
    ]
    if plot_file:
        lines += [f"![plots]({plot_file.rsplit('/', 1)[-1]})", ""]
    metric_rows = [
        ("simulated seconds (incl. warm-up)", "simulated_s"),
        ("warm-up until every view whole (s)", "warmup_s"),
        ("wall seconds", "wall_s"),
        ("events", "events"),
        ("events per wall second", "events_per_s"),
        ("datagrams per node per second", "msgs_per_node_per_s"),
        ("datagrams per node per probe period", "msgs_per_node_per_period"),
        ("false DEAD declarations (live host declared dead)", "false_dead"),
        ("distinct live hosts falsely declared dead", "false_dead_subjects"),
        ("false SUSPECT declarations", "false_suspect"),
        ("push-pulls (failed)", "push_pulls"),
        ("view whole after heal (s)", "heal_to_whole_s"),
    ]
    lines += ["## Metrics", "", "| metric | " + " | ".join(r.label for r in result.runs) + " |"]
    lines += ["|---|" + "---:|" * len(result.runs)]
    for name, key in metric_rows:
        vals = []
        for r in result.runs:
            v = r.metrics.get(key)
            if key == "push_pulls":
                v = f"{r.metrics['push_pulls']} ({r.metrics['push_pulls_failed']})"
            vals.append(_fmt(v))
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    for key, name in (("first_suspect_s", "first SUSPECT after crash (s)"),
                      ("first_dead_s", "first DEAD after crash (s)"),
                      ("all_dead_s", "DEAD at every live member (s)")):  # fmt: skip
        if any(r.metrics[key]["n"] for r in result.runs):
            for stat in ("mean", "p50", "p99", "max"):
                vals = [_fmt(r.metrics[key][stat]) for r in result.runs]
                lines.append(f"| {name}, {stat} | " + " | ".join(vals) + " |")
    extra_keys = sorted({k for r in result.runs for k in r.metrics} - _BASE_KEYS - _TABLES)
    for key in extra_keys:
        lines.append(
            f"| {key} | " + " | ".join(_fmt(r.metrics.get(key)) for r in result.runs) + " |"
        )
    for r in result.runs:
        per_write = r.metrics.get("spread_per_write")
        if per_write:
            lines += ["", f"## Spread of each tracked write ({r.label})", "",
                      "| write | writer host | live hosts | reached | share by 0.1 s | "
                      "share by 1 s | 50% (s) | 99% (s) | 99.9% (s) | 100% (s) |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
            for i, w in enumerate(per_write):
                lines.append(f"| {i + 1} | {w['writer_host']} | {w['live']} | {w['reached']} | "
                             f"{w['by_0.1s']:.4f} | {w['by_1s']:.4f} | "
                             f"{_fmt(w['p50'])} | {_fmt(w['p99'])} | {_fmt(w['p99.9'])} | "
                             f"{_fmt(w['p100'])} |")  # fmt: skip
        counters = r.metrics.get("replica_counters")
        if counters:
            lines += ["", f"Replica counters ({r.label}): "
                      + ", ".join(f"{k} {v:,}" for k, v in counters.items())]  # fmt: skip
    lines += ["", "## Theory", "", "| quantity | predicted |", "|---|---:|"]
    for key, name in (
        ("probe_interval_s", "probe period T (s)"),
        ("swim_first_detection_s", "SWIM paper first detection e/(e-1)·T (s)"),
        ("async_first_suspect_s", "memberlist-style first SUSPECT ≈ (2-1/N)·T (s)"),
        ("suspicion_min_s", "suspicion timeout min α·log10(N)·T (s)"),
        ("suspicion_max_s", "suspicion timeout max β·min (s)"),
        ("first_dead_s", "first DEAD ≈ first SUSPECT + min (s)"),
        ("msgs_per_member_per_period", "datagrams per member per period (steady)"),
        ("gossip_rounds_log_n", "gossip rounds to reach all, log_(fanout+1) N"),
    ):
        lines.append(f"| {name} | {th[key]:.3g} |")
    if "acked_writes" in result.runs[0].metrics:
        f = opts.forward_fanout
        lines.append(f"| eager-push epidemic (forward fanout f = {f}): fraction never reached, "
                     f"s = exp(-f·(1-s)) | {_push_miss(f):.3g} |")  # fmt: skip
    lines += ["", "## Checks", ""]
    for r in result.runs:
        for c in r.checks:
            lines.append(f"- {r.label} · **{c.name}**: {'pass' if c.ok else 'FAIL'} — {c.detail}")
    lines += ["", "## Faults", ""]
    for r in result.runs:
        for t, what in r.faults:
            lines.append(f"- {r.label} · t={t / 1000:.1f}s: {what}")
    digest = result.runs[0].metrics.get("core_digest")
    lines += ["", f"SWIM core code digest (comments and docstrings excluded): `{digest}`"]
    lines += ["", "Trace hashes: " + ", ".join(f"{r.label} `{r.trace_hash}`" for r in result.runs)]
    return "\n".join(lines) + "\n"


def _push_miss(f: int) -> float:
    """Fixed point of s = exp(-f(1-s)): the share a push epidemic in which every newly informed
    host tells f random others once never reaches (the classic rumour-mongering result)."""
    if f <= 1:
        return 1.0
    s = 0.5
    for _ in range(200):
        s = math.exp(-f * (1 - s))
    return s


_TABLES = {"spread_per_write", "replica_counters"}

_BASE_KEYS = {
    "nodes", "profile", "lifeguard", "loss", "probe_interval_s", "warmup_s", "simulated_s",
    "events", "wall_s", "events_per_s", "packets_sent", "bytes_sent", "msgs_per_node_per_s",
    "msgs_per_node_per_period", "dropped", "duplicated", "push_pulls", "push_pulls_failed",
    "false_dead", "false_dead_subjects", "false_suspect", "member_changes", "first_suspect_s",
    "first_dead_s", "all_dead_s", "heal_to_whole_s", "up_at_end", "core_digest",
}  # fmt: skip
