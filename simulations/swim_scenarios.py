"""The SWIM scenarios: steady, crash, loss, slow-nodes, partition and churn.

Theory of operation
-------------------
Each body opens the same way (``_open``: the cluster the options describe, bootstrapped by
``harness.bootstrap``, with captured hosts installed when ``--captured`` asks), schedules its
faults on a ``FaultPlan`` from ``t0 + fault_at``, runs to the end of its settle window
(``harness.settle_ms``, or ``--settle``) and appends one ``RunResult`` per run
(``harness.finish``) to the ``ScenarioResult``:

- **steady**: no faults; reports the simulator's own speed, warm-up and steady phase apart.
- **crash**: ``--kill`` random hosts crash at once; detection times per victim.
- **loss**: a sweep: per rate, a fresh cluster whose network loses that fraction of packets for
  ``--duration`` seconds, with one crash a second in, so detection can be read against loss.
- **slow-nodes**: ``--slow`` CPU-starved hosts, Lifeguard on and then off with the same seed;
  false DEAD split by who was slow (the subject or the observer).
- **partition**: the cluster splits (``--split half`` or ``one``, optionally one-way and with
  flapping links) for ``--hold`` seconds; time from heal until every view is whole.
- **churn**: Poisson churn at ``--churn-rate``: joins, graceful leaves, crashes and restarts
  with or without data, never below half the cluster.

``FNS`` maps each name to its body; ``scenarios.run`` dispatches through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from simulations.cluster import Cluster
from simulations.engine import derive_rng
from simulations.faults import FaultPlan
from simulations.harness import bootstrap, build, finish, run_phase, settle_ms, split
from simulations.hosts import DOWN
from simulations.scenarios import Hooks, Options, ScenarioResult


def _open(
    opts: Options,
    hooks: Hooks,
    label: str,
    *,
    lifeguard: bool | None = None,
    loss: float | None = None,
) -> tuple[Cluster, FaultPlan, int]:
    """Every SWIM scenario's opening: the cluster (the options' Lifeguard and loss unless a sweep
    overrides them), its fault plan, and the virtual time at which the bootstrapped cluster is
    whole."""
    c = build(
        opts,
        hooks,
        lifeguard=opts.lifeguard if lifeguard is None else lifeguard,
        loss=opts.loss if loss is None else loss,
    )
    plan = FaultPlan(c)
    t0 = bootstrap(c, opts, hooks, label)
    if opts.captured:
        from simulations import captured

        start = t0 + int(opts.fault_at_s * 1000)
        rng = derive_rng(opts.seed, "captured")
        c.attackers = captured.install(
            c, opts.captured, rng, start, start + int(opts.attack_s * 1000)
        )
    return c, plan, t0


def _steady(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    wall = time.perf_counter()
    c, plan, t0 = _open(opts, hooks, "steady")
    warm_wall, warm_events = time.perf_counter() - wall, c.engine.events_run
    duration = int((opts.duration_s or 120.0) * 1000)
    run_phase(c, hooks, "steady", t0, t0 + duration)
    phase_wall = time.perf_counter() - wall - warm_wall
    phase_events = c.engine.events_run - warm_events
    speed = {
        "warmup_wall_s": round(warm_wall, 3),
        "steady_wall_s": round(phase_wall, 3),
        "steady_events": phase_events,
        "steady_events_per_s": round(phase_events / phase_wall) if phase_wall > 0 else None,
    }
    out.runs.append(
        finish(
            c,
            "steady",
            opts,
            plan,
            t0,
            time.perf_counter() - wall,
            speed,
            no_false_dead=opts.loss == 0 and opts.duplicate >= 0,
        )  # fmt: skip
    )


def _crash(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    wall = time.perf_counter()
    c, plan, t0 = _open(opts, hooks, "crash")
    at = t0 + int(opts.fault_at_s * 1000)
    victims = plan.pick(opts.kill)
    plan.crash(victims, at)
    end = max(at + settle_ms(c), t0 + int((opts.duration_s or 0) * 1000))
    run_phase(c, hooks, "crash", t0, end)
    out.runs.append(
        finish(
            c,
            "crash",
            opts,
            plan,
            t0,
            time.perf_counter() - wall,
            {"killed": len(victims)},
            no_false_dead=opts.loss == 0,
        )  # fmt: skip
    )


def _loss(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    for rate in opts.loss_rates:
        wall = time.perf_counter()
        label = f"loss={rate:g}"
        c, plan, t0 = _open(opts, hooks, label, loss=0.0)
        at = t0 + int(opts.fault_at_s * 1000)
        plan.loss(rate, at)
        # One crash under loss, so detection time can be read off against the loss rate.
        victims = plan.pick(max(1, min(opts.kill, opts.nodes // 10)))
        plan.crash(victims, at + 1000)
        lossy_ms = int((opts.duration_s or 60.0) * 1000)
        plan.loss(0.0, at + lossy_ms)
        end = at + lossy_ms + (int(opts.settle_s * 1000) if opts.settle_s else settle_ms(c))
        run_phase(c, hooks, label, t0, end)
        out.runs.append(
            finish(
                c,
                label,
                opts,
                plan,
                t0,
                time.perf_counter() - wall,
                {"loss": rate, "killed": len(victims)},
            )  # fmt: skip
        )


def _slow_nodes(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    k = opts.slow if opts.slow is not None else max(1, opts.nodes // 20)
    timer_lag = (
        opts.slow_timer_delay_ms
        if opts.slow_timer_delay_ms is not None
        else opts.slow_delay_ms // 10
    )
    for lifeguard in (True, False):
        wall = time.perf_counter()
        label = f"lifeguard={'on' if lifeguard else 'off'}"
        c, plan, t0 = _open(opts, hooks, label, lifeguard=lifeguard)
        at = t0 + int(opts.fault_at_s * 1000)
        slow_for = int((opts.duration_s or 60.0) * 1000)
        victims = plan.pick(k)
        plan.slow(victims, at, opts.slow_delay_ms, timer_lag, until_ms=at + slow_for)
        end = at + slow_for + (int(opts.settle_s * 1000) if opts.settle_s else settle_ms(c))
        run_phase(c, hooks, label, t0, end)
        slow_set = set(victims)
        fd = c.ledger.false_dead
        out.runs.append(
            finish(
                c,
                label,
                opts,
                plan,
                t0,
                time.perf_counter() - wall,
                {
                    "lifeguard": lifeguard,
                    "slow": k,
                    "slow_delay_ms": opts.slow_delay_ms,
                    "slow_timer_delay_ms": timer_lag,
                    "false_dead_of_slow": sum(1 for _, _, s in fd if s in slow_set),
                    "false_dead_of_healthy": sum(1 for _, _, s in fd if s not in slow_set),
                    "false_dead_by_slow": sum(1 for _, o, _ in fd if o in slow_set),
                },
            )
        )


def _partition(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    wall = time.perf_counter()
    c, plan, t0 = _open(opts, hooks, "partition")
    at = t0 + int(opts.fault_at_s * 1000)
    side_a, side_b, heal = split(c, plan, opts, at)
    for _ in range(opts.flaps):
        x, y = plan.pick(2)
        plan.flap(x, y, at, heal, 2_000)
    cfg = c.config
    settle = int(opts.settle_s * 1000) if opts.settle_s else (
        settle_ms(c) + 3 * cfg.reconnect_interval_ms)  # fmt: skip
    end = max(heal + settle, t0 + int((opts.duration_s or 0) * 1000))
    run_phase(c, hooks, "partition", t0, end)
    out.runs.append(
        finish(
            c,
            "partition",
            opts,
            plan,
            t0,
            time.perf_counter() - wall,
            {
                "split": f"{len(side_a)}/{len(side_b)}",
                "hold_s": opts.hold_s,
                "asymmetric": opts.asymmetric,
            },
            heal_ms=heal,
        )  # fmt: skip
    )


def _churn(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    """Poisson churn: each event is a join, a graceful leave, a crash, or a restart."""
    wall = time.perf_counter()
    c, plan, t0 = _open(opts, hooks, "churn")
    at = t0 + int(opts.fault_at_s * 1000)
    stop = at + int(opts.churn_s * 1000)
    rng = derive_rng(opts.seed, "churn")
    counts = {"join": 0, "leave": 0, "crash": 0, "restart-data": 0, "restart-fresh": 0}
    t = float(at)
    # Fault choice happens when the event fires (the set of live hosts changes as we go), so
    # the churn driver is itself an action; it draws from its own rng, so it replays.
    planned: list[tuple[int, str]] = []
    while opts.churn_rate > 0:
        t += rng.expovariate(opts.churn_rate) * 1000
        if t >= stop:
            break
        planned.append((int(t), rng.choice(("join", "leave", "crash", "restart-data",
                                            "restart-fresh"))))  # fmt: skip
    floor = max(3, opts.nodes // 2)  # never churn the cluster away

    def churn_event(kind: str) -> None:
        up = c.up_nodes()
        down = [n.idx for n in c.nodes if n.state == DOWN]
        if kind in ("leave", "crash") and len(up) > floor:
            victim = rng.choice(up)
            (c.leave if kind == "leave" else c.crash)(victim)
        elif kind.startswith("restart") and down:
            victim = rng.choice(down)
            c.boot(victim, c.random_seeds(3, exclude=victim), with_data=kind == "restart-data")
        elif kind == "join" or kind.startswith("restart"):
            kind = "join"
            new = c.add_node()
            c.boot(new.idx, c.random_seeds(3, exclude=new.idx))
        else:
            return
        counts[kind] += 1

    for when, kind in planned:
        c.at(when, churn_event, kind)
    plan.note(at, f"churn {opts.churn_rate:g}/s for {opts.churn_s:g}s ({len(planned)} events)")
    settle = int(opts.settle_s * 1000) if opts.settle_s else settle_ms(c) + 30_000
    end = max(stop + settle, t0 + int((opts.duration_s or 0) * 1000))
    run_phase(c, hooks, "churn", t0, end)
    out.runs.append(
        finish(
            c,
            "churn",
            opts,
            plan,
            t0,
            time.perf_counter() - wall,
            {
                "churn_events": dict(counts),
                "hosts_ever": len(c.nodes),
                "up_fraction": round(c.up_count / len(c.nodes), 3),
            },
        )  # fmt: skip
    )


FNS: dict[str, Callable[[Options, Hooks, ScenarioResult], None]] = {
    "steady": _steady,
    "crash": _crash,
    "loss": _loss,
    "slow-nodes": _slow_nodes,
    "partition": _partition,
    "churn": _churn,
}
