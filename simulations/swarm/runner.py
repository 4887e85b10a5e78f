"""The swarm's runner: one plan against a warm cluster of real SWIM and config cores, judged.

Theory of operation
-------------------
``run_plan(plan)`` builds a cluster of ``plan.nodes`` hosts with signed membership and a config
replica on each (``config_core.ConfigAttachment``: the agent's ``ReplicaCore``, every write
signed by a simulated operator), warm-starts it (``harness.warm_start``: converged at t=0),
and schedules every fault of the plan ``T0_MS`` later, each as an engine event (so faults are
part of the trace and replay with the seed). How each kind is carried out:

- partitions: the named side(s) get their own network group, cut from the rest (both ways,
  or side -> rest only for one-way); a bridge host sits in a third group cut from nobody;
- crash / bounce / wipe: ``Cluster.crash``, and for the last two ``Cluster.boot`` after
  ``dur`` with or without the host's data (its incarnation, its config document and writer id);
- pause: ``Cluster.pause`` (every input waits until it wakes); slow: ``Cluster.set_slow``;
- loss / duplication: the network-wide rate is the largest of the bursts in force;
- skew: the host's config wall clock moves by ``value`` ms (the HLC's drift bound is 500 ms);
- join / leave: ``Cluster.add_node`` + ``boot`` through three random live hosts / ``leave``;
- write / delete: an operator's signed write through that host, if it is up (an acknowledged
  write is one its replica committed, as the agent answers after its fsync);
- captured: ``captured.Attacker`` (forgeries) plus ``replay.Replayer`` (genuine old packets).

When the last fault ends, everything heals at once (partitions, loss, duplication, slowness,
skew; attacks have stopped), and the run goes on for the settle window ``settle_bound_ms``; then
``invariants.judge`` checks the safety properties (which had to hold all along) and the
settled ones. If a settled property does not hold at the bound, the run continues to three
times the bound to tell "too slow" (it settles later; still a failure, the bound is the
promise) from "wrong" (it never does). If they all hold, the cluster keeps running for the
**hold window** (``hold_ms``, ``--hold-s``; ``HOLD_MS`` by default, 0 = off) and the settled
properties are checked every ``HOLD_EVERY_MS`` of it: settled must *stay* settled. A property
that breaks there fails the seed as **relapsed**, with the moment (after the heal) and the
detail (which member, at how many observers): a late push-pull that brings a long-gone member
back (swarm seeds 520 and 2404) does so whenever it comes, and came 23 s after the bound. The
safety properties are judged at the end, over the whole run, hold included. A core that
raises stops the run (``EventFailed``): the seed fails with the traceback.

Why ``HOLD_MS`` is 60 s: what can undo a settled cluster with no fault left is the periodic
work that carries old state, the push-pull (every 30 s per host up to 32 hosts, 60 s at 33-64:
``push_pull_scale_ms``) and the reconnect push-pull to members held dead (every 30 s). 60 s is
two reconnect rounds and two periodic push-pulls per host at the default suite's sizes (one
per host at 50, i.e. ~50 exchanges cluster-wide), for +37 % events a seed at 4-7 hosts and
+29 % at 50. It catches the seed-2404 relapse (bound 136 s, relapse 159 s after the heal); the
seed-520 one (469 s) only a hold of ~6 minutes would, more than a 10,000-seed run can pay.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.crdt import replication
from simulations.captured import Attacker
from simulations.cluster import Cluster
from simulations.config_core import (
    ConfigAttachment,
    ConfigLedger,
    ReplicaSettings,
    attachment_factory,
)
from simulations.engine import derive_rng
from simulations.harness import warm_start
from simulations.hosts import DOWN, UP, CoreFactory, default_core_factory
from simulations.network import PROFILE_LATENCY, Network
from simulations.scenarios import swim_config
from simulations.swarm.invariants import MemoryWatch, Verdict, judge, settled_now, wipe
from simulations.swarm.plan import PARTITIONS, Fault, FaultKind, SwarmPlan, format_plan
from simulations.swarm.replay import RecordingCore, Replayer

T0_MS = 1_000  # faults are timed from here (the warm start converged at 0)
MEMORY_EVERY_MS = 2_000
HOLD_MS = 60_000  # the hold window after the settle bound (see the module docstring)
HOLD_EVERY_MS = 2_000  # a settled-properties sample every this often through the hold
K = FaultKind


def settle_bound_ms(config: Any, n: int) -> int:
    """How long after the last heal every transient state must be over (stated in the report).

    SWIM: a lone suspicion at its Lifeguard maximum (β·α·max(1, log10 n)·T) plus 20 probe
    periods to spread the verdict, plus two reconnect rounds (a member held dead on both sides
    of a partition is found again by the reconnect push-pull, every ``reconnect_interval_ms``).
    Config: two of the longest anti-entropy periods (interval × size scale × 1.25 jitter) after
    that, so every pair of replicas has had its chance to sync since the views were whole.
    """
    scale = max(1.0, math.log10(max(1, n)))
    susp_max = config.suspicion_mult * scale * config.probe_interval_ms
    susp_max *= config.suspicion_max_timeout_mult
    swim = int(susp_max + 20 * config.probe_interval_ms + 2 * config.reconnect_interval_ms)
    sync = int(replication.sync_interval_ms(replication.DEFAULT_SYNC_INTERVAL_MS, n) * 1.25)
    return swim + 2 * sync


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one plan did: picklable, so ``--jobs`` workers can hand it back."""

    seed: int
    nodes: int
    plan: str
    failures: tuple[tuple[str, str], ...]
    error: str | None
    settle_bound_ms: int
    settled_ms: int | None  # after the heal: from then on every view whole, every doc equal
    hold_ms: int  # the hold window run past the bound (0: off, or failed at the bound)
    relapsed_ms: int | None  # after the heal: the first hold sample where it was not settled
    counts: tuple[tuple[str, int], ...]
    simulated_ms: int
    events: int
    wall_s: float
    trace: str  # the engine's trace hash: the same plan and seed give the same one
    tables: str = ""  # digest of every running core's member list at the end (``tables_digest``)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures


@dataclass(slots=True)
class _World:
    """What the fault actions share while a plan runs."""

    c: Cluster
    ledger: ConfigLedger
    memory: MemoryWatch
    loss: dict[int, float] = field(default_factory=dict)
    duplicate: dict[int, float] = field(default_factory=dict)
    skews: dict[int, tuple[int, int]] = field(default_factory=dict)  # host -> (base, skewed)
    bursts: int = 0  # loss and duplication bursts started (their keys in ``loss``/``duplicate``)
    done: dict[str, int] = field(default_factory=dict)  # fault kinds actually carried out


def build(plan: SwarmPlan, core_factory: CoreFactory | None = None) -> tuple[Cluster, ConfigLedger]:
    config = swim_config("lan")
    network = Network(derive_rng(plan.seed, "network"), PROFILE_LATENCY["lan"],
                      max_packet_bytes=config.packet_size_bytes)  # fmt: skip
    ledger = ConfigLedger()
    inner = core_factory or default_core_factory
    recorded: set[str] = set()  # the captured hosts' names, filled in once the hosts exist

    def factory(name: str, *args: Any) -> Any:
        core = inner(name, *args)
        return RecordingCore(core) if name in recorded else core

    c = Cluster(plan.seed, config, network, core_factory=factory,
                attachment_factory=attachment_factory(ledger, ReplicaSettings()),
                tcp_timeout_ms=config.push_pull_timeout_ms)  # fmt: skip
    for _ in range(plan.nodes):
        c.add_node()
    recorded.update(c.nodes[f.hosts[0]].name for f in plan.faults if f.kind is K.CAPTURED)
    return c, ledger


def run_plan(
    plan: SwarmPlan, core_factory: CoreFactory | None = None, hold_ms: int = HOLD_MS
) -> Outcome:
    """Run ``plan`` and judge it, holding ``hold_ms`` past the bound (see the module
    docstring)."""
    wall = time.perf_counter()
    c, ledger = build(plan, core_factory)
    bound = settle_bound_ms(c.config, plan.nodes)
    w = _World(c, ledger, MemoryWatch())
    verdict: Verdict | None = None
    settled: int | None = None
    relapsed: int | None = None
    held = 0  # the hold window actually run (none after a failure at the bound)
    error: str | None = None
    try:
        heal = _play(w, plan)
        settled = _settle(c, heal, heal + bound)
        verdict = judge(c, ledger, w.memory)
        if not verdict.settled_ok:  # too slow, or wrong? Look again at three times the bound.
            later = _settle(c, c.engine.now_ms, heal + 3 * bound, since=settled)
            after = None if later is None else later - heal
            verdict = verdict.classified(judge(c, ledger, w.memory), after, bound)
        elif hold_ms > 0:  # settled at the bound: does it stay so?
            held = hold_ms
            at = _hold(c, heal + bound, heal + bound + hold_ms)
            verdict = judge(c, ledger, w.memory)  # safety over the whole run, hold included
            if at is not None:
                relapsed = at - heal
                verdict = verdict.relapsed(relapsed, bound, None if settled is None
                                           else settled - heal)  # fmt: skip
    except Exception:
        error = traceback.format_exc()
    finally:
        gc.unfreeze()  # what warm_start froze becomes collectable again
    counts = dict(w.done)
    counts["forged_sent"] = sum(sum(getattr(a, "sent", {}).values()) if isinstance(a, Attacker)
                                else getattr(a, "sent", 0) for a in c.attackers)  # fmt: skip
    return Outcome(
        plan.seed, plan.nodes, format_plan(plan),
        verdict.failures if verdict is not None else (), error, bound,
        None if settled is None else settled - (T0_MS + max(plan.last_fault_ms, 1_000)),  # at the bound
        held, relapsed, tuple(sorted(counts.items())), c.engine.now_ms, c.engine.events_run,
        round(time.perf_counter() - wall, 3), c.engine.trace_hash(), tables_digest(c),
    )  # fmt: skip


def tables_digest(c: Cluster) -> str:
    """Every running core's members in its own order (name, incarnation, state, proof's accuser):
    with the trace hash, what shows that two builds ran a seed the same way."""
    h = hashlib.blake2b(digest_size=16)
    for node in c.nodes:
        if node.core is not None:
            for m in node.core.members():
                acc = m.proof.accuser if m.proof is not None else ""
                h.update(f"{node.idx} {m.name} {m.incarnation} {m.state.value} {acc}\n".encode())
    return h.hexdigest()


def play(plan: SwarmPlan, core_factory: CoreFactory | None = None) -> tuple[Cluster, int]:
    """Build ``plan``'s cluster and run it to the heal: (the cluster, the heal's time). For a
    test that looks at the cluster itself afterwards (``run_plan`` judges it)."""
    c, ledger = build(plan, core_factory)
    try:
        return c, _play(_World(c, ledger, MemoryWatch()), plan)
    finally:
        gc.unfreeze()  # what warm_start froze becomes collectable again


def _play(w: _World, plan: SwarmPlan) -> int:
    c = w.c
    warm_start(c)
    for f in plan.faults:
        c.at(T0_MS + f.at_ms, _start, w, f)
    heal = T0_MS + max(plan.last_fault_ms, 1_000)
    c.at(heal, _heal_everything, w)
    c.on_sample = lambda now: _sample(w, now)
    c.run_until(heal)
    return heal


def _settle(c: Cluster, start_ms: int, end_ms: int, since: int | None = None) -> int | None:
    """Run to ``end_ms`` a second at a time; the moment from which the cluster stayed settled."""
    t = start_ms
    while t < end_ms:
        t = min(end_ms, t + 1_000)
        c.run_until(t)
        since = (t if since is None else since) if settled_now(c) else None
    return since


def _hold(c: Cluster, start_ms: int, end_ms: int) -> int | None:
    """Run to ``end_ms``, a sample every ``HOLD_EVERY_MS``; the first one not settled, if any."""
    t = start_ms
    while t < end_ms:
        t = min(end_ms, t + HOLD_EVERY_MS)
        c.run_until(t)
        if not settled_now(c):
            return t
    return None


def _sample(w: _World, now: int) -> None:
    if now % MEMORY_EVERY_MS == 0:
        w.memory.check(w.c, now)


# ---- the fault actions -------------------------------------------------------------------------


def _start(w: _World, f: Fault) -> None:
    c = w.c
    kind = f.kind
    now = c.engine.now_ms
    end = now + f.dur_ms
    carried = True
    if kind in PARTITIONS:
        _partition(w, f)
        c.at(end, _unpartition, w, f)
    elif kind is K.CRASH:
        carried = _up(c, f.hosts[0])
        c.crash(f.hosts[0])
    elif kind in (K.BOUNCE, K.WIPE):
        carried = _up(c, f.hosts[0])
        if carried:
            c.crash(f.hosts[0])
            c.at(end, _restart, w, f.hosts[0], kind is K.BOUNCE)
    elif kind is K.PAUSE:
        c.pause(f.hosts[0], end)
    elif kind is K.SLOW:
        c.set_slow(f.hosts[0], f.value, f.value // 10)
        c.at(end, c.set_slow, f.hosts[0], 0, 0)
    elif kind in (K.LOSS, K.DUPLICATE):
        rates = w.loss if kind is K.LOSS else w.duplicate
        w.bursts += 1
        key = w.bursts
        rates[key] = f.value / 1000
        _rates(w)
        c.at(end, _burst_over, w, rates, key)
    elif kind is K.SKEW:
        carried = _skew(w, f.hosts[0], f.value)
        c.at(end, _unskew, w, f.hosts[0])
    elif kind is K.JOIN:
        for _ in range(f.value):
            new = c.add_node()
            c.boot(new.idx, c.random_seeds(3, exclude=new.idx))
    elif kind is K.LEAVE:
        carried = _up(c, f.hosts[0])
        c.leave(f.hosts[0])
    elif kind in (K.WRITE, K.DELETE):
        carried = _write(w, f)
    elif kind is K.CAPTURED:
        carried = _up(c, f.hosts[0])
        rng = derive_rng(c.seed, "captured", f.at_ms, f.hosts[0])
        attacker = Attacker(c, f.hosts[0], rng, until_ms=end)
        replayer = Replayer(c, f.hosts[0], rng, until_ms=end)
        c.attackers += [attacker, replayer]
        attacker.start(now)
        replayer.start(now + 150)
    if carried:
        w.done[kind.value] = w.done.get(kind.value, 0) + 1


def _up(c: Cluster, idx: int) -> bool:
    return c.nodes[idx].state == UP


def _partition(w: _World, f: Fault) -> None:
    net = w.c.network
    name = f"p{f.at_ms}"
    everyone = range(len(w.c.nodes))
    if f.kind is K.PARTITION_BRIDGE:
        bridge, side = f.hosts[0], set(f.hosts[1:])
        net.assign([bridge], name + "x")
    else:
        bridge, side = -1, set(f.hosts)
    net.assign([i for i in everyone if i in side], name + "a")
    net.assign([i for i in everyone if i not in side and i != bridge], name + "b")
    net.partition(name, name + "a", name + "b", symmetric=f.kind is not K.PARTITION_ONEWAY)


def _unpartition(w: _World, f: Fault) -> None:
    w.c.network.heal(f"p{f.at_ms}")


def _restart(w: _World, idx: int, with_data: bool) -> None:
    c = w.c
    if c.nodes[idx].state != DOWN:
        return
    if not with_data:
        wipe(w.ledger, idx)
    c.boot(idx, c.random_seeds(3, exclude=idx), with_data=with_data)


def _rates(w: _World) -> None:
    net = w.c.network
    net.loss = max(w.loss.values(), default=0.0)
    net.duplicate = max(w.duplicate.values(), default=0.0)


def _burst_over(w: _World, rates: dict[int, float], key: int) -> None:
    rates.pop(key, None)
    _rates(w)


def _skew(w: _World, idx: int, value: int) -> bool:
    att = w.c.nodes[idx].attachment
    if not isinstance(att, ConfigAttachment) or w.c.nodes[idx].state != UP:
        return False
    base = w.skews[idx][0] if idx in w.skews else att.skew_ms
    att.skew_ms = base + value
    w.skews[idx] = (base, att.skew_ms)
    return True


def _unskew(w: _World, idx: int) -> None:
    if idx not in w.skews:
        return
    base, skewed = w.skews.pop(idx)
    att = w.c.nodes[idx].attachment
    # A host wiped meanwhile has a new clock; one restarted with data kept the skewed one.
    if isinstance(att, ConfigAttachment) and att.skew_ms == skewed:
        att.skew_ms = base


def _write(w: _World, f: Fault) -> bool:
    c = w.c
    node = c.nodes[f.hosts[0]]
    att = node.attachment
    if node.state != UP or not isinstance(att, ConfigAttachment):
        return False
    key = f"service/k{f.value}"
    body: dict[str, Any] | None = None
    if f.kind is K.WRITE:
        policies = ("round_robin", "least_request", "ring_hash")
        body = {"protocol": "http",
                "load_balancer": {"policy": policies[(f.at_ms + f.hosts[0]) % 3]}}  # fmt: skip
    now = c.engine.now_ms
    delta = att.commit(node, [(key, body)])
    for e in delta.entries:
        w.ledger.watch((e.key, e.dot), now, node.idx, c.up_count)
    return True


def _heal_everything(w: _World) -> None:
    c = w.c
    c.network.heal_all()
    w.loss.clear()
    w.duplicate.clear()
    _rates(w)
    for node in c.nodes:
        c.set_slow(node.idx, 0, 0)
    for idx in list(w.skews):
        _unskew(w, idx)
