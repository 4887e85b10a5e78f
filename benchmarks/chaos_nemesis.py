"""The chaos harness's nemesis: a schedule of faults drawn from one master seed, and how each is
started and healed.

The schedule is a pure function of (seed, hosts, duration): the same command replays the same
faults at the same offsets. Faults do not overlap (each one's effects are attributable); a shuffled
bag of every kind is drawn from so that each kind appears before any repeats. Between faults the
mesh gets a calm gap; the run starts with a warm-up and ends with a calm tail in which the checkers
watch the mesh converge. Independently, one sample app (the upstream of every request) is
SIGKILLed every ``UPSTREAM_KILL_EVERY_S`` and restarted a few seconds later.

Kinds:

| kind       | start                                         | heal |
|------------|-----------------------------------------------|------|
| isolate    | one host's bridge-side veth down               | link up |
| halves     | hosts split in two halves on separate bridges  | every port back on br0 |
| minority   | a minority (1..(N-1)/2) cut from the majority  | same |
| bridge     | two sides cut from each other, one host on both | same |
| kill       | SIGKILL an agent (keeps its data dir)          | restart |
| kill-wipe  | SIGKILL an agent and delete its data dir       | restart empty |
| pause      | SIGSTOP an agent                               | SIGCONT |
| clock      | one agent's wall clock jumps (libfaketime)     | back to +0 |
| loss       | one agent loses a share of its gossip datagrams (its fault injection) | none lost |
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("isolate", "halves", "minority", "bridge", "kill", "kill-wipe", "pause", "clock", "loss")
PARTITIONS = frozenset({"isolate", "halves", "minority", "bridge"})
UPSTREAM_KILL_EVERY_S = 30.0
UPSTREAM_DOWN_S = 5.0


@dataclass(frozen=True)
class Fault:
    kind: str
    start_s: float
    end_s: float
    hosts: tuple[int, ...]  # the host(s) acted on (1-based); for partitions, the first side
    other: tuple[int, ...] = ()  # partitions: the other side
    value: float = 0.0  # clock: offset in seconds; loss: share lost

    def describe(self) -> str:
        hosts = ",".join(f"h{i}" for i in self.hosts)
        other = ",".join(f"h{i}" for i in self.other)
        if self.kind == "bridge":
            return f"bridge h{self.hosts[0]} between [{','.join(f'h{i}' for i in self.hosts[1:])}] and [{other}]"
        if self.kind in ("halves", "minority"):
            return f"{self.kind} [{hosts}] vs [{other}]"
        if self.kind == "clock":
            return f"clock {hosts} {self.value:+.0f} s"
        if self.kind == "loss":
            return f"loss {hosts} {self.value:.0%}"
        return f"{self.kind} {hosts}"

    def separates(self, a: int, b: int) -> bool:
        """True if this fault keeps hosts ``a`` and ``b`` from hearing each other."""
        if self.kind == "isolate" or self.kind.startswith("kill") or self.kind == "pause":
            return a in self.hosts or b in self.hosts
        if self.kind in ("halves", "minority"):
            return (a in self.hosts) != (b in self.hosts)
        if self.kind == "bridge":
            side_a, side_b = set(self.hosts[1:]), set(self.other)
            return (a in side_a and b in side_b) or (a in side_b and b in side_a)
        return False


@dataclass(frozen=True)
class UpstreamKill:
    at_s: float
    host: int
    back_s: float


@dataclass(frozen=True)
class Schedule:
    seed: int
    hosts: int
    duration_s: float
    warmup_s: float
    calm_tail_s: float
    faults: tuple[Fault, ...]
    upstream_kills: tuple[UpstreamKill, ...]

    @property
    def last_heal_s(self) -> float:
        return max((f.end_s for f in self.faults), default=self.warmup_s)


def make_schedule(seed: int, hosts: int, duration_s: float) -> Schedule:
    # float(): `--duration 600` (a float) and run(duration_s=600) draw the same schedule.
    rng = random.Random(f"gossipmesh-chaos/{seed}/{hosts}/{float(duration_s)}")
    warmup_s = min(15.0, 0.1 * duration_s)
    calm_tail_s = max(15.0, min(60.0, 0.1 * duration_s))
    ids = list(range(1, hosts + 1))
    faults: list[Fault] = []
    bag: list[str] = []
    t = warmup_s
    while True:
        length = rng.uniform(6.0, 14.0)
        if t + length > duration_s - calm_tail_s:
            break
        if not bag:
            bag = list(KINDS)
            rng.shuffle(bag)
        kind = bag.pop()
        order = ids[:]
        rng.shuffle(order)
        fault: Fault
        if kind == "halves":
            half = hosts // 2
            fault = Fault(
                kind, t, t + length, tuple(sorted(order[:half])), tuple(sorted(order[half:]))
            )
        elif kind == "minority":
            k = rng.randint(1, max(1, (hosts - 1) // 2))
            fault = Fault(kind, t, t + length, tuple(sorted(order[:k])), tuple(sorted(order[k:])))
        elif kind == "bridge":
            x, rest = order[0], order[1:]
            cut = max(1, len(rest) // 2)
            fault = Fault(kind, t, t + length, (x, *sorted(rest[:cut])), tuple(sorted(rest[cut:])))
        elif kind == "clock":
            offset = rng.choice((-1, 1)) * rng.uniform(20.0, 90.0)
            fault = Fault(kind, t, t + length, (order[0],), (), round(offset))
        elif kind == "loss":
            fault = Fault(kind, t, t + length, (order[0],), (), round(rng.uniform(0.2, 0.4), 2))
        else:
            fault = Fault(kind, t, t + length, (order[0],))
        faults.append(fault)
        t += length + rng.uniform(5.0, 10.0)
    kills = []
    at = warmup_s + 5.0
    while at + UPSTREAM_DOWN_S < duration_s:
        kills.append(UpstreamKill(round(at, 3), rng.choice(ids), round(at + UPSTREAM_DOWN_S, 3)))
        at += UPSTREAM_KILL_EVERY_S
    return Schedule(seed, hosts, duration_s, warmup_s, calm_tail_s, tuple(faults), tuple(kills))
