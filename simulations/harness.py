"""The frame every scenario is built in: build, bootstrap, run phases, finish with the checks.

Theory of operation
-------------------
Every scenario (``swim_scenarios.py``, ``config_scenarios.py``) has the same shape:

1. **Bootstrap.** By default a *warm start*: every host boots at t=0 and is handed, through the
   core's real join path (``join`` then ``handle_push_pull_reply``, the wire-encoded full state
   that a seed knowing everyone would answer with, encoded once), the whole membership. The
   cluster then begins as if it had been running for a while: every view whole, no join storm.
   A join storm is a bootstrap artefact, not steady-state behaviour, and at 1,000 nodes it cost
   ~90 s of wall time (999 ``alive`` rumours each decoded ~16k times) against ~12 s for 120 s of
   steady state. With ``--cold-start`` host 0 boots at t=0 and every other host boots at a
   random moment within ``join_spread`` and joins through up to three random hosts that are
   already up, the way a fleet comes up behind a config-management run. Either way the run
   continues until every live view is whole (the *warm-up*), capped at ``warmup_max``. ``t0``
   is the moment it converged; all scenario times below are relative to it, so a slow bootstrap
   never eats into the experiment.
2. **Faults** from ``t0 + fault_at``, per scenario, through a ``FaultPlan`` (written to the log).
3. **Settle.** Faults stop; the run continues long enough for the slowest legitimate process to
   finish (a lone suspicion at its Lifeguard maximum, a reconnect round: ``settle_ms``), then the
   checkers run.

``build`` makes the cluster the options describe, ``bootstrap`` does step 1, ``run_phase`` runs
the clock forward reporting progress, and ``finish`` turns the cluster at the end into a
``RunResult``: the metrics (detection times, message rates, drops, false positives), the time
series for the plots, the standard checks and the trace hash.
"""

from __future__ import annotations

import gc
import math
import statistics
from typing import Any

from simulations import checkers
from simulations.checkers import CheckResult
from simulations.cluster import Cluster
from simulations.engine import derive_rng
from simulations.faults import FaultPlan
from simulations.hosts import DOWN, SimNode
from simulations.network import PROFILE_LATENCY, Latency, Network
from simulations.scenarios import Hooks, Options, RunResult, swim_config


def build(opts: Options, hooks: Hooks, *, lifeguard: bool, loss: float) -> Cluster:
    """The cluster ``opts`` describe, with ``opts.nodes`` hosts added and none booted; Lifeguard
    and loss are given apart, so a sweep can override the options' own."""
    lat = PROFILE_LATENCY[opts.profile]
    if opts.latency_ms is not None or opts.jitter_ms is not None:
        lat = Latency(
            base_ms=lat.base_ms if opts.latency_ms is None else opts.latency_ms,
            jitter_ms=lat.jitter_ms if opts.jitter_ms is None else opts.jitter_ms,
            sigma=lat.sigma or 0.6,
        )
    config = swim_config(opts.profile, lifeguard)
    network = Network(
        derive_rng(opts.seed, "network"),
        lat,
        loss=loss,
        duplicate=opts.duplicate,
        max_packet_bytes=config.packet_size_bytes,
    )
    kwargs: dict[str, Any] = {}
    if hooks.core_factory is not None:
        kwargs["core_factory"] = hooks.core_factory
    cluster = Cluster(
        opts.seed,
        config,
        network,
        attachment_factory=hooks.attachment_factory,
        tcp_timeout_ms=config.push_pull_timeout_ms,
        **kwargs,
    )
    for _ in range(opts.nodes):
        cluster.add_node()
    return cluster


def bootstrap(c: Cluster, opts: Options, hooks: Hooks, label: str) -> int:
    """Boot everyone, run until every view is whole; return t0 (ms)."""
    if not opts.cold_start:
        # Then the same "every view whole" loop as a cold start; it passes after one step.
        warm_start(c)
    n = len(c.nodes)
    spread_ms = int(
        (opts.join_spread_s if opts.join_spread_s is not None else min(10.0, n * 0.005)) * 1000
    )
    if opts.cold_start:
        rng = derive_rng(opts.seed, "bootstrap")
        c.at(0, c.boot, 0, ())
        for i in range(1, n):
            c.at(1 + rng.randrange(max(1, spread_ms)), _join_random, c, i)
    else:
        spread_ms = 0
    cap_ms = int(opts.warmup_max_s * 1000)
    step = 1000
    while True:
        c.run_until(c.engine.now_ms + step)
        _progress(hooks, f"{label} warm-up", c.engine.now_ms, cap_ms)
        if c.engine.now_ms >= spread_ms and c.up_count == n and c.view_errors()[0] == 0:
            return c.engine.now_ms
        if c.engine.now_ms >= cap_ms:
            return c.engine.now_ms


def warm_start(c: Cluster) -> None:
    """Boot every host at once, already knowing every other one (see the module docstring, step 1).

    Each host gets the full membership through the core's own join path: ``join([seed])``
    registers the seed as a join exchange (its ``StartPushPull`` effect is dropped: we answer
    for the seed), then ``handle_push_pull_reply(seed, payload)`` merges the state exactly as a
    join reply is merged, quietly (a join reply is not re-gossiped). The payload is encoded once,
    from every host's own ``local_member()``, which is what a seed that knew everyone would send.
    Timers are then re-armed at random offsets (``SwimNode.start``), so probing is not in
    lockstep and push-pulls are spread over the interval scaled for the cluster's size.

    Host 0 does exactly that. Merging 10^4 signed records at each of 10^4 hosts cost ~7 us a
    record (~690 s of the 806 s a 120 s run at 10,000 hosts took), so the others, when they run
    the real core and nothing else listens to their member changes (no attachment), get the
    same outcome from host 0's core: ``SwimNode.answer_joins`` leaves each exactly as merging
    host 0's state through the join path would (tables, orders, random draws, counters, timer
    tokens), and host 0's state *is* the payload, record for record (checked below), verified
    once by host 0 through the join path against the trust store every host shares. The
    ledger then learns the views ``MemberChanged`` would have reported (``all_learned``).
    """
    from gossipmesh.swim.node import SwimNode
    from gossipmesh.swim.state_codec import PushPull, encode_push_pull

    assert c.engine.now_ms == 0 and all(n.core is None for n in c.nodes), "warm start is t=0 only"
    n = len(c.nodes)
    for i in range(n):
        c.boot(i, ())
    records = []
    for node in c.nodes:
        assert node.core is not None
        records.append(node.core.local_member())
    payload = encode_push_pull(PushPull(False, tuple(records)))
    # n^2 table entries appear here and live for the whole run. The cyclic GC would rescan them
    # in every full collection (hundreds during this loop at 5,000 hosts: 2x the wall time), so
    # pause it, then freeze what was built out of its reach; ``run`` unfreezes at the end.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # Host 0 can answer for the seed when every host runs the real core and nothing but
        # the ledger hears their member changes.
        answers = c.attachment_factory is None and all(type(x.core) is SwimNode for x in c.nodes)
        answered = False
        for node in c.nodes:
            core = node.core
            assert core is not None
            if not answered:
                _join_merge(c, node, payload)
            if answers and node.idx == 0:
                learned = core.members()
                if len(learned) == n and all(a is b for a, b in zip(learned, records, strict=True)):
                    assert isinstance(core, SwimNode)
                    core.answer_joins(
                        [x.core for x in c.nodes[1:] if isinstance(x.core, SwimNode)], 0
                    )
                    c.observed.all_learned(range(1, n), records)
                    answered = True
            # Re-arm the timers now that the host knows the cluster, as a long-running one
            # would have them: otherwise every host's first push-pull falls in the 30-60 s of a
            # lone boot, and at 10,000 hosts those 10,000 full-state exchanges took 947 s of a
            # 1,120 s steady run.
            c.apply(node, core.start(0))
    finally:
        gc.freeze()
        if gc_was_enabled:
            gc.enable()


def _join_merge(c: Cluster, node: SimNode, payload: bytes) -> None:
    """Host ``node`` merges ``payload`` through the core's join path (see ``warm_start``)."""
    from gossipmesh.swim.effects import SetTimer
    from gossipmesh.swim.timers import TimerKind

    assert node.core is not None
    n = len(c.nodes)
    seed = c.nodes[(node.idx + 1) % n].address
    node.core.join([seed], 0)  # effects dropped on purpose: the exchange is answered here
    effects = node.core.handle_push_pull_reply(seed, payload, 0)
    # The core merges a big state a chunk per turn, asking for a MERGE timer due at once for
    # the rest; fire them here, as a runtime would, before the timers are re-armed.
    while True:
        merge = [e for e in effects if type(e) is SetTimer
                 and getattr(e.timer, "kind", None) is TimerKind.MERGE]  # fmt: skip
        c.apply(node, [e for e in effects if not any(e is m for m in merge)])
        if not merge:
            break
        effects = node.core.handle_timer(merge[0].timer, 0)


def _join_random(c: Cluster, idx: int) -> None:
    c.boot(idx, c.random_seeds(3, exclude=idx))


def _progress(hooks: Hooks, label: str, done: int, total: int) -> None:
    if hooks.progress is not None:
        hooks.progress(label, done, total)


def run_phase(c: Cluster, hooks: Hooks, label: str, t0: int, end_ms: int) -> None:
    total = end_ms - t0
    while c.engine.now_ms < end_ms:
        c.run_until(min(end_ms, c.engine.now_ms + 1000))
        _progress(hooks, label, c.engine.now_ms - t0, total)


def settle_ms(c: Cluster) -> int:
    """Long enough for a lone suspicion at its Lifeguard maximum to expire and spread."""
    cfg = c.config
    n = max(1, c.up_count)
    scale = max(1.0, math.log10(n))
    susp_max = cfg.suspicion_mult * scale * cfg.probe_interval_ms * cfg.suspicion_max_timeout_mult
    return int(susp_max + 20 * cfg.probe_interval_ms)


def split(c: Cluster, plan: FaultPlan, opts: Options, at: int) -> tuple[list[int], list[int], int]:
    """Cut the live hosts in two as ``opts.split`` says ("half", or one host against the rest)
    from ``at`` for ``opts.hold_s``: (side a, side b, heal time). Draws from the plan's rng."""
    everyone = c.up_nodes()
    side_a = plan.pick(len(everyone) // 2) if opts.split == "half" else plan.pick(1)
    a_set = set(side_a)
    side_b = [i for i in everyone if i not in a_set]
    heal = at + int(opts.hold_s * 1000)
    plan.partition({"a": side_a, "b": side_b}, at, heal, symmetric=not opts.asymmetric)
    return side_a, side_b, heal


def _rejections(c: Cluster) -> dict[str, int]:
    """Membership claims refused by the hosts still running, by reason (signed membership)."""
    total: dict[str, int] = {}
    for node in c.nodes:
        stats = getattr(node.core, "stats", None) or {}
        for key, n in stats.items():
            if key.startswith("reject.") and n:
                total[key[7:]] = total.get(key[7:], 0) + n
    return dict(sorted(total.items()))


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p99": None, "max": None}
    v = sorted(values)
    return {
        "n": len(v),
        "mean": statistics.fmean(v),
        "p50": v[len(v) // 2],
        "p99": v[min(len(v) - 1, math.ceil(0.99 * len(v)) - 1)],
        "max": v[-1],
    }


def finish(
    c: Cluster,
    label: str,
    opts: Options,
    plan: FaultPlan,
    t0: int,
    wall_s: float,
    extra: dict[str, Any],
    *,
    no_false_dead: bool = False,
    heal_ms: int | None = None,
) -> RunResult:
    cfg = c.config
    period = cfg.probe_interval_ms
    end = c.engine.now_ms
    # Crash detection, per victim, in seconds after the crash.
    first_suspect, first_dead, all_dead = [], [], []
    for rec, node in zip(c.subjects, c.nodes, strict=True):
        if node.state == DOWN and rec.crashed_ms is not None:
            if rec.first_suspect_ms is not None:
                first_suspect.append((rec.first_suspect_ms - rec.crashed_ms) / 1000)
            if rec.first_dead_ms is not None:
                first_dead.append((rec.first_dead_ms - rec.crashed_ms) / 1000)
            if rec.all_dead_ms is not None:
                all_dead.append((rec.all_dead_ms - rec.crashed_ms) / 1000)
    per_s = c.sent_per_s
    t0_s, end_s = t0 // 1000, end // 1000
    window = range(t0_s, min(end_s, len(per_s)))
    msgs = sum(per_s[s] for s in window)
    node_s = sum(c.up_per_s[s] if s < len(c.up_per_s) else c.up_count for s in window)
    heal_to_whole = None
    if heal_ms is not None:
        for t, wrong, _susp, _up in c.samples:
            if t >= heal_ms and wrong == 0:
                heal_to_whole = (t - heal_ms) / 1000
                break
    st = c.network.stats
    events = c.engine.events_run
    metrics: dict[str, Any] = {
        "nodes": opts.nodes,
        "profile": opts.profile,
        "lifeguard": extra.pop("lifeguard", opts.lifeguard),
        "loss": extra.pop("loss", opts.loss),
        "probe_interval_s": period / 1000,
        "warmup_s": t0 / 1000,
        "simulated_s": end / 1000,
        "events": events,
        "wall_s": round(wall_s, 3),
        "events_per_s": round(events / wall_s) if wall_s > 0 else None,
        "packets_sent": st.sent,
        "bytes_sent": st.sent_bytes,
        "msgs_per_node_per_s": round(msgs / node_s, 3) if node_s else None,
        "msgs_per_node_per_period": round(msgs / node_s * period / 1000, 3) if node_s else None,
        "dropped": {
            "loss": st.dropped_loss,
            "partition": st.dropped_partition,
            "oversize": st.dropped_oversize,
            "host_down": st.dropped_down,
            "unroutable": st.dropped_unroutable,
        },
        "duplicated": st.duplicated,
        "push_pulls": st.streams,
        "push_pulls_failed": st.streams_failed,
        "false_dead": len(c.ledger.false_dead),
        "false_dead_subjects": len({s for _, _, s in c.ledger.false_dead}),
        "false_suspect": c.ledger.false_suspect,
        "membership_rejected": _rejections(c),
        "forged_sent": sum(sum(a.sent.values()) for a in c.attackers),
        "member_changes": c.ledger.changes,
        "first_suspect_s": _summary(first_suspect),
        "first_dead_s": _summary(first_dead),
        "all_dead_s": _summary(all_dead),
        "heal_to_whole_s": heal_to_whole,
        "up_at_end": c.up_count,
    }
    metrics.update(extra)
    series = {
        "samples": c.samples,  # (t_ms, wrong views, suspect views of up hosts, up)
        "sent_per_s": per_s,
        "up_per_s": c.up_per_s,
        "first_suspect_s": first_suspect,
        "first_dead_s": first_dead,
        "all_dead_s": all_dead,
        "t0_ms": t0,
        "heal_ms": heal_ms,
    }
    checks = checkers.standard(c, no_false_dead=no_false_dead)
    if heal_ms is not None and heal_to_whole is None:
        checks.append(CheckResult("convergence-after-heal", False, "views never whole after heal"))
    elif heal_ms is not None:
        checks.append(
            CheckResult("convergence-after-heal", True, f"whole {heal_to_whole:.1f}s after heal")
        )
    return RunResult(label, metrics, series, checks, plan.log, c.engine.trace_hash())
