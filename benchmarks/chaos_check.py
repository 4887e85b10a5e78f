"""The chaos harness's checkers: pure functions of the schedule and what the workload recorded.

1. writes: every acknowledged write is on every agent with its value, and all replicas have the
   same root hash, within ``CONVERGE_BOUND_S`` after the last heal (or the last write, if later);
2. membership: every agent sees every host alive within ``CONVERGE_BOUND_S`` after the last heal;
3. no false dead: an observer O's view of S turning alive/suspect -> dead is explained only by a
   fault that separates O and S (a partition between them, either of them isolated, killed or
   paused) that began before and ended at most ``DEAD_GRACE_S`` before it; clock jumps and packet
   loss explain nothing;
4. requests: success >= 99.9 % of the idempotent requests whose own host's agent was running
   (a request into a killed or paused sidecar has nowhere to go; those are counted apart), while
   an upstream app is SIGKILLed every 30 s and the nemesis plays the rest;
5. resources: each agent process's RSS (medians) and open FDs (lower quartiles) grow <= 10 %
   from the first to the second half of its lifetime after warm-up; lifetimes shorter than ``MIN_JUDGED_S`` after
   warm-up (every one in a 60 s run; agents killed mid-soak) are reported, not judged. (process lifetimes shorter than warm-up + ``MIN_JUDGED_S`` are not judged).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from chaos_nemesis import Schedule
from chaos_workload import Records

CONVERGE_BOUND_S = 30.0
DEAD_GRACE_S = 20.0
SUCCESS_MIN = 0.999
GROWTH_MAX = 0.10
# A lifetime is judged from 4 minutes after warm-up: after a pause or a partition, open FDs stay
# up by 8-25 for about a minute (pooled connections' idle expiry) and come back (seen in the
# soaks), so a shorter lifetime that ends in such a transient says nothing about a leak.
MIN_JUDGED_S = 240.0
ORIGIN_GRACE_S = 3.0
IN_FLIGHT_S = 1.0  # how long a request is taken to be in flight when its end was not recorded
CALM_GRACE_S = 10.0  # after a fault heals, before a resource sample counts as calm  # after an origin's agent is back, before its requests count again


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Figures:
    writes_acked: int = 0
    writes_tried: int = 0
    writes_found: int = 0  # acknowledged writes present with their value on every agent
    requests: int = 0
    requests_ok: int = 0
    judged: int = 0
    judged_ok: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # the first failed judged requests
    failures: dict[str, int] = field(default_factory=dict)
    heals: list[tuple[str, float, float | None, float | None]] = field(
        default_factory=list
    )  # fault, heal s, members s, writes s
    gaps: list[float] = field(default_factory=list)  # per heal: seconds until the next fault
    final_converged_s: float | None = None
    final_whole_s: float | None = None
    false_dead: list[str] = field(default_factory=list)
    excused_dead: int = 0
    # host, pid, span s, growth of: RSS (medians), FDs (lower quartiles), FDs (medians); judged?
    growth: list[tuple[int, int, float, float, float, float, bool]] = field(default_factory=list)
    reads: int = 0
    reads_ok: int = 0
    admin_ms: tuple[float, float, float, int] | None = None  # p50, p99, max, answers
    admin_timeouts: int = 0  # no answer within 2 s, from an agent neither paused nor killed


def origin_down(sched: Schedule, rec: Records) -> list[tuple[int, float, float, str]]:
    """(host, from, to, kind): when a host's own agent was killed or paused. A killed agent is
    down until its restarted process first answered an observer (its sidecar starts with it),
    plus ``ORIGIN_GRACE_S``."""
    back: dict[int, list[float]] = {}
    first_seen: dict[int, float] = {}
    for t, obs, pid, _view in rec.views:
        if pid not in first_seen:
            first_seen[pid] = t
            back.setdefault(obs, []).append(t)
    out = []
    for f in sched.faults:
        if f.kind not in ("kill", "kill-wipe", "pause"):
            continue
        host = f.hosts[0]
        end = f.end_s
        if f.kind != "pause":
            end = min((t for t in back.get(host, []) if t >= f.end_s), default=f.end_s + 60.0)
        out.append((host, f.start_s, end + ORIGIN_GRACE_S, f.kind))
    return out


def check_requests(sched: Schedule, rec: Records, fig: Figures) -> Check:
    down = origin_down(sched, rec)
    for row in rec.requests:
        t, host, ok, why = row[:4]
        done = row[4] if len(row) > 4 else t + IN_FLIGHT_S
        fig.requests += 1
        fig.requests_ok += ok
        # In flight at any moment of the window: one whose own sidecar is SIGKILLed under it
        # has nowhere to go either.
        kind = next((k for h, a, b, k in down if h == host and t <= b and done >= a), None)
        if kind is not None:
            fig.excluded[kind] = fig.excluded.get(kind, 0) + 1
            continue
        fig.judged += 1
        fig.judged_ok += ok
        if not ok:
            what = why.split(":")[0][:60]
            fig.failures[what] = fig.failures.get(what, 0) + 1
            if len(fig.failed) < 20:
                fig.failed.append(f"{t:.1f} s from h{host}: {why}")
    rate = fig.judged_ok / fig.judged if fig.judged else 0.0
    return Check(
        "requests",
        fig.judged > 0 and rate >= SUCCESS_MIN,
        f"{fig.judged_ok}/{fig.judged} = {rate:.4%} (>= {SUCCESS_MIN:.1%}) of requests whose own "
        f"agent ran; all {fig.requests_ok}/{fig.requests}; failures {fig.failures or 'none'}",
    )


def whole_after(rec: Records, n: int, after: float) -> float | None:
    """First time >= ``after`` from which every observer's latest view (since ``after``) has all
    ``n`` hosts alive."""
    latest: dict[int, bool] = {}
    for t, obs, _pid, view in rec.views:
        if t < after:
            continue
        latest[obs] = len(view) == n and all(s == "alive" for s in view.values())
        if len(latest) == n and all(latest.values()):
            return t
    return None


def _writes_present_after(rec: Records, n: int, after: float, keys: dict[str, int]) -> float | None:
    """First time >= ``after`` at which every observer's latest config has all ``keys``."""
    latest: dict[int, bool] = {}
    for t, obs, _root, have in rec.configs:
        if t < after:
            continue
        latest[obs] = all(have.get(k) == v for k, v in keys.items())
        if len(latest) == n and all(latest.values()):
            return t
    return None


def acked_before(rec: Records, t: float) -> dict[str, int]:
    return {w[2]: w[3] for w in rec.writes if w[4] and w[0] <= t}


def convergence(sched: Schedule, rec: Records, fig: Figures) -> None:
    """Per heal: seconds until membership was whole and every write acknowledged before the heal
    was everywhere, or None if that did not happen before the next fault began (or the run's
    final wait ended; ``fig.gaps`` has the time there was)."""
    for i, f in enumerate(sched.faults):
        nxt = sched.faults[i + 1].start_s if i + 1 < len(sched.faults) else float("inf")
        whole = whole_after(rec, sched.hosts, f.end_s)
        present = _writes_present_after(rec, sched.hosts, f.end_s, acked_before(rec, f.end_s))
        fig.heals.append((f.describe(), f.end_s,
                          None if whole is None or whole > nxt else whole - f.end_s,
                          None if present is None or present > nxt else present - f.end_s))  # fmt: skip
        fig.gaps.append(nxt - f.end_s)


def check_false_dead(sched: Schedule, rec: Records, fig: Figures) -> Check:
    last: dict[tuple[int, str], tuple[int, str]] = {}  # (observer, subject) -> (pid, state)
    for t, obs, pid, view in rec.views:
        for name, state in view.items():
            prev = last.get((obs, name))
            last[(obs, name)] = (pid, state)
            if (
                state != "dead"
                or prev is None
                or prev[0] != pid
                or prev[1] not in ("alive", "suspect")
            ):
                continue
            subj = int(name[1:]) if name[1:].isdigit() else -1
            excused = any(
                f.separates(obs, subj) and f.start_s <= t <= f.end_s + DEAD_GRACE_S
                for f in sched.faults
            )
            if excused:
                fig.excused_dead += 1
            else:
                fig.false_dead.append(f"h{obs} declared {name} dead at {t:.1f} s")
    return Check(
        "no false dead",
        not fig.false_dead,
        f"{fig.excused_dead} dead declarations explained by a fault; unexplained: "
        f"{fig.false_dead or 'none'}",
    )


def check_writes(rec: Records, final: dict[int, tuple[str, dict[str, int]]], n: int,
                 converged_s: float | None, since_s: float, fig: Figures) -> Check:  # fmt: skip
    acked = {w[2]: w[3] for w in rec.writes if w[4]}
    fig.writes_tried = len(rec.writes)
    fig.writes_acked = len(acked)
    fig.writes_found = sum(
        1
        for k, v in acked.items()
        if len(final) == n and all(have.get(k) == v for _r, have in final.values())
    )
    roots = {root for root, _have in final.values()}
    fig.final_converged_s = None if converged_s is None else converged_s - since_s
    ok = (
        len(final) == n
        and fig.writes_found == fig.writes_acked
        and len(roots) == 1
        and fig.final_converged_s is not None
        and fig.final_converged_s <= CONVERGE_BOUND_S
    )
    missing = sorted(
        set(acked) - {k for k in acked if all(h.get(k) == acked[k] for _r, h in final.values())}
    )
    return Check(
        "writes",
        ok,
        f"{fig.writes_found}/{fig.writes_acked} acknowledged writes on all {len(final)}/{n} agents "
        f"({fig.writes_tried} tried); {len(roots)} distinct root hash(es); converged "
        f"{'never' if fig.final_converged_s is None else f'{fig.final_converged_s:.1f} s'} after "
        f"the last heal or write (bound {CONVERGE_BOUND_S:.0f} s)"
        + (f"; missing {missing[:10]}" if missing else ""),
    )


def check_membership(fig: Figures, whole_s: float | None) -> Check:
    fig.final_whole_s = whole_s
    ok = whole_s is not None and whole_s <= CONVERGE_BOUND_S
    return Check(
        "membership",
        ok,
        f"every agent saw all hosts alive {'never' if whole_s is None else f'{whole_s:.1f} s'} "
        f"after the last heal (bound {CONVERGE_BOUND_S:.0f} s)",
    )


def _q25(xs: list[int]) -> float:
    return statistics.quantiles(xs, n=4)[0] if len(xs) > 1 else float(xs[0])


def check_resources(sched: Schedule, rec: Records, warmup_s: float, fig: Figures) -> Check:
    series: dict[tuple[int, int], list[tuple[float, int, int]]] = {}
    for t, host, pid, rss, fds in rec.samples:
        series.setdefault((host, pid), []).append((t, rss, fds))
    bad = []
    for (host, pid), rows in sorted(series.items()):
        start = rows[0][0] + warmup_s
        after = [r for r in rows if r[0] >= start]
        span = after[-1][0] - after[0][0] if after else 0.0
        if len(after) < 8:
            continue
        judged = span >= MIN_JUDGED_S
        # First and second half of the lifetime after warm-up: RSS by the medians, open FDs by
        # the lower quartiles. The number of open descriptors follows the mesh's state: after a
        # pause or a partition it stays up by 8-25 (~30 when all is well) for about a minute,
        # until the pooled connections' idle expiry, and comes back (seen in the soaks); such a
        # transient can fill half of a half, but not three quarters of it, while a leak raises
        # the lower quartile as much as the rest. The medians of the FDs are reported too.
        h = len(after) // 2
        first, second = after[:h], after[h:]
        g_rss = statistics.median(r[1] for r in second) / statistics.median(r[1] for r in first) - 1
        g_fd = _q25([r[2] for r in second]) / _q25([r[2] for r in first]) - 1
        g_fd_median = (
            statistics.median(r[2] for r in second) / statistics.median(r[2] for r in first) - 1
        )
        fig.growth.append((host, pid, span, g_rss, g_fd, g_fd_median, judged))
        if judged and (g_rss > GROWTH_MAX or g_fd > GROWTH_MAX):
            bad.append(f"h{host} pid {pid}: RSS {g_rss:+.1%}, FDs {g_fd:+.1%}")
    js = [g for g in fig.growth if g[6]]
    too_short = sched.duration_s < warmup_s + MIN_JUDGED_S + 10.0
    return Check(
        "resources",
        (bool(js) or too_short) and not bad,
        ("run too short to judge; " if too_short else "")
        + f"{len(js)} agent lifetimes of {MIN_JUDGED_S:.0f} s or more after {warmup_s:.0f} s "
        f"warm-up judged; worst RSS {max((g[3] for g in js), default=0):+.1%}, worst FDs "
        f"{max((g[4] for g in js), default=0):+.1%} (<= {GROWTH_MAX:+.0%}); "
        f"{len(fig.growth) - len(js)} shorter ones reported, not judged"
        + (f"; over: {bad}" if bad else ""),
    )


def check_reads(rec: Records, fig: Figures) -> None:
    fig.reads = len(rec.reads)
    fig.reads_ok = sum(1 for r in rec.reads if r[2])


def admin_latency(sched: Schedule, rec: Records, fig: Figures) -> None:
    """How long the agents' admin API took to answer the observers (a stalled event loop shows
    here), leaving out an agent's own pause, kill and restart."""
    down = origin_down(sched, rec)
    times = []
    for t, host, took, answered in rec.admin:
        if any(h == host and a <= t <= b for h, a, b, _k in down):
            continue
        if answered:
            times.append(took)
        else:
            fig.admin_timeouts += 1
    if times:
        q = statistics.quantiles(times, n=100) if len(times) > 1 else [times[0]] * 99
        fig.admin_ms = (
            1000 * statistics.median(times),
            1000 * q[98],
            1000 * max(times),
            len(times),
        )
