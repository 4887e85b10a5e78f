"""A swarm fault plan: frozen values that print as one command and parse back exactly.

Theory of operation
-------------------
A ``SwarmPlan`` is everything one swarm run does besides what the seed decides inside the
cores and the network: the cluster size and a tuple of ``Fault`` values, each a kind, a start
and a duration in milliseconds after the warm start, the hosts it touches (indices of the
initial hosts) and one integer parameter. The master seed still drives packet fates, latencies
and every core's rng, so ``(seed, plan)`` replays a run bit for bit.

A plan prints as one line of tokens, ``KIND@AT[+DUR][:H.H.H][=VALUE]`` (e.g.
``partition_half@4000+20000:0.3.5=0``, ``write@7000:2=4``), so the generator's plan, and the
shrinker's smaller one, are one command: ``python -m simulations swarm --seed S --nodes N
--plan '...'``. ``parse_plan(format_plan(p)) == p`` for every plan (a test holds us to it).

Hosts are named by index into the *initial* hosts only; hosts that join later are never a
fault's target (so dropping a join while shrinking renames nobody).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    """What a fault does (see ``runner.py`` for how each is carried out)."""

    PARTITION_HALF = "partition_half"  # hosts = one side (about half); the rest is the other
    PARTITION_MINORITY = "partition_minority"  # hosts = a minority side
    PARTITION_ONE = "partition_one"  # hosts = the one isolated host
    PARTITION_BRIDGE = "partition_bridge"  # hosts[0] hears both sides; hosts[1:] vs the rest
    PARTITION_ONEWAY = "partition_oneway"  # hosts -> rest is cut, rest -> hosts is not
    CRASH = "crash"  # kill -9, never restarted
    BOUNCE = "bounce"  # crash, restart with its data after dur
    WIPE = "wipe"  # crash, restart without data (a new disk) after dur
    PAUSE = "pause"  # process frozen for dur: every input and timer waits until it resumes
    SLOW = "slow"  # inbound packets lag value ms (±50 %), timers value/10, for dur
    LOSS = "loss"  # network-wide loss of value per mille, for dur
    DUPLICATE = "duplicate"  # network-wide duplication of value per mille, for dur
    SKEW = "skew"  # the host's wall clock off by value ms (HLC drift bound: 500 ms) for dur
    JOIN = "join"  # value new hosts join through random live seeds
    LEAVE = "leave"  # graceful leave
    WRITE = "write"  # an operator writes key ``service/k{value}`` through the host
    DELETE = "delete"  # an operator deletes key ``service/k{value}`` through the host
    CAPTURED = "captured"  # the host's key is stolen: forged and replayed messages for dur


PARTITIONS = frozenset(
    {
        FaultKind.PARTITION_HALF,
        FaultKind.PARTITION_MINORITY,
        FaultKind.PARTITION_ONE,
        FaultKind.PARTITION_BRIDGE,
        FaultKind.PARTITION_ONEWAY,
    }
)


@dataclass(frozen=True, slots=True, order=True)
class Fault:
    at_ms: int
    kind: FaultKind
    dur_ms: int = 0
    hosts: tuple[int, ...] = ()
    value: int = 0

    @property
    def end_ms(self) -> int:
        return self.at_ms + self.dur_ms

    def token(self) -> str:
        out = f"{self.kind.value}@{self.at_ms}"
        if self.dur_ms:
            out += f"+{self.dur_ms}"
        if self.hosts:
            out += ":" + ".".join(str(h) for h in self.hosts)
        if self.value:
            out += f"={self.value}"
        return out


@dataclass(frozen=True, slots=True)
class SwarmPlan:
    seed: int
    nodes: int
    faults: tuple[Fault, ...]

    @property
    def last_fault_ms(self) -> int:
        """When the last fault ends (``heal everything`` happens here)."""
        return max((f.end_ms for f in self.faults), default=0)

    def command(self, prog: str = "python -m simulations", hold_s: float | None = None) -> str:
        """The one command that replays this plan exactly (``hold_s``: a hold window other
        than the default, which the replay must have too)."""
        hold = "" if hold_s is None else f" --hold-s {hold_s:g}"
        return (f"{prog} swarm --seed {self.seed} --nodes {self.nodes}{hold} "
                f"--plan '{format_plan(self)}'")  # fmt: skip

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind.value] = out.get(f.kind.value, 0) + 1
        return out


_TOKEN = re.compile(r"^([a-z_]+)@(\d+)(?:\+(\d+))?(?::(\d+(?:\.\d+)*))?(?:=(-?\d+))?$")


def format_plan(plan: SwarmPlan) -> str:
    return " ".join(f.token() for f in plan.faults)


def parse_plan(seed: int, nodes: int, text: str) -> SwarmPlan:
    """The plan ``format_plan`` printed; ``ValueError`` naming the bad token otherwise."""
    faults: list[Fault] = []
    for tok in text.split():
        m = _TOKEN.match(tok)
        if m is None:
            raise ValueError(f"bad fault token {tok!r} (KIND@AT[+DUR][:H.H][=VALUE])")
        kind_s, at_s, dur_s, hosts_s, value_s = m.groups()
        try:
            kind = FaultKind(kind_s)
        except ValueError:
            raise ValueError(f"unknown fault kind {kind_s!r} in {tok!r}") from None
        hosts = tuple(int(h) for h in hosts_s.split(".")) if hosts_s else ()
        if any(h >= nodes for h in hosts):
            raise ValueError(f"{tok!r} names a host >= --nodes {nodes}")
        faults.append(Fault(int(at_s), kind, int(dur_s or 0), hosts, int(value_s or 0)))
    return SwarmPlan(seed, nodes, tuple(faults))
