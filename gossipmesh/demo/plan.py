"""What the demo builds and when it acts: nodes, instances, the sample config, the timeline.

Theory of operation
-------------------
Everything here is data computed from two numbers, ``--nodes`` and ``--duration``, so the rest of
the demo (processes, traffic, script, dashboard) only executes a plan and the plan can be tested
without starting anything.

Addresses. Node ``nK`` is agent K on ``127.0.0.(K+1)`` (by default) with the documented default
ports on its own address (gossip 7946 UDP+TCP, admin 7947, outbound 4140, inbound 4143) and its
instances on 8081 (web), 8082 (api), 8083 (db) of the same address. One loopback IP per node is what makes
fault injection work (an incoming TCP stream is matched on the host alone, see agent/faults.py)
and lets every node use the same ports, like real hosts.

Placement. The invariant is *no empty destination during any scripted failure*: the proxy does
not fall back from a weighted destination whose subset has no live endpoint, so a dead node that
held the only ``api`` v1 (or v2, or the only ``db``) would turn that share of traffic into 503s.
n1 holds the entry point and one of everything that must survive (web, db, api-v1); n2 holds a
second api-v1 and is the node that gets partitioned (3 nodes) and later killed; n3 holds api-v2.
Nodes 4+ add further instances in a cycle, and with 4+ nodes n4 (api-v1, db) is the partitioned
one, so the partition and the kill hit different nodes. The canary's v2 lives only on n3 (and n5,
n9, ...), which is never disturbed.

Timeline (fractions of ``--duration``, so the same story fits 20 s and 10 minutes): partition a
node away (both directions), write a config entity through it while it is cut off, and heal it
(the write must then reach everyone), shift the canary to 50/50 through a different agent than
the one that applied the first config, then SIGKILL n2 (an api-v1 host; its own apps die with
it, like a host crash). The partition comes before the kill because with 3 nodes the only node
whose loss leaves every destination non-empty is n2; after the kill only n1 and n3 are left, and
cutting them apart would empty a destination on one side or the other. Last, a scheduled shift
(schedule.py) takes the canary from 50 to 100 % v2 in steps over the rest of the run, written
once; every agent follows it on its own clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

MIN_NODES, MAX_NODES, DEFAULT_NODES = 3, 20, 5
MIN_DURATION_S, MAX_DURATION_S, DEFAULT_DURATION_S = 20.0, 3600.0, 60.0
GOSSIP_PORT, ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT = 7946, 7947, 4140, 4143
APP_PORTS = {"web": 8081, "api": 8082, "db": 8083}
PROFILE = "local"  # memberlist's DefaultLocalConfig timing: failures found in seconds
CLUSTER = "gossipmesh-demo"


# Node 1's address; node K is this plus K-1. Movable (GOSSIPMESH_DEMO_FIRST_IP) for machines where
# something else already uses the default ports on 127.0.0.2 and up.
FIRST_IP = "127.0.0.2"

# When each event fires, as a fraction of --duration (see the module docstring for the order).
# A 20 s run: partition at 1.2 s, write at 4.4 s, heal at 7.2 s (6 s cut off: enough to be
# declared dead), shift at 9.6 s, kill at 12 s (8 s left to detect it and show the failover),
# and at 15 s the scheduled shift to 100 % v2, whose steps fill the rest (schedule.py): late
# enough to leave the 50/50 split ~5 s (~250 canary requests) to be judged by.
AT_PARTITION, AT_CUT_OFF_WRITE, AT_HEAL, AT_SHIFT, AT_KILL = 0.06, 0.22, 0.36, 0.48, 0.60
AT_SCHEDULE = 0.75

CANARY_ROUTE = "route/api-canary"
CANARY_BEFORE = (90, 10)  # v1, v2 weights
CANARY_AFTER = (50, 50)
# Written through the partitioned node while it is cut off: after the heal, every agent must
# have it (the replicas converge). Policies are enforced at the destination's inbound, but this
# one allows web to call api, and api's default_policy is allow already: it changes nothing on
# the request path.
CUT_OFF_WRITE = ("policy/api-callers", {"action": "allow", "to": "api", "from": ["web"]})
SLOW_SHARE = 0.1  # share of driver requests that take the path-routed /slow (pinned to v1)
# A deny policy that bites: web's /admin calls api's /api/admin, which api's inbound refuses
# (403 naming the policy) whoever calls. ADMIN_SHARE of driver requests go there.
ADMIN_POLICY = "api-admin"
ADMIN_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class Instance:
    role: str  # web | api | db
    version: str  # "v1"/"v2" for api, "" otherwise
    node: str
    ip: str

    @property
    def port(self) -> int:
        return APP_PORTS[self.role]

    @property
    def name(self) -> str:
        """The instance name the app reports in its answers, e.g. ``n3-api-v2``."""
        return f"{self.node}-{self.role}" + (f"-{self.version}" if self.version else "")

    @property
    def label(self) -> str:
        return self.role + (f"-{self.version}" if self.version else "")


@dataclass(frozen=True, slots=True)
class Node:
    index: int  # 1-based
    ip: str
    instances: tuple[Instance, ...]

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def gossip(self) -> str:
        return f"{self.ip}:{GOSSIP_PORT}"

    @property
    def admin(self) -> str:
        return f"{self.ip}:{ADMIN_PORT}"

    @property
    def outbound(self) -> str:
        return f"{self.ip}:{OUTBOUND_PORT}"

    @property
    def inbound(self) -> str:
        return f"{self.ip}:{INBOUND_PORT}"

    def ports(self) -> list[tuple[str, int, str]]:
        """Every (ip, port, proto) this node will bind: checked before anything starts."""
        out = [(self.ip, GOSSIP_PORT, "udp"), (self.ip, GOSSIP_PORT, "tcp")]
        out += [(self.ip, p, "tcp") for p in (ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT)]
        out += [(self.ip, i.port, "tcp") for i in self.instances]
        return out

    def agent_toml(self) -> str:
        """The node's agent.toml: its instances, each with an HTTP health check."""
        lines = []
        for inst in self.instances:
            tags = f'["{inst.version}"]' if inst.version else "[]"
            lines += [
                "[[service]]",
                f'name = "{inst.role}"',
                f'address = "{inst.ip}"',
                f"port = {inst.port}",
                f"tags = {tags}",
                # Fast checks: a demo should show health flips within a second, not a minute.
                'check = { http = "/health", interval = "500ms", timeout = "400ms" }',
                "",
            ]
        return "\n".join(lines)


# Instances of nodes 4, 5, 6, 7, then again: spread the roles so every service gains replicas.
_EXTRA = (
    (("api", "v1"), ("db", "")),
    (("api", "v2"), ("web", "")),
    (("api", "v1"),),
    (("api", "v2"),),
)


def node_ips(n: int, first_ip: str = FIRST_IP) -> list[str]:
    """``n`` consecutive loopback addresses from ``first_ip`` (ValueError if any is not loopback)."""
    first = ipaddress.IPv4Address(first_ip)
    ips = [first + i for i in range(n)]
    if not all(ip.is_loopback for ip in ips) or first == ipaddress.IPv4Address("127.0.0.1"):
        raise ValueError(f"the nodes need {n} loopback addresses from {first_ip}, past 127.0.0.1")
    return [str(ip) for ip in ips]


def layout(n: int, first_ip: str = FIRST_IP) -> tuple[Node, ...]:
    if not MIN_NODES <= n <= MAX_NODES:
        raise ValueError(f"nodes must be {MIN_NODES}-{MAX_NODES}, not {n}")
    ips = node_ips(n, first_ip)
    roles: dict[int, tuple[tuple[str, str], ...]] = {
        1: (("web", ""), ("api", "v1"), ("db", "")),
        2: (("api", "v1"),),
        3: (("api", "v2"),),
    }
    for i in range(4, n + 1):
        roles[i] = _EXTRA[(i - 4) % len(_EXTRA)]
    nodes = []
    for i, ip in enumerate(ips, start=1):
        nodes.append(Node(i, ip, tuple(Instance(r, v, f"n{i}", ip) for r, v in roles[i])))
    return tuple(nodes)


@dataclass(frozen=True, slots=True)
class Plan:
    nodes: tuple[Node, ...]
    duration_s: float
    rate_per_s: float
    workers: int

    @property
    def entry(self) -> Node:
        """Where the traffic enters (web's node) and whose view the dashboard shows."""
        return self.nodes[0]

    @property
    def writer(self) -> Node:
        """The agent the first config is applied through."""
        return self.nodes[0]

    @property
    def shift_writer(self) -> Node:
        """A *different* agent for the canary shift: any agent accepts writes."""
        return self.nodes[2]

    @property
    def kill_target(self) -> Node:
        return self.nodes[1]

    @property
    def partition_target(self) -> Node:
        return self.nodes[1] if len(self.nodes) == 3 else self.nodes[3]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def make_plan(
    nodes: int,
    duration_s: float,
    rate_per_s: float = 60.0,
    workers: int = 8,
    first_ip: str = FIRST_IP,
) -> Plan:
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"duration must be {MIN_DURATION_S:g}-{MAX_DURATION_S:g} seconds, not {duration_s:g}"
        )
    plan = Plan(layout(nodes, first_ip), duration_s, rate_per_s, workers)
    _check_invariant(plan)
    return plan


def _check_invariant(plan: Plan) -> None:
    """Assert the placement rule of the module docstring for the two failures the script plays."""
    for gone in (plan.partition_target, plan.kill_target):
        left = [i for n in plan.nodes if n is not gone for i in n.instances]
        for need in (("web", ""), ("db", ""), ("api", "v1"), ("api", "v2")):
            assert any((i.role, i.version) == need for i in left), (gone.name, need)
    assert any(i.role == "web" for i in plan.entry.instances)


def canary_route(v1: int, v2: int) -> dict[str, Any]:
    return {
        "hosts": ["api"],
        "destinations": [
            {"service": "api", "weight": v1, "tags": ["v1"]},
            {"service": "api", "weight": v2, "tags": ["v2"]},
        ],
    }


def sample_config() -> dict[str, dict[str, Any]]:
    """The entities applied at start (one atomic ``POST /v1/config/apply``).

    Timeouts nest: each caller's per-try timeout outlasts its callee's whole request budget, so
    a retry happens at the hop that saw the failure, not twice over. ``on_status`` includes 500
    for api, whose answers are the app's own; connect failures are retried for every service
    (the default), which is what carries traffic across the killed node. ``policy/api-admin``
    denies ``/api/admin`` at api's inbound: a 403 is no retry status, so it reaches the driver.
    """
    detector = {"consecutive_failures": 3, "base_ejection_ms": 5000, "max_ejection_ms": 30000}
    return {
        "service/web": {
            "retry": {"attempts": 2, "on_status": [502, 503, 504]},
            "timeouts": {"connect_ms": 250, "per_try_ms": 4000, "request_ms": 9000},
        },
        "service/api": {
            "load_balancer": {"policy": "least_request"},
            "retry": {"attempts": 2, "on_status": [500, 502, 503, 504], "budget_percent": 50},
            "timeouts": {"connect_ms": 250, "per_try_ms": 1000, "request_ms": 3000},
            "outlier_detection": detector,
        },
        "service/db": {
            "retry": {"attempts": 2, "on_status": [502, 503, 504]},
            "timeouts": {"connect_ms": 250, "per_try_ms": 500, "request_ms": 1500},
            "outlier_detection": detector,
        },
        CANARY_ROUTE: canary_route(*CANARY_BEFORE),
        # A route by path: the slow endpoint stays on the stable version whatever the canary.
        "route/api-slow": {
            "hosts": ["api"],
            "path": {"prefix": "/api/slow"},
            "destinations": [{"service": "api", "tags": ["v1"]}],
        },
        f"policy/{ADMIN_POLICY}": {"action": "deny", "to": "api", "paths": ["/api/admin"]},
    }
