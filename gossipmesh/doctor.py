"""``gossipmesh doctor``: ask one agent's admin API what is wrong, and say what to do about it.

Each check is a pure function of the admin API's answers and returns one ``Finding``: ``ok``,
``problem`` (with ``advice``: the next thing an operator should do) or ``skipped`` (it could not
be checked, and why). ``diagnose`` asks the agent and runs them all; it imports no agent code.

| check         | reads                          | a problem when |
|---------------|--------------------------------|----------------|
| ``agent``     | GET /v1/self                   | the admin API does not answer (then nothing else runs) |
| ``members``   | GET /v1/members                | a member is dead or suspect |
| ``keys``      | GET /v1/keys, /v1/health       | members hold different keys or primaries, one did not answer, or messages failed to decrypt |
| ``clocks``    | GET /v1/keys, /v1/self         | a member's clock (or this host's) is off by more than ``CLOCK_SKEW_LIMIT_MS`` |
| ``descriptors`` | GET /v1/self ``limits``      | the open-files limit is below ``MIN_NOFILE`` with the proxy on, or 80 % is in use |
| ``ports``     | GET /v1/self ``listeners``     | a TCP listener peers or apps need does not accept a connection from here |
| ``certificate`` | GET /v1/self ``node_cert``   | the node certificate expired or expires within ``RENEW_WITHIN_DAYS`` |
| ``conflicts`` | GET /v1/config-conflicts       | config keys were written concurrently and nobody chose yet |

Clocks are measured, not trusted: each member answers the keys fan-out over the gossip port with
its wall clock, and the agent reports the offset from its own at the middle of the exchange, give
or take half the round trip (agent/keyops.py). This host's clock is compared with the agent's
``wall_ms`` the same way. Only an offset larger than the round trip's uncertainty plus the limit
counts. ``keys`` and ``clocks`` need the admin token (``GET /v1/keys`` is private).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gossipmesh.client import AdminClient, AdminError, ClientError
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

CLOCK_SKEW_LIMIT_MS = 1000  # logs stop lining up and certificate checks get close to their margin
MIN_NOFILE = 4096  # every proxied request holds two descriptors; 1024 is a busy sidecar's wall
FD_USE_LIMIT = 0.8
RENEW_WITHIN_DAYS = 14
DAY_MS = 86_400_000
CONNECT_TIMEOUT_S = 2.0
MAX_NAMED = 5


class Status(Enum):
    OK = "ok"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str
    advice: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "advice": self.advice,
        }


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def problem(check: str, detail: str, advice: str) -> Finding:
    return Finding(check, Status.PROBLEM, detail, advice)


def skipped(check: str, detail: str, advice: str = "") -> Finding:
    return Finding(check, Status.SKIPPED, detail, advice)


Connect = Callable[[Address], str | None]


def diagnose(
    client: AdminClient,
    *,
    clock_s: Callable[[], float] = time.time,
    connect: Connect | None = None,
    cli_version: str = "",
) -> list[Finding]:
    """Every check against the agent ``client`` talks to (see the module docstring)."""
    sent_ms = int(clock_s() * 1000)
    try:
        me = client.self_info()
    except ClientError as exc:
        return [problem("agent", str(exc), _unreachable_advice(exc))]
    rtt_ms = int(clock_s() * 1000) - sent_ms
    findings = [check_agent(me, cli_version)]
    members = _read(client.members)
    findings.append(
        check_members(members)
        if isinstance(members, list)
        else skipped("members", f"cannot read members: {members}")
    )
    keys = _read(client.keys)
    health = _read(client.health)
    findings.append(check_keys(keys, health))
    findings.append(check_clocks(keys, me, sent_ms, rtt_ms))
    findings.append(check_descriptors(me))
    findings.append(check_ports(me, client.loopback, connect or tcp_connect))
    findings.append(check_certificate(me, int(clock_s() * 1000)))
    findings.append(check_conflicts(_read(client.config_conflicts)))
    return findings


def _read(fn: Callable[[], Any]) -> Any:
    """The answer, or the ``ClientError`` that stood in its way (a check says what it means)."""
    try:
        return fn()
    except ClientError as exc:
        return exc


def _unreachable_advice(exc: ClientError) -> str:
    if isinstance(exc, AdminError) and exc.status == 401:
        return "give the agent's admin token: --token-file FILE or GOSSIPMESH_TOKEN"
    return (
        "start the agent (`gossipmesh agent`, or `systemctl start gossipmesh`), or point --agent "
        "at its admin address (the agent's --admin, default 127.0.0.1:7947)"
    )


def _named(names: list[str]) -> str:
    more = len(names) - MAX_NAMED
    return ", ".join(names[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")


def check_agent(me: dict[str, Any], cli_version: str) -> Finding:
    version = me.get("version") or "unknown"
    detail = (
        f"{me.get('name')} at {me.get('address')}, cluster {me.get('cluster')}, "
        f"gossipmesh {version}"
    )
    if cli_version and version != cli_version:
        detail += f" (this CLI is {cli_version})"
    return ok("agent", detail)


def check_members(members: list[dict[str, Any]]) -> Finding:
    by_state: dict[str, list[str]] = {}
    for m in members:
        by_state.setdefault(str(m.get("state")), []).append(str(m.get("name")))
    dead, suspect = sorted(by_state.get("dead", [])), sorted(by_state.get("suspect", []))
    counts = ", ".join(f"{n} {s}" for s, n in sorted((s, len(v)) for s, v in by_state.items()))
    if dead or suspect:
        parts = [
            f"dead: {_named(dead)}" if dead else "",
            f"suspect: {_named(suspect)}" if suspect else "",
        ]
        return problem(
            "members",
            "; ".join(p for p in parts if p) + f" ({counts})",
            "on each such host: is the agent running (`systemctl status gossipmesh`, "
            "`gossipmesh status`), can this host reach its gossip port over UDP and TCP, does it "
            "hold the cluster's key? A node removed for good is forgotten 24 h after it died",
        )
    return ok("members", counts or "no members")


def check_keys(keys: Any, health: Any) -> Finding:
    if isinstance(keys, AdminError) and keys.status == 401:
        return skipped(
            "keys",
            "GET /v1/keys needs the admin token",
            "run on the agent's host as its user (or root), or give --token-file FILE",
        )
    if isinstance(keys, ClientError) or not isinstance(keys, dict):
        return skipped("keys", f"cannot read keys: {keys}")
    nodes: dict[str, dict[str, Any]] = keys.get("nodes") or {}
    n = len(nodes)
    failed = sorted(name for name, node in nodes.items() if not node.get("ok"))
    primaries = {str(node.get("primary")) for node in nodes.values() if node.get("ok")}
    partial = sorted(k for k, count in (keys.get("keys") or {}).items() if count != n)
    decrypts = [
        r for r in (health.get("reasons") if isinstance(health, dict) else None) or []
        if "decrypt" in str(r)
    ]  # fmt: skip
    problems, advice = [], []
    if failed:
        problems.append(f"no answer from {_named(failed)}")
        advice.append("check those members (see `members` above)")
    if len(primaries) > 1:
        problems.append(f"{len(primaries)} different primary keys: {', '.join(sorted(primaries))}")
        advice.append("finish the rotation: `gossipmesh keys use KEY` (refused, naming them, "
                      "while some member lacks KEY)")  # fmt: skip
    elif partial:
        problems.append(f"key(s) {', '.join(partial)} held by only some of {n} nodes")
        advice.append("finish the rotation: `gossipmesh keys install KEY` everywhere, or "
                      "`keys remove` the old one")  # fmt: skip
    if decrypts:
        problems.extend(decrypts)
        advice.append("a host with another gossip key or cluster name is sending to this "
                      "agent: compare `gossipmesh keys id` of its key file with `keys list`")  # fmt: skip
    if problems:
        return problem("keys", "; ".join(problems), "; ".join(advice))
    primary = next(iter(primaries), "?")
    return ok("keys", f"{n} nodes, primary {primary}, {len(keys.get('keys') or {})} key(s) each")


def check_clocks(keys: Any, me: dict[str, Any], sent_ms: int, rtt_ms: int) -> Finding:
    off: list[str] = []
    worst = 0
    wall = me.get("wall_ms")
    if isinstance(wall, int):
        here = wall - (sent_ms + rtt_ms // 2)
        worst = max(worst, abs(here))
        if abs(here) - rtt_ms / 2 > CLOCK_SKEW_LIMIT_MS:
            off.append(f"this host is {-here:+d} ms from the agent")
    measured = 0
    if isinstance(keys, dict):
        for name, node in sorted((keys.get("nodes") or {}).items()):
            offset, rtt = node.get("clock_offset_ms"), node.get("rtt_ms")
            if not isinstance(offset, int) or not isinstance(rtt, int):
                continue
            measured += 1
            worst = max(worst, abs(offset))
            if abs(offset) - rtt / 2 > CLOCK_SKEW_LIMIT_MS:
                off.append(f"{name} {offset:+d} ms (±{rtt // 2})")
    if off:
        return problem(
            "clocks",
            f"clocks differ by more than {CLOCK_SKEW_LIMIT_MS} ms: {_named(off)}",
            "run NTP (chrony or systemd-timesyncd) on every host; `timedatectl` shows whether "
            "the clock is synchronised",
        )
    if not measured:
        why = "needs the admin token" if isinstance(keys, AdminError) else "no peer answered"
        return ok("clocks", f"this host and the agent agree within {CLOCK_SKEW_LIMIT_MS} ms "
                  f"(peers not measured: {why})")  # fmt: skip
    return ok("clocks", f"{measured} peer(s) within {CLOCK_SKEW_LIMIT_MS} ms (largest {worst} ms)")


def check_descriptors(me: dict[str, Any]) -> Finding:
    limits = me.get("limits")
    if not isinstance(limits, dict):
        return skipped("descriptors", "the agent does not report its limits (older version)")
    soft, used = limits.get("nofile_soft"), limits.get("open_fds")
    proxy = bool((me.get("listeners") or {}).get("outbound"))
    if soft is None:
        return ok("descriptors", f"no open-files limit, {used} open")
    advice = (
        "raise the limit: LimitNOFILE=65536 in the systemd unit (deploy/systemd), "
        "`ulimit -n 65536` in a shell, or the container runtime's nofile ulimit"
    )
    if isinstance(used, int) and used > FD_USE_LIMIT * soft:
        return problem("descriptors", f"{used} of {soft} descriptors open", advice)
    if proxy and soft < MIN_NOFILE:
        return problem(
            "descriptors",
            f"open-files limit {soft} is below {MIN_NOFILE}; the proxy holds two per request",
            advice,
        )
    return ok("descriptors", f"limit {soft}, {used if used is not None else '?'} open")


def check_ports(me: dict[str, Any], admin_is_local: bool, connect: Connect) -> Finding:
    listeners = me.get("listeners")
    if not isinstance(listeners, dict):
        return skipped("ports", "the agent does not report its listeners (older version)")
    try:
        advertised = Address.parse(str(me.get("address")))
    except UsageError:
        return skipped("ports", f"unusable advertised address {me.get('address')!r}")
    wanted = [("gossip TCP", str(advertised))]
    if listeners.get("inbound"):
        wanted.append(("inbound proxy", str(listeners["inbound"])))
    if admin_is_local and listeners.get("outbound"):
        wanted.append(("outbound proxy", str(listeners["outbound"])))
    closed, checked = [], []
    for what, text in wanted:
        try:
            address = Address.parse(text)
        except UsageError:
            continue
        if address.host in ("0.0.0.0", "::"):  # a wildcard listens everywhere: try the advertised
            address = Address(advertised.host, address.port)
        why = connect(address)
        checked.append(f"{what} {address}")
        if why is not None:
            closed.append(f"{what} {address} ({why})")
    if closed:
        return problem(
            "ports",
            f"not reachable from here: {', '.join(closed)}",
            "peers need the gossip port open for UDP and TCP and the inbound proxy port for TCP "
            "(docs/DEPLOY.md, 'Ports'); check the firewall and the agent's --bind/--inbound",
        )
    return ok("ports", "accepting: " + ", ".join(checked) + " (UDP is not probed)")


def check_certificate(me: dict[str, Any], now_ms: int) -> Finding:
    cert = me.get("node_cert")
    if not isinstance(cert, dict) or not isinstance(cert.get("not_after_ms"), int):
        return skipped("certificate", "the agent does not report its certificate (older version)")
    if cert.get("playground"):
        return ok("certificate", "loopback playground (self-issued; no security, one host only)")
    left_ms = int(cert["not_after_ms"]) - now_ms
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(cert["not_after_ms"]) / 1000))
    advice = (
        "issue a new one: `gossipmesh ca issue-node NAME --dir CA --out NODE_DIR --force`, copy "
        "it to the host, then `systemctl restart gossipmesh` (or send the agent SIGHUP)"
    )
    if left_ms <= 0:
        return problem("certificate", f"{cert.get('spiffe_id')} expired {when}", advice)
    if left_ms < RENEW_WITHIN_DAYS * DAY_MS:
        days = left_ms / DAY_MS
        return problem("certificate", f"{cert.get('spiffe_id')} expires in {days:.1f} days "
                       f"({when})", advice)  # fmt: skip
    return ok("certificate", f"{cert.get('spiffe_id')} valid until {when}")


def check_conflicts(conflicts: Any) -> Finding:
    if isinstance(conflicts, AdminError) and conflicts.status == 404:
        return skipped("conflicts", "this agent serves no config replica")
    if isinstance(conflicts, ClientError) or not isinstance(conflicts, dict):
        return skipped("conflicts", f"cannot read conflicts: {conflicts}")
    keys = sorted(str(c.get("key")) for c in conflicts.get("conflicts") or [])
    if keys:
        return problem(
            "conflicts",
            f"{len(keys)} config key(s) written concurrently: {_named(keys)}",
            "see `gossipmesh config conflicts`; a winner is already in effect everywhere; write "
            "the value you mean again (`gossipmesh config set`) to settle it",
        )
    return ok("conflicts", "no concurrent config writes")


def tcp_connect(address: Address, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``address`` opens, else the reason in a few words."""
    try:
        with socket.create_connection(address.as_tuple(), timeout=timeout_s):
            return None
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return (exc.strerror or type(exc).__name__).lower()


__all__ = [
    "CLOCK_SKEW_LIMIT_MS",
    "MIN_NOFILE",
    "RENEW_WITHIN_DAYS",
    "Finding",
    "Status",
    "check_agent",
    "check_certificate",
    "check_clocks",
    "check_conflicts",
    "check_descriptors",
    "check_keys",
    "check_members",
    "check_ports",
    "diagnose",
    "tcp_connect",
]
