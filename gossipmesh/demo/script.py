"""The timed events the demo plays, and how long the mesh takes to react to each.

Theory of operation
-------------------
One thread (``Script``) waits for each event's moment (a fraction of ``--duration``, see
plan.py), acts through the same doors an operator has (the admin API, and SIGKILL for a crash)
and announces it in the event log. Reacting is the mesh's business, so each event hands off to
its own *watcher* thread that polls the agents until the reaction is complete, records how long
it took, and announces that too. Watchers run concurrently with the next events, so a slow
reaction never shifts the timeline, and each stops at ``finish()``'s deadline, so none outlives
the demo.

Measurements (seconds, from the moment the action returned, polled every 50-100 ms, so each is
accurate to about one poll):

- partition: until some other agent lists the node suspect, and until all others list it dead;
- heal (faults cleared; nobody rejoins by hand, SWIM's reconnect round merges the views): until
  every running agent lists every running node alive (``heal_s``), and until every agent has the
  entity written through the cut-off node and all config digests (root hashes) are equal
  (``converged_s``);
- canary shift: from sending the write until every running agent's ``GET /v1/config`` returns
  the new route (``propagation_s``), and separately until the entry node has it (the observed split "after"
  counts from there);
- kill: until some other agent lists the node suspect, and until all others list it dead
  (``detection_s``);
- scheduled shift (schedule.py): nothing to wait for, it is written once and every agent follows
  its own clock; the summary judges the observed split step by step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gossipmesh.client import AdminClient, AdminError, AgentUnreachable
from gossipmesh.demo.orchestrator import Orchestrator
from gossipmesh.demo.plan import (
    AT_CUT_OFF_WRITE,
    AT_HEAL,
    AT_KILL,
    AT_PARTITION,
    AT_SCHEDULE,
    AT_SHIFT,
    CANARY_AFTER,
    CANARY_ROUTE,
    CUT_OFF_WRITE,
    Node,
    Plan,
    canary_route,
)
from gossipmesh.demo.schedule import SCHEDULE_TO, Schedule, plan_schedule

POLL_MEMBERS_S = 0.1
POLL_CONFIG_S = 0.05
MAX_EVENTS = 200  # the log is for people: keep the last ones


@dataclass(frozen=True, slots=True)
class Event:
    t_s: float
    text: str
    style: str  # rich style of the line: what kind of news it is


class EventLog:
    def __init__(self, clock: Callable[[], float], on_event: Callable[[Event], None]) -> None:
        self.clock = clock
        self.on_event = on_event
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, text: str, style: str = "") -> None:
        ev = Event(round(self.clock(), 2), text, style)
        with self._lock:
            self._events.append(ev)
            del self._events[:-MAX_EVENTS]
        self.on_event(ev)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class Script:
    def __init__(
        self, plan: Plan, orch: Orchestrator, clock: Callable[[], float], log: EventLog
    ) -> None:
        self.plan = plan
        self.orch = orch
        self.clock = clock  # seconds since traffic started
        self.log = log
        self.results: dict[str, dict[str, Any]] = {}
        self.partitioned: set[str] = set()
        self.killed: set[str] = set()
        self.schedule: Schedule | None = None  # set once the scheduled shift is written
        self._stop = threading.Event()
        self._healed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients = {n.name: orch.client(n, timeout_s=2.0) for n in plan.nodes}

    # ---- helpers ----------------------------------------------------------------------------

    def live(self) -> list[Node]:
        return [n for n in self.plan.nodes if n.name not in self.killed]

    def _admin(self, node: Node) -> AdminClient:
        return self._clients[node.name]

    def _members(self, node: Node) -> dict[str, str] | None:
        try:
            return {m["name"]: m["state"] for m in self._admin(node).members()}
        except (AgentUnreachable, AdminError, OSError, ValueError, KeyError, TypeError):
            return None

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=self._guard, args=(fn,), daemon=True, name=name)
        t.start()
        self._threads.append(t)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a watcher failing must not take the demo down; say so
            self.log.add(f"{fn.__name__} failed: {exc!r}", "red")

    def _sleep_until(self, t_s: float) -> bool:
        """Wait for the timeline's ``t_s``; False if the script was stopped first."""
        while not self._stop.is_set():
            left = t_s - self.clock()
            if left <= 0:
                return True
            self._stop.wait(min(left, 0.5))
        return False

    # ---- the timeline -----------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._timeline, "script")

    def _timeline(self) -> None:
        d = self.plan.duration_s
        for at, act in ((AT_PARTITION, self.partition), (AT_CUT_OFF_WRITE, self.cut_off_write),
                        (AT_HEAL, self.heal), (AT_SHIFT, self.shift),
                        (AT_KILL, self.kill), (AT_SCHEDULE, self.scheduled_shift)):  # fmt: skip
            if not self._sleep_until(at * d):
                return
            try:
                act()
            except Exception as exc:  # an agent refused or timed out: say so, play the rest
                self.log.add(f"{act.__name__} failed: {exc}", "red")

    def finish(self, grace_s: float) -> None:
        """Give pending watchers up to ``grace_s`` to complete their measurement, then stop all."""
        deadline = time.monotonic() + grace_s
        for t in list(self._threads):
            if t.name != "script":
                t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in list(self._threads):
            t.join(3)

    def stop(self) -> None:
        self._stop.set()

    # ---- partition and heal -----------------------------------------------------------------

    def partition(self) -> None:
        victim = self.plan.partition_target
        others = [n for n in self.live() if n is not victim]
        self._admin(victim).set_faults([o.gossip for o in others])
        for o in others:
            self._admin(o).set_faults([victim.gossip])
        at = self.clock()
        self.partitioned.add(victim.name)
        res = self.results["partition"] = {"node": victim.name, "at_s": _r(at),
                                           "suspect_after_s": None, "dead_after_s": None}  # fmt: skip
        services = ", ".join(i.label for i in victim.instances)
        self.log.add(f"PARTITION {victim.name} ({services}): fault injection drops its gossip to "
                     f"and from every other agent; its instances stay up", "bold magenta")  # fmt: skip

        def watch_partition() -> None:
            while not self._stop.is_set() and not self._healed.is_set():
                views = [self._members(o) for o in others]
                states = [v.get(victim.name) for v in views if v is not None]
                now = self.clock() - at
                if res["suspect_after_s"] is None and any(s in ("suspect", "dead") for s in states):
                    res["suspect_after_s"] = _r(now)
                    self.log.add(f"{victim.name} suspect (after {now:.1f} s)", "yellow")
                if states and len(states) == len(others) and all(s == "dead" for s in states):
                    res["dead_after_s"] = _r(now)
                    self.log.add(f"{victim.name} declared dead by every other agent "
                                 f"({now:.1f} s); routes avoid it", "red")  # fmt: skip
                    return
                self._stop.wait(POLL_MEMBERS_S)

        self._spawn(watch_partition, "watch-partition")

    def cut_off_write(self) -> None:
        """Write through the partitioned node: it accepts (durably), nobody else can see it yet."""
        victim = self.plan.partition_target
        key, body = CUT_OFF_WRITE
        self._admin(victim).config_put(key, body, self.orch.signer())
        self.results["partition"]["write_during_partition"] = key
        self.log.add(f"{victim.name}, cut off, accepts a config write ({key}); the others cannot "
                     "see it yet", "magenta")  # fmt: skip

    def heal(self) -> None:
        victim = self.plan.partition_target
        group = self.live()
        for n in group:
            self._admin(n).clear_faults()
        at = self.clock()
        self._healed.set()
        self.partitioned.discard(victim.name)
        # Nobody rejoins by hand: each side may hold the other dead, and SWIM's reconnect round
        # (every 5 s in the local profile, Serf-style) push-pulls with a dead member, which
        # merges the two views again; anti-entropy then brings the config across.
        res = self.results["heal"] = {"node": victim.name, "at_s": _r(at), "heal_s": None,
                                      "converged_s": None, "back_alive": False,
                                      "config_converged": False,
                                      "healed_by": "swim-reconnect"}  # fmt: skip
        self.log.add(f"HEAL {victim.name}: faults cleared on every agent; no rejoin by hand, "
                     "SWIM's reconnect round finds the other side", "bold magenta")  # fmt: skip
        key = CUT_OFF_WRITE[0]

        def watch_heal() -> None:
            while not self._stop.is_set():
                if victim.name in self.killed:
                    return  # the story moved on before it healed: report what we saw
                live = [n for n in group if n.name not in self.killed]
                want = {n.name for n in live}
                now = self.clock() - at
                if not res["back_alive"]:
                    views = [self._members(n) for n in live]
                    if all(v is not None and all(v.get(m) == "alive" for m in want)
                           for v in views):  # fmt: skip
                        res["back_alive"], res["heal_s"] = True, _r(now)
                        self.log.add(f"{victim.name} alive again on every agent ({now:.1f} s)",
                                     "green")  # fmt: skip
                if not res["config_converged"]:
                    hashes, has_key = set(), True
                    for n in live:
                        try:
                            view = self._admin(n).config()
                            hashes.add(view["root_hash"])
                            has_key = has_key and key in view["entities"]
                        except (AgentUnreachable, AdminError, OSError, KeyError, TypeError):
                            hashes.add(None)
                    if len(hashes) == 1 and None not in hashes and has_key:
                        res["config_converged"], res["converged_s"] = True, _r(now)
                        self.log.add(f"config converged: {key} on every agent, root hash "
                                     f"{next(iter(hashes))[:12]} everywhere ({now:.1f} s)",
                                     "green")  # fmt: skip
                if res["back_alive"] and res["config_converged"]:
                    return
                self._stop.wait(POLL_MEMBERS_S)

        self._spawn(watch_heal, "watch-heal")

    # ---- the canary shift -------------------------------------------------------------------

    def shift(self) -> None:
        writer = self.plan.shift_writer
        body = canary_route(*CANARY_AFTER)
        sent = self.clock()
        self._admin(writer).config_put(CANARY_ROUTE, body, self.orch.signer())
        at = self.clock()
        res = self.results["shift"] = {
            "key": CANARY_ROUTE, "written_via": writer.name, "first_written_via":
            self.plan.writer.name, "at_s": _r(at), "write_ms": _r((at - sent) * 1000),
            "weights": {"v1": CANARY_AFTER[0], "v2": CANARY_AFTER[1]},
            "propagation_s": None, "seen_at_entry_s": None, "seen_by": {},
            "seen_by_all": False,
        }  # fmt: skip
        self.log.add(f"CANARY SHIFT api v1/v2 -> {CANARY_AFTER[0]}/{CANARY_AFTER[1]}, written "
                     f"through {writer.name} (the first config went through "
                     f"{self.plan.writer.name})", "bold cyan")  # fmt: skip

        def watch_shift() -> None:
            seen: dict[str, float] = res["seen_by"]
            while not self._stop.is_set():
                now = self.clock() - sent  # from the operator's "enter", the write included
                live = self.live()
                for n in live:
                    if n.name in seen:
                        continue
                    try:
                        value = self._admin(n).config_get(CANARY_ROUTE)["value"]
                    except (AgentUnreachable, AdminError, OSError, KeyError, TypeError):
                        continue
                    if value == body:
                        seen[n.name] = _r(now)  # type: ignore[assignment]
                        if n is self.plan.entry:
                            res["seen_at_entry_s"] = _r(self.clock())
                if all(n.name in seen for n in live):
                    res["seen_by_all"] = True
                    res["propagation_s"] = _r(max(seen[n.name] for n in live))
                    self.log.add(f"canary 50/50 visible on all {len(live)} agents after "
                                 f"{res['propagation_s'] * 1000:.0f} ms (write included)", "cyan")  # fmt: skip
                    return
                self._stop.wait(POLL_CONFIG_S)

        self._spawn(watch_shift, "watch-shift")

    # ---- the kill ---------------------------------------------------------------------------

    def kill(self) -> None:
        victim = self.plan.kill_target
        before = [self._members(n) for n in self.live() if n is not victim]
        alive_before = all(v is not None and v.get(victim.name) == "alive" for v in before)
        pids = self.orch.kill_node(victim)
        at = self.clock()
        self.killed.add(victim.name)
        # Detection only means something if everyone held it alive when it died.
        res = self.results["kill"] = {"node": victim.name, "at_s": _r(at), "pids": pids,
                                      "alive_before": alive_before, "suspect_after_s": None,
                                      "detection_s": None, "detected": False}  # fmt: skip
        services = ", ".join(i.label for i in victim.instances)
        self.log.add(f"KILL {victim.name}: SIGKILL its agent and apps ({services}), like a host "
                     "losing power", "bold red")  # fmt: skip
        others = self.live()

        def watch_kill() -> None:
            while not self._stop.is_set():
                views = [self._members(o) for o in others]
                states = [v.get(victim.name) for v in views if v is not None]
                now = self.clock() - at
                if res["suspect_after_s"] is None and any(s in ("suspect", "dead") for s in states):
                    res["suspect_after_s"] = _r(now)
                    self.log.add(f"{victim.name} suspect (after {now:.1f} s)", "yellow")
                if states and len(states) == len(others) and all(s == "dead" for s in states):
                    res["detected"], res["detection_s"] = True, _r(now)
                    self.log.add(f"{victim.name} declared dead by all {len(others)} others: "
                                 f"detection time {now:.1f} s", "red")  # fmt: skip
                    return
                self._stop.wait(POLL_MEMBERS_S)

        self._spawn(watch_kill, "watch-kill")

    # ---- the scheduled shift ---------------------------------------------------------------

    def scheduled_shift(self) -> None:
        """Write the canary's schedule once; from here on every agent moves it by its own clock."""
        writer = self.plan.shift_writer
        sched = plan_schedule(self.clock(), int(time.time() * 1000), self.plan.duration_s)
        self._admin(writer).config_put(CANARY_ROUTE, sched.route(), self.orch.signer())
        self.results["scheduled_shift"] = {"key": CANARY_ROUTE, "written_via": writer.name,
                                           **sched.describe()}  # fmt: skip
        self.schedule = sched
        self.log.add(f"SCHEDULED SHIFT: v2 {CANARY_AFTER[1]} -> {SCHEDULE_TO[1]} % in "
                     f"{sched.steps} steps over {sched.end_s - sched.start_s:.1f} s, every agent "
                     f"follows its own clock (written once, through {writer.name})", "bold cyan")  # fmt: skip
