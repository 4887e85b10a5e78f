"""Scenarios: what a run is (``Options``), what it yields (``ScenarioResult``), and ``run``.

Theory of operation
-------------------
One ``Options`` value describes a run completely; ``Options.command()`` prints the command line
that reproduces it, which is what a failing checker shows. ``run(opts)`` validates it, names the
code that will run (``core_digest``: a digest of the SWIM core's code, comments and docstrings
left out), and hands it to the scenario's body: the SWIM scenarios in ``swim_scenarios.py``, the
config scenarios in ``config_scenarios.py``. Every body is built from the same frame
(``harness.py``: bootstrap, faults, settle, then the checkers).

A scenario returns a ``ScenarioResult`` of one or more ``RunResult``s (``loss`` is a sweep,
``slow-nodes`` runs Lifeguard on and off with the same seed), each with metrics, time series for
the plots, the fault log, the checks, the trace hash and the speed it ran at.

A core that raises has a bug (bad input is a counted drop, never an exception), so the run
stops where it is: ``run`` keeps the traceback in ``ScenarioResult.error`` (the engine names the
event and the virtual time) and the result fails with the same reproducing command.
"""

from __future__ import annotations

import dataclasses
import gc
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.swim.config import SwimConfig
from simulations.checkers import CheckResult
from simulations.hosts import AttachmentFactory, CoreFactory
from simulations.network import PROFILE_LATENCY

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
    # Both bodies' modules import this one: load them late.
    if opts.scenario in CONFIG_SCENARIOS:
        from simulations import config_scenarios

        fn = config_scenarios.FNS[opts.scenario]
    else:
        from simulations import swim_scenarios

        fn = swim_scenarios.FNS[opts.scenario]
    try:
        fn(opts, hooks, result)
    except Exception:
        # A core that raises has a bug (bad input is a counted drop, never an exception), and
        # so does a simulator that raises. Either way the world is half-updated: stop, and fail
        # with the traceback; the failure report adds the seed and the command to replay it.
        result.error = traceback.format_exc()
    finally:
        gc.unfreeze()  # what harness.warm_start froze becomes collectable again
    for r in result.runs:
        r.metrics["core_digest"] = digest
    return result
