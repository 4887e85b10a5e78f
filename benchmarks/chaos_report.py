"""The chaos harness's report: ``chaos-<hosts>h-<duration>s-seed<seed>.md`` and a PNG timeline
next to it (faults as bands; request success rate; membership size; config convergence)."""

from __future__ import annotations

import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from chaos_check import CONVERGE_BOUND_S, origin_down
from chaos_nemesis import PARTITIONS

if TYPE_CHECKING:
    from chaos import ChaosResult

BUCKET_S = 5.0
COLOURS = {"isolate": "tab:red", "halves": "tab:orange", "minority": "tab:olive",
           "bridge": "tab:purple", "kill": "black", "kill-wipe": "tab:brown",
           "pause": "tab:blue", "clock": "tab:cyan", "loss": "tab:pink"}  # fmt: skip


def _fmt(s: float | None, gap: float | None = None) -> str:
    if s is None:
        return "never" if gap is None else f"not within the {gap:.1f} s before the next fault"
    return f"{s:.1f} s"


def write_png(result: ChaosResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, sched = result.records, result.schedule
    n = sched.hosts
    fig, axes = plt.subplots(5, 1, figsize=(12, 12), sharex=True)
    ax = axes[0]
    for f in sched.faults:
        rows = f.hosts if f.kind not in PARTITIONS or f.kind == "isolate" else (*f.hosts, *f.other)
        for h in rows:
            ax.barh(h, f.end_s - f.start_s, left=f.start_s, color=COLOURS[f.kind], alpha=0.7)
        ax.text(f.start_s, n + 0.6, f.kind, fontsize=7, rotation=30)
    for k in sched.upstream_kills:
        ax.barh(k.host, k.back_s - k.at_s, left=k.at_s, color="grey", alpha=0.35, height=0.3)
    ax.set_yticks(range(1, n + 1), [f"h{i}" for i in range(1, n + 1)])
    ax.set_ylim(0.4, n + 1.4)
    ax.set_title(f"faults (bands; grey: app SIGKILLed), seed {sched.seed}")

    def bands(a: plt.Axes) -> None:
        for f in sched.faults:
            a.axvspan(f.start_s, f.end_s, color=COLOURS[f.kind], alpha=0.12)

    buckets: dict[int, list[bool]] = defaultdict(list)
    for t, _h, ok, *_rest in rec.requests:
        buckets[int(t // BUCKET_S)].append(ok)
    xs = sorted(buckets)
    ax = axes[1]
    bands(ax)
    ax.plot([x * BUCKET_S for x in xs], [100 * sum(buckets[x]) / len(buckets[x]) for x in xs], lw=1,
            label="all")  # fmt: skip
    judged: dict[int, list[bool]] = defaultdict(list)
    down = origin_down(sched, rec)
    for t, h, ok, *_rest in rec.requests:
        if not any(dh == h and a <= t <= b for dh, a, b, _k in down):
            judged[int(t // BUCKET_S)].append(ok)
    js = sorted(judged)
    ax.plot([x * BUCKET_S for x in js], [100 * sum(judged[x]) / len(judged[x]) for x in js], lw=1,
            label="own agent running (judged)")  # fmt: skip
    ax.legend(fontsize=7, loc="lower left")
    ax.set_ylabel("success %")
    ax.set_ylim(
        min(90.0, min((100 * sum(b) / len(b) for b in buckets.values()), default=90)) - 1, 100.5
    )
    ax.set_title(f"requests through the sidecars, all hosts ({BUCKET_S:.0f} s buckets)")

    ax = axes[2]
    bands(ax)
    per_obs: dict[int, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for t, obs, _pid, view in rec.views:
        per_obs[obs][0].append(t)
        per_obs[obs][1].append(sum(1 for s in view.values() if s == "alive"))
    for obs, (ts, alive) in sorted(per_obs.items()):
        ax.step(ts, alive, where="post", lw=1, label=f"h{obs}")
    ax.set_ylabel("alive seen")
    ax.set_ylim(0, n + 0.5)
    ax.legend(fontsize=7, ncol=n, loc="lower left")
    ax.set_title("membership: members each agent sees alive")

    ax = axes[3]
    bands(ax)
    acked = sorted((w[0], w[2], w[3]) for w in rec.writes if w[4])
    per_obs2: dict[int, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for t, obs, _root, have in rec.configs:
        due = [(k, v) for (ta, k, v) in acked if ta <= t - 0.0]
        missing = sum(1 for k, v in due if have.get(k) != v)
        per_obs2[obs][0].append(t)
        per_obs2[obs][1].append(missing)
    for obs, (ts, miss) in sorted(per_obs2.items()):
        ax.step(ts, miss, where="post", lw=1, label=f"h{obs}")
    ax.set_ylabel("acked writes missing")
    ax.legend(fontsize=7, ncol=n, loc="upper left")
    ax.set_title("config convergence: acknowledged writes an agent does not have yet")

    ax = axes[4]
    series: dict[tuple[int, int], tuple[list[float], list[float], list[int]]] = defaultdict(
        lambda: ([], [], [])
    )
    for t, host, pid, rss, fds in rec.samples:
        series[(host, pid)][0].append(t)
        series[(host, pid)][1].append(rss / 1024)
        series[(host, pid)][2].append(fds)
    for (host, _pid), (ts, rss_mib, _fds) in sorted(series.items()):
        ax.plot(ts, rss_mib, lw=1, color=f"C{host - 1}")
    ax2 = ax.twinx()
    for (host, _pid), (ts, _rss, fd_counts) in sorted(series.items()):
        ax2.plot(ts, fd_counts, lw=0.8, ls="--", color=f"C{host - 1}")
    ax.set_ylabel("RSS MiB (solid)")
    ax2.set_ylabel("open FDs (dashed)")
    ax.set_xlabel("seconds")
    ax.set_title("agents' RSS and open FDs (one colour per host; a restart starts a new line)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(result: ChaosResult, out_dir: Path, log: list[str], command: str) -> Path:
    sched, fig = result.schedule, result.figures
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"chaos-{sched.hosts}h-{sched.duration_s:g}s-seed{sched.seed}"
    png = out_dir / f"{stem}.png"
    write_png(result, png)
    judged_rate = fig.judged_ok / fig.judged if fig.judged else 0.0
    lines = [
        f"# Chaos run: {sched.hosts} hosts, {sched.duration_s:g} s, seed {sched.seed}",
        "",
        f"Command: `{command}`  ",
        f"Result: **{'PASS' if result.ok else 'FAIL'}**  ",
        f"Report written at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()} Linux {platform.release()}, Python {platform.python_version()}.",
        "",
        f"![timeline]({png.name})",
        "",
        "## Checks",
        "",
        *[f"- {'PASS' if c.ok else 'FAIL'} **{c.name}**: {c.detail}" for c in result.checks],
        "",
        "## Figures",
        "",
        "| what | value |",
        "|---|---|",
        f"| config writes tried / acknowledged / found on every agent | {fig.writes_tried} / {fig.writes_acked} / {fig.writes_found} |",
        f"| requests (all) / succeeded | {fig.requests} / {fig.requests_ok} ({fig.requests_ok / max(1, fig.requests):.3%}) |",
        f"| requests judged (own agent running) / succeeded | {fig.judged} / {fig.judged_ok} ({judged_rate:.3%}) |",
        f"| requests not judged (origin's agent killed or paused) | {fig.excluded or 'none'} |",
        f"| failures among judged | {fig.failures or 'none'} |",
        f"| replicas identical and complete after the last heal or write | {_fmt(fig.final_converged_s)} (bound {CONVERGE_BOUND_S:.0f} s) |",
        f"| membership whole after the last heal | {_fmt(fig.final_whole_s)} (bound {CONVERGE_BOUND_S:.0f} s) |",
        f"| dead declarations explained by a fault / unexplained | {fig.excused_dead} / {len(fig.false_dead)} |",
        f"| operator reads (CLI `config get`) / ok | {fig.reads} / {fig.reads_ok} |",
        "| admin API answer (`GET /v1/members`, 1/s per agent, its own pause/kill left out): "
        "p50 / p99 / max, no answer in 2 s | "
        + (
            "not recorded"
            if fig.admin_ms is None
            else f"{fig.admin_ms[0]:.0f} / {fig.admin_ms[1]:.0f} / {fig.admin_ms[2]:.0f} ms of "
            f"{fig.admin_ms[3]}, {fig.admin_timeouts}"
        )  # fmt: skip
        + " |",
        "",
        *(
            ["Failed judged requests (first 20):", "", *[f"- {x}" for x in fig.failed], ""]
            if fig.failed
            else []
        ),
        "## Convergence after each heal",
        "",
        "Seconds from the heal until every agent sees every host alive, and until every agent has "
        "every write acknowledged before the heal (observers poll members every 1 s, config every 2 s). "
        "The next fault begins 5-10 s after a heal; a heal that had not converged by then is "
        "marked so (the measure would be the next fault's).",
        "",
        "| fault | healed at | membership whole | writes everywhere |",
        "|---|---|---|---|",
        *[
            f"| {d} | {h:.1f} s | {_fmt(m, gap)} | {_fmt(w, gap)} |"
            for (d, h, m, w), gap in zip(fig.heals, fig.gaps, strict=True)
        ],
        "",
        "## Agent RSS and open FDs",
        "",
        "Growth from the first to the second half of each agent process's lifetime after warm-up "
        "(samples every 5 s): RSS by the medians of the halves, open FDs by their lower quartiles: "
        "after a pause or a partition open FDs stay up by 8-25 for about a minute (pooled "
        "connections' idle expiry) and come back, a leak raises the lower quartile too; the FD "
        "medians are shown as well. Lifetimes under 240 s after warm-up are shown, not judged.",
        "",
        "| host | pid | span after warm-up | judged | RSS growth (medians) | FD growth (lower quartiles) | FD growth (medians) |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| h{h} | {pid} | {span:.0f} s | {'yes' if j else 'no (short)'} | {r:+.1%} | {f:+.1%} | {fm:+.1%} |"
            for h, pid, span, r, f, fm, j in fig.growth
        ],
        "",
        "## Nemesis log",
        "",
        "```",
        *log,
        "```",
        "",
    ]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path


def summarize(results: list[ChaosResult]) -> str:
    """Markdown for BENCHMARKS.md: one row per run, then convergence after heals by fault kind."""
    import statistics

    rows = [
        "| seed | result | writes acked / found everywhere | requests judged: ok / all | all requests: ok / all "
        "| replicas identical after the last heal or write | membership whole after the last heal "
        "| dead declarations (explained / not) | worst RSS / FD growth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_kind: dict[str, tuple[list[float], list[float], int]] = defaultdict(lambda: ([], [], 0))
    for r in results:
        f = r.figures
        rows.append(
            f"| {r.schedule.seed} | {'PASS' if r.ok else 'FAIL'} | {f.writes_acked} / {f.writes_found} "
            f"| {f.judged_ok} / {f.judged} ({f.judged_ok / max(1, f.judged):.3%}) "
            f"| {f.requests_ok} / {f.requests} ({f.requests_ok / max(1, f.requests):.2%}) "
            f"| {_fmt(f.final_converged_s)} | {_fmt(f.final_whole_s)} "
            f"| {f.excused_dead} / {len(f.false_dead)} "
            f"| {max((g[3] for g in f.growth if g[6]), default=0):+.1%} / "
            f"{max((g[4] for g in f.growth if g[6]), default=0):+.1%} |"
        )
        for (_desc, _h, m, w), fault in zip(f.heals, r.schedule.faults, strict=True):
            members, writes, unsettled = by_kind[fault.kind]
            if m is not None:
                members.append(m)
            if w is not None:
                writes.append(w)
            by_kind[fault.kind] = (members, writes, unsettled + (m is None or w is None))
    rows += [
        "",
        "| fault | heals | membership whole: median / max | writes everywhere: median / max | not converged before the next fault |",
        "|---|---|---|---|---|",
    ]
    for kind in sorted(by_kind):
        members, writes, unsettled = by_kind[kind]
        n = sum(1 for r in results for f in r.schedule.faults if f.kind == kind)

        def mm(xs: list[float]) -> str:
            return f"{statistics.median(xs):.1f} / {max(xs):.1f} s" if xs else "-"

        rows.append(f"| {kind} | {n} | {mm(members)} | {mm(writes)} | {unsettled} |")
    return "\n".join(rows)
