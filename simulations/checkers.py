"""Checkers: the properties every run must have, judged against ground truth.

Theory of operation
-------------------
The cluster keeps two books: the *truth* (which hosts are up, crashed or gone) and the *ledger*
(what every live observer believes, built from the cores' own ``MemberChanged`` effects). A checker
compares them at the end of a run, after the faults have stopped and a settle window has passed.

- **completeness**: every crashed (and not restarted) or departed host is seen dead/left, or has
  been forgotten, by every live observer. SWIM's first promise.
- **accuracy**: no live host is seen suspect or dead by any live observer, once faults end. SWIM
  cannot promise zero false positives under faults, but it must *heal* them: a live member that
  stays dead is a bug (a missing refutation, a lost incarnation). Scenarios without faults also
  require ``false_dead == 0`` outright.
- **convergence**: every live observer's view is whole: alive for live hosts, not alive for the
  rest. After a partition heals this is the property that matters.
- **monotone incarnations**: no observer ever accepts a lower incarnation for a subject it already
  knows, and no host's own incarnation goes backwards across restarts with data.
- **ledger agrees with the core**: for a sample of observers, the state the core reports through
  ``member(name)`` is the state its effects told us. A mismatch means the core changed state
  without saying so (a missing ``MemberChanged``), which would starve the catalog.
- **packet limit**: no datagram exceeded the configured packet size.
- **forgeries refused** (signed membership, DESIGN-11 D3): no observer ever believed a subject
  at an incarnation above what the subject itself signed + 1, at an address that is not its own,
  as having left when it never did, or a member that does not exist. An honest run cannot
  produce any of these; a captured host (``captured.py``) tries all of them.

A failed check says what it saw (with a few examples); the CLI turns it into a non-zero exit plus
the seed and the command that reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulations.cluster import Cluster
from simulations.hosts import DOWN, LEFT, UP
from simulations.views import NO_VIEW, STATE_CODE, V_ALIVE, V_DEAD, V_LEFT, V_SUSPECT

_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def completeness(c: Cluster) -> CheckResult:
    bad: list[str] = []
    for s, node in enumerate(c.nodes):
        if node.state in (DOWN, LEFT):
            lingering = c.n_view[V_ALIVE][s] + c.n_view[V_SUSPECT][s]
            if lingering:
                bad.append(f"{node.name} still alive/suspect at {lingering} observers")
    gone = sum(1 for n in c.nodes if n.state in (DOWN, LEFT))
    if bad:
        return CheckResult("completeness", False, _join(bad))
    return CheckResult("completeness", True, f"{gone} failed/departed hosts seen gone by all")


def accuracy(c: Cluster, require_no_false_dead: bool = False) -> CheckResult:
    bad: list[str] = []
    observers = c.up_count
    for s, node in enumerate(c.nodes):
        if node.state != UP:
            continue
        # Only suspect/dead/left count here: a host that boots late and is not known everywhere
        # yet is a convergence question, not an accuracy one.
        wrong = c.n_view[V_SUSPECT][s] + c.n_view[V_DEAD][s] + c.n_view[V_LEFT][s]
        if wrong:
            bad.append(f"{node.name} (up) seen suspect/dead by {wrong} of {observers - 1}")
    false_dead = len(c.ledger.false_dead)
    if require_no_false_dead and false_dead:
        t, o, s = c.ledger.false_dead[0]
        bad.insert(
            0,
            f"{false_dead} false DEAD declarations (first: {c.nodes[o].name} declared "
            f"{c.nodes[s].name} dead at t={t / 1000:.3f}s)",
        )
    if bad:
        return CheckResult("accuracy", False, _join(bad))
    return CheckResult(
        "accuracy", True, f"no live host suspect/dead at the end; false DEAD events: {false_dead}"
    )


def convergence(c: Cluster) -> CheckResult:
    wrong, _ = c.view_errors()
    if wrong:
        missing: list[str] = []
        observers = c.up_count
        for s, node in enumerate(c.nodes):
            if node.state == UP:
                short = observers - 1 - c.n_view[V_ALIVE][s]
                if short:
                    missing.append(f"{node.name} not alive at {short} observers")
            elif node.state in (DOWN, LEFT):
                # A wrong view of a gone host counts too (``view_errors``): name it as well, so
                # the detail never reads "1 wrong views;" with no example.
                held = c.n_view[V_ALIVE][s] + c.n_view[V_SUSPECT][s]
                if held:
                    missing.append(f"{node.name} gone but alive/suspect at {held} observers")
            if len(missing) >= _EXAMPLES:
                break
        return CheckResult("convergence", False, f"{wrong} wrong views; " + _join(missing))
    return CheckResult("convergence", True, f"all {c.up_count} live views whole")


def monotone_incarnations(c: Cluster) -> CheckResult:
    regs = c.ledger.incarnation_regressions
    if regs:
        ex = [
            f"t={t / 1000:.3f}s {c.nodes[o].name} took {c.nodes[s].name} from {a} to {b}"
            for t, o, s, a, b in regs[:_EXAMPLES]
        ]
        return CheckResult("monotone-incarnations", False, f"{len(regs)} regressions; " + _join(ex))
    return CheckResult("monotone-incarnations", True, "no incarnation ever went backwards")


def ledger_matches_core(c: Cluster, observers_max: int = 50) -> CheckResult:
    """The core's ``member()`` agrees with the states its effects announced."""
    up = [n for n in c.nodes if n.state == UP and n.core is not None]
    step = max(1, len(up) // observers_max)
    bad: list[str] = []
    checked = 0
    for node in up[::step]:
        assert node.core is not None
        view = c.views[node.idx] or []
        for m in node.core.members():
            s = c.by_name.get(m.name)
            if s is None or s == node.idx:
                continue
            checked += 1
            code = view[s] if s < len(view) else NO_VIEW
            want = STATE_CODE[m.state]
            if code == NO_VIEW or code & 3 != want or code >> 2 != m.incarnation:
                got = "nothing" if code == NO_VIEW else f"state {code & 3} inc {code >> 2}"
                bad.append(
                    f"{node.name}: core says {m.name} {m.state.value} inc {m.incarnation}, "
                    f"effects said {got}"
                )
    if bad:
        return CheckResult("ledger-matches-core", False, f"{len(bad)} mismatches; " + _join(bad))
    return CheckResult("ledger-matches-core", True, f"{checked} (observer, member) pairs agree")


def packet_limit(c: Cluster) -> CheckResult:
    over = c.network.stats.dropped_oversize
    limit = c.network.max_packet_bytes
    if over:
        return CheckResult("packet-limit", False, f"{over} datagrams over {limit} bytes")
    return CheckResult("packet-limit", True, f"every datagram <= {limit} bytes")


def forgeries_refused(c: Cluster) -> CheckResult:
    forged, strangers = c.ledger.forged, c.ledger.strangers
    if forged or strangers:
        ex = [f"t={t / 1000:.3f}s {c.nodes[o].name} believed {c.nodes[s].name}: {what}"
              for t, o, s, what in forged[:_EXAMPLES]]  # fmt: skip
        ex += [f"t={t / 1000:.3f}s {c.nodes[o].name} added {name!r}, who does not exist"
               for t, o, name in strangers[:_EXAMPLES]]  # fmt: skip
        return CheckResult(
            "forgeries-refused", False,
            f"{len(forged)} forged claims and {len(strangers)} invented members believed; "
            + _join(ex),
        )  # fmt: skip
    rejected = sum(getattr(n.core, "stats", {}).get("reject", 0) for n in c.nodes if n.core)
    return CheckResult("forgeries-refused", True,
                       f"nothing forged believed; {rejected} claims refused by live hosts")  # fmt: skip


def standard(c: Cluster, *, no_false_dead: bool = False) -> list[CheckResult]:
    """The checks every scenario runs at the end of a run."""
    return [
        completeness(c),
        accuracy(c, require_no_false_dead=no_false_dead),
        convergence(c),
        monotone_incarnations(c),
        ledger_matches_core(c),
        packet_limit(c),
        forgeries_refused(c),
    ]


def _join(items: list[str]) -> str:
    head = "; ".join(items[:_EXAMPLES])
    if len(items) > _EXAMPLES:
        head += f"; … ({len(items)} in all)"
    return head
