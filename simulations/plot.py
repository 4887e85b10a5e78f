"""Plots (matplotlib, an optional extra): detection CDF, convergence, messages per node per second.

Theory of operation
-------------------
One figure, three panels, every run of the scenario overlaid (a loss sweep or Lifeguard on/off
reads best side by side):

1. **Detection CDF**: for crashed hosts, the fraction detected by time after the crash: first
   SUSPECT, first DEAD and DEAD-everywhere. Empty when nothing crashed. In ``config-spread``
   this panel is the spread CDF instead: the fraction of live hosts holding each tracked write
   by time since it was written.
2. **Convergence**: wrong views (live observer, subject) pairs over virtual time, log scale,
   with the fault times marked: how fast a healed partition or a crash is absorbed.
3. **Load**: datagrams sent per live node per virtual second: SWIM's constant-load promise.

matplotlib is imported only here and only when ``--plot`` is given; ``missing_dependency``
lets the CLI fail early with one line instead of after a long run.
"""

from __future__ import annotations

from typing import Any

from simulations.scenarios import ScenarioResult


def missing_dependency() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib"
    return None


def plot(result: ScenarioResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    opts = result.options
    fig.suptitle(f"{opts.scenario} · {opts.nodes} nodes · seed {opts.seed} · {opts.profile}")
    _detection(axes[0], result)
    _convergence(axes[1], result)
    _load(axes[2], result)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    xs = sorted(values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))]


def _detection(ax: Any, result: ScenarioResult) -> None:
    if any(r.series.get("spread_s") for r in result.runs):
        _spread(ax, result)
        return
    styles = (("first_suspect_s", "-", "first SUSPECT"), ("first_dead_s", "--", "first DEAD"),
              ("all_dead_s", ":", "DEAD everywhere"))  # fmt: skip
    drew = False
    for r in result.runs:
        for key, ls, name in styles:
            vals = r.series.get(key) or []
            if vals:
                xs, ys = _cdf(vals)
                ax.step(xs, ys, ls, where="post", label=f"{r.label}: {name}")
                drew = True
    ax.set_title("time to detect a crash (CDF)")
    ax.set_xlabel("seconds after crash")
    ax.set_ylabel("fraction of crashed hosts")
    if drew:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no crashes in this scenario", ha="center", transform=ax.transAxes)


def _spread(ax: Any, result: ScenarioResult) -> None:
    """Config scenarios: fraction of live hosts holding each tracked write, by time since it."""
    for r in result.runs:
        for i, times in enumerate(r.series["spread_s"]):
            live = r.metrics["spread_per_write"][i]["live"]
            xs = [max(t, 1e-3) for t in times]
            ax.step(xs, [(k + 1) / live for k in range(len(xs))], where="post", lw=1,
                    label=f"write {i + 1}")  # fmt: skip
    ax.axvline(1.0, color="grey", lw=0.6, ls="--")
    ax.axhline(0.999, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_title("config write spread (goal: 99.9% by 1 s)")
    ax.set_xlabel("seconds after the write (log)")
    ax.set_ylabel("fraction of live hosts holding it")
    ax.legend(fontsize=7)


def _convergence(ax: Any, result: ScenarioResult) -> None:
    for r in result.runs:
        t0 = r.series["t0_ms"]
        pts = [((t - t0) / 1000, w) for t, w, _s, _u in r.series["samples"] if t >= t0]
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 0.8) for p in pts], label=r.label, lw=1)
        for t, _what in r.faults:
            ax.axvline((t - t0) / 1000, color="grey", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_title("wrong views (observer, subject pairs)")
    ax.set_xlabel("seconds after warm-up (faults dotted)")
    ax.legend(fontsize=7)


def _load(ax: Any, result: ScenarioResult) -> None:
    for r in result.runs:
        per_s = r.series["sent_per_s"]
        up = r.series["up_per_s"]
        t0s = r.series["t0_ms"] // 1000
        xs, ys = [], []
        # The last second is usually partial; leave it out rather than draw a false drop.
        for s in range(t0s, min(len(per_s), len(up)) - 1):
            if up[s]:
                xs.append(s - t0s)
                ys.append(per_s[s] / up[s])
        ax.plot(xs, ys, label=r.label, lw=1)
    ax.set_title("datagrams sent per live node per second")
    ax.set_xlabel("seconds after warm-up")
    ax.legend(fontsize=7)
