"""Scenarios: a cluster, a fault timeline, the metrics that matter, and the checks.

Theory of operation
-------------------
Every scenario has the same shape:

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
   finish (a lone suspicion at its Lifeguard maximum, a reconnect round), then the checkers run.

One ``Options`` value describes a run completely; ``Options.command()`` prints the command line
that reproduces it, which is what a failing checker shows. A scenario returns a
``ScenarioResult`` of one or more ``RunResult``s (``loss`` is a sweep, ``slow-nodes`` runs
Lifeguard on and off with the same seed), each with metrics, time series for the plots, the
fault log, the checks, the trace hash and the speed it ran at.

A core that raises has a bug (bad input is a counted drop, never an exception), so the run
stops where it is: ``run`` keeps the traceback in ``ScenarioResult.error`` (the engine names the
event and the virtual time) and the result fails with the same reproducing command.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.swim.config import SwimConfig
from simulations import checkers
from simulations.checkers import CheckResult
from simulations.cluster import Cluster
from simulations.engine import derive_rng
from simulations.faults import FaultPlan
from simulations.hosts import DOWN, AttachmentFactory, CoreFactory
from simulations.network import PROFILE_LATENCY, Latency, Network

SWIM_SCENARIOS = ("steady", "crash", "loss", "slow-nodes", "partition", "churn")
CONFIG_SCENARIOS = ("config-spread", "partition-edit")  # simulations/config_scenarios.py
SCENARIOS = SWIM_SCENARIOS + CONFIG_SCENARIOS

# Options fields whose command-line flag drops the unit suffix.
FLAG_NAMES = {
    "duration_s": "duration",
    "join_spread_s": "join_spread",
    "warmup_max_s": "warmup_max",
    "fault_at_s": "fault_at",
    "settle_s": "settle",
    "hold_s": "hold",
    "churn_s": "churn_for",
    "attack_s": "attack_for",
}

ProgressFn = Callable[[str, int, int], None]  # (label, done_ms, total_ms)


@dataclass(slots=True)
class Options:
    scenario: str
    nodes: int = 100
    seed: int = 1
    duration_s: float | None = None  # after warm-up; per-scenario default
    loss: float = 0.0
    duplicate: float = 0.0
    profile: str = "lan"
    latency_ms: float | None = None
    jitter_ms: float | None = None
    lifeguard: bool = True
    join_spread_s: float | None = None
    warmup_max_s: float = 180.0
    fault_at_s: float = 5.0
    settle_s: float | None = None
    # crash
    kill: int = 3
    # loss
    loss_rates: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    # slow-nodes
    slow: int | None = None
    slow_delay_ms: int = 10_000
    slow_timer_delay_ms: int | None = None
    # partition
    split: str = "half"
    hold_s: float = 30.0
    asymmetric: bool = False
    # churn
    churn_rate: float = 0.5
    churn_s: float = 60.0
    flaps: int = 0
    # captured hosts forging membership from fault_at for attack_s (simulations/captured.py)
    captured: int = 0
    attack_s: float = 30.0
    # bootstrap: False = warm start (converged membership at t=0); True = the join storm
    cold_start: bool = False
    # config scenarios (simulations/config_scenarios.py)
    writes: int = 5
    eager_fanout: int = 3
    forward_fanout: int = 2
    sync_interval_ms: int = 3000
    anti_entropy: bool = True

    def validate(self) -> None:
        """Raise ValueError with one clear sentence on nonsense."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r} (one of {', '.join(SCENARIOS)})")
        if self.nodes < 3:
            raise ValueError(f"--nodes must be at least 3, got {self.nodes}")
        if self.nodes > 100_000:
            raise ValueError(f"--nodes must be at most 100000, got {self.nodes}")
        if self.profile not in PROFILE_LATENCY:
            raise ValueError(f"--profile must be lan, wan or local, got {self.profile!r}")
        for name, p in (("--loss", self.loss), ("--duplicate", self.duplicate)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if any(not 0.0 <= p < 1.0 for p in self.loss_rates):
            raise ValueError("--loss-rates must all be in [0, 1)")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration_s}")
        if self.scenario == "crash" and not 1 <= self.kill <= self.nodes - 2:
            raise ValueError(f"--kill must be in 1..{self.nodes - 2}, got {self.kill}")
        if self.slow is not None and not 1 <= self.slow <= self.nodes - 2:
            raise ValueError(f"--slow must be in 1..{self.nodes - 2}, got {self.slow}")
        if self.slow_delay_ms < 0:
            raise ValueError("--slow-delay-ms must be >= 0")
        if self.split not in ("half", "one"):
            raise ValueError(f"--split must be half or one, got {self.split!r}")
        if self.hold_s <= 0:
            raise ValueError("--hold must be positive")
        if not 0 <= self.captured <= self.nodes - 2:
            raise ValueError(f"--captured must be in 0..{self.nodes - 2}, got {self.captured}")
        if self.attack_s <= 0:
            raise ValueError("--attack-for must be positive")
        if self.churn_rate < 0:
            raise ValueError("--churn-rate must be >= 0")
        if self.latency_ms is not None and self.latency_ms < 0:
            raise ValueError("--latency-ms must be >= 0")
        if self.jitter_ms is not None and self.jitter_ms < 0:
            raise ValueError("--jitter-ms must be >= 0")
        if not 1 <= self.writes <= 1000:
            raise ValueError(f"--writes must be in 1..1000, got {self.writes}")
        for name, k in (("--eager-fanout", self.eager_fanout),
                        ("--forward-fanout", self.forward_fanout)):  # fmt: skip
            if not 0 <= k <= 64:
                raise ValueError(f"{name} must be in 0..64, got {k}")
        if not 100 <= self.sync_interval_ms <= 3_600_000:
            raise ValueError(f"--sync-interval-ms must be in 100..3600000, got "
                             f"{self.sync_interval_ms}")  # fmt: skip

    def command(self) -> str:
        """The command line that reproduces this run exactly."""
        parts = ["python -m simulations", self.scenario, f"--nodes {self.nodes}",
                 f"--seed {self.seed}"]  # fmt: skip
        default = Options(self.scenario)
        for f in dataclasses.fields(self):
            if f.name in ("scenario", "nodes", "seed"):
                continue
            value = getattr(self, f.name)
            if value == getattr(default, f.name):
                continue
            flag = "--" + FLAG_NAMES.get(f.name, f.name).replace("_", "-")
            if f.name == "lifeguard":
                parts.append("--no-lifeguard" if not value else "--lifeguard")
            elif f.name == "asymmetric":
                parts.append("--asymmetric")
            elif f.name == "cold_start":
                parts.append("--cold-start")
            elif f.name == "anti_entropy":
                parts.append("--no-anti-entropy")
            elif f.name == "loss_rates":
                parts.append("--loss-rates " + ",".join(f"{p:g}" for p in value))
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts)


def swim_config(profile: str, lifeguard: bool = True) -> SwimConfig:
    """The preset, with Lifeguard switched off by its knobs when asked.

    The core has no single Lifeguard switch, so "off" means: local health awareness pinned to
    1x (``awareness_max_multiplier=1``) and a fixed suspicion timeout (max = min,
    ``suspicion_max_timeout_mult=1``). Lifeguard's third part, the buddy system (telling a
    suspect in the ping itself), has no knob and stays on in both arms.
    """
    cfg = SwimConfig.preset(profile)
    if not lifeguard:
        names = {f.name for f in dataclasses.fields(cfg)}
        if "lifeguard" in names:  # if the core grows a switch, prefer it
            return cfg.replace(lifeguard=False)
        cfg = cfg.replace(awareness_max_multiplier=1, suspicion_max_timeout_mult=1)
    return cfg


@dataclass(slots=True)
class RunResult:
    label: str
    metrics: dict[str, Any]
    series: dict[str, Any]
    checks: list[CheckResult]
    faults: list[tuple[int, str]]
    trace_hash: str

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass(slots=True)
class ScenarioResult:
    options: Options
    runs: list[RunResult] = field(default_factory=list)
    # Set when the run stopped on an exception (a core raised: a bug, see ``run``): the
    # traceback, for the failure report. ``runs`` then holds only the runs finished before it.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.runs)


@dataclass(slots=True)
class Hooks:
    """Seams for tests and for later scenarios (a broken core, a CRDT attachment)."""

    core_factory: CoreFactory | None = None
    attachment_factory: AttachmentFactory | None = None
    progress: ProgressFn | None = None
    # Config scenarios: a ``config_core.ReplicaSettings`` used instead of the one built from the
    # options (knobs the command line does not offer, e.g. the gossip packet budget).
    replica: Any = None


# -- building blocks ------------------------------------------------------------------------


def _build(opts: Options, hooks: Hooks, *, lifeguard: bool, loss: float) -> Cluster:
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


def _bootstrap(c: Cluster, opts: Options, hooks: Hooks, label: str) -> int:
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
    c = _build(
        opts,
        hooks,
        lifeguard=opts.lifeguard if lifeguard is None else lifeguard,
        loss=opts.loss if loss is None else loss,
    )
    plan = FaultPlan(c)
    t0 = _bootstrap(c, opts, hooks, label)
    if opts.captured:
        from simulations import captured

        start = t0 + int(opts.fault_at_s * 1000)
        rng = derive_rng(opts.seed, "captured")
        c.attackers = captured.install(
            c, opts.captured, rng, start, start + int(opts.attack_s * 1000)
        )
    return c, plan, t0


def warm_start(c: Cluster) -> None:
    """Boot every host at once, already knowing every other one (see the module docstring).

    Each host gets the full membership through the core's own join path: ``join([seed])``
    registers the seed as a join exchange (its ``StartPushPull`` effect is dropped: we answer
    for the seed), then ``handle_push_pull_reply(seed, payload)`` merges the state exactly as a
    join reply is merged, quietly (a join reply is not re-gossiped). The payload is encoded once,
    from every host's own ``local_member()``, which is what a seed that knew everyone would send.
    Timers are then re-armed at random offsets (``SwimNode.start``), so probing is not in
    lockstep and push-pulls are spread over the interval scaled for the cluster's size.
    """
    from gossipmesh.swim.effects import SetTimer
    from gossipmesh.swim.state_codec import PushPull, encode_push_pull
    from gossipmesh.swim.timers import TimerKind

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
        for node in c.nodes:
            assert node.core is not None
            seed = c.nodes[(node.idx + 1) % n].address
            node.core.join([seed], 0)  # effects dropped on purpose: the exchange is answered here
            effects = node.core.handle_push_pull_reply(seed, payload, 0)
            # The core merges a big state a chunk per turn, asking for a MERGE timer due at
            # once for the rest; fire them here, as a runtime would, before the timers below.
            while True:
                merge = [e for e in effects if type(e) is SetTimer
                         and getattr(e.timer, "kind", None) is TimerKind.MERGE]  # fmt: skip
                c.apply(node, [e for e in effects if not any(e is m for m in merge)])
                if not merge:
                    break
                effects = node.core.handle_timer(merge[0].timer, 0)
            # Re-arm the timers now that the host knows the cluster, as a long-running one
            # would have them: otherwise every host's first push-pull falls in the 30-60 s of a
            # lone boot, and at 10,000 hosts those 10,000 full-state exchanges took 947 s of a
            # 1,120 s steady run.
            c.apply(node, node.core.start(0))
    finally:
        gc.freeze()
        if gc_was_enabled:
            gc.enable()


def _join_random(c: Cluster, idx: int) -> None:
    c.boot(idx, c.random_seeds(3, exclude=idx))


def _progress(hooks: Hooks, label: str, done: int, total: int) -> None:
    if hooks.progress is not None:
        hooks.progress(label, done, total)


def _run_phase(c: Cluster, hooks: Hooks, label: str, t0: int, end_ms: int) -> None:
    total = end_ms - t0
    while c.engine.now_ms < end_ms:
        c.run_until(min(end_ms, c.engine.now_ms + 1000))
        _progress(hooks, label, c.engine.now_ms - t0, total)


def _settle_ms(c: Cluster) -> int:
    """Long enough for a lone suspicion at its Lifeguard maximum to expire and spread."""
    cfg = c.config
    n = max(1, c.up_count)
    scale = max(1.0, math.log10(n))
    susp_max = cfg.suspicion_mult * scale * cfg.probe_interval_ms * cfg.suspicion_max_timeout_mult
    return int(susp_max + 20 * cfg.probe_interval_ms)


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


def _finish(
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


# -- the scenarios --------------------------------------------------------------------------


def code_digest(source: str) -> str:
    """The code of one Python module without its comments and docstrings, as a stable text.

    Comments never reach the AST; every bare string statement of a body (the docstrings of the
    module, classes and functions, and attribute docstrings) is dropped from it; line and column
    numbers are not dumped. So a result's digest moves when the code that ran changes, and a
    comment or docstring fix leaves it alone (a digest over the raw source once made a wrong
    docstring stay wrong on purpose). ``ast.dump``'s format may change between Python versions:
    compare digests made by the same one.
    """
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        kept = [
            stmt
            for stmt in body
            if not (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            )
        ]
        if len(kept) != len(body):
            node.body = kept or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def core_digest() -> str:
    """Short digest of the SWIM core's code as loaded, so a result names the code it ran.

    The core evolves under our feet (others commit to it); a result without this would not be
    reproducible from its seed alone. Only the code counts (``code_digest``), module by module.
    """
    import hashlib
    import sys

    h = hashlib.blake2b(digest_size=6)
    for name in sorted(sys.modules):
        if name.startswith("gossipmesh.swim") or name == "gossipmesh.wire":
            path = getattr(sys.modules[name], "__file__", None)
            if path:
                with open(path, encoding="utf-8") as fh:
                    h.update(f"{name}\n{code_digest(fh.read())}\n".encode())
    return h.hexdigest()


def run(opts: Options, hooks: Hooks | None = None) -> ScenarioResult:
    opts.validate()
    import gossipmesh.swim.node  # noqa: F401  (load the core before fingerprinting it)

    digest = core_digest()
    hooks = hooks or Hooks()
    result = ScenarioResult(opts)
    fn: Callable[[Options, Hooks, ScenarioResult], None]
    if opts.scenario in CONFIG_SCENARIOS:
        from simulations import config_scenarios  # imports this module: load it late

        fn = config_scenarios.FNS[opts.scenario]
    else:
        fn = _SCENARIO_FNS[opts.scenario]
    try:
        fn(opts, hooks, result)
    except Exception:
        # A core that raises has a bug (bad input is a counted drop, never an exception), and
        # so does a simulator that raises. Either way the world is half-updated: stop, and fail
        # with the traceback; the failure report adds the seed and the command to replay it.
        result.error = traceback.format_exc()
    finally:
        gc.unfreeze()  # what warm_start froze becomes collectable again
    for r in result.runs:
        r.metrics["core_digest"] = digest
    return result


def _steady(opts: Options, hooks: Hooks, out: ScenarioResult) -> None:
    wall = time.perf_counter()
    c, plan, t0 = _open(opts, hooks, "steady")
    warm_wall, warm_events = time.perf_counter() - wall, c.engine.events_run
    duration = int((opts.duration_s or 120.0) * 1000)
    _run_phase(c, hooks, "steady", t0, t0 + duration)
    phase_wall = time.perf_counter() - wall - warm_wall
    phase_events = c.engine.events_run - warm_events
    speed = {
        "warmup_wall_s": round(warm_wall, 3),
        "steady_wall_s": round(phase_wall, 3),
        "steady_events": phase_events,
        "steady_events_per_s": round(phase_events / phase_wall) if phase_wall > 0 else None,
    }
    out.runs.append(
        _finish(
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
    end = max(at + _settle_ms(c), t0 + int((opts.duration_s or 0) * 1000))
    _run_phase(c, hooks, "crash", t0, end)
    out.runs.append(
        _finish(
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
        end = at + lossy_ms + (int(opts.settle_s * 1000) if opts.settle_s else _settle_ms(c))
        _run_phase(c, hooks, label, t0, end)
        out.runs.append(
            _finish(
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
        end = at + slow_for + (int(opts.settle_s * 1000) if opts.settle_s else _settle_ms(c))
        _run_phase(c, hooks, label, t0, end)
        slow_set = set(victims)
        fd = c.ledger.false_dead
        out.runs.append(
            _finish(
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
    everyone = c.up_nodes()
    side_a = plan.pick(len(everyone) // 2) if opts.split == "half" else plan.pick(1)
    a_set = set(side_a)
    side_b = [i for i in everyone if i not in a_set]
    heal = at + int(opts.hold_s * 1000)
    plan.partition({"a": side_a, "b": side_b}, at, heal, symmetric=not opts.asymmetric)
    for _ in range(opts.flaps):
        x, y = plan.pick(2)
        plan.flap(x, y, at, heal, 2_000)
    cfg = c.config
    settle = int(opts.settle_s * 1000) if opts.settle_s else (
        _settle_ms(c) + 3 * cfg.reconnect_interval_ms)  # fmt: skip
    end = max(heal + settle, t0 + int((opts.duration_s or 0) * 1000))
    _run_phase(c, hooks, "partition", t0, end)
    out.runs.append(
        _finish(
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
    plan._note(at, f"churn {opts.churn_rate:g}/s for {opts.churn_s:g}s ({len(planned)} events)")
    settle = int(opts.settle_s * 1000) if opts.settle_s else _settle_ms(c) + 30_000
    end = max(stop + settle, t0 + int((opts.duration_s or 0) * 1000))
    _run_phase(c, hooks, "churn", t0, end)
    out.runs.append(
        _finish(
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


_SCENARIO_FNS: dict[str, Callable[[Options, Hooks, ScenarioResult], None]] = {
    "steady": _steady,
    "crash": _crash,
    "loss": _loss,
    "slow-nodes": _slow_nodes,
    "partition": _partition,
    "churn": _churn,
}
