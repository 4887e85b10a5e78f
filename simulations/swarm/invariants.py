"""The swarm's invariants: what must hold always, and what must hold once the cluster settled.

Theory of operation
-------------------
Two families, judged at the end of a run (``judge``) from the cluster's truth and ledgers:

*Safety*, which no fault may ever break, so it is checked over the whole run:

- incarnations monotone (``checkers.monotone_incarnations``: no observer ever took a subject's
  incarnation backwards; no host's own went backwards across a restart with its data);
- nothing forged accepted (``checkers.forgeries_refused``), datagrams within the packet limit,
  the core's ``member()`` agreeing with the effects it announced;
- no acknowledged config write lost (``config_core.no_lost_write``) -- for every acknowledged
  write some live host held since its last wipe (``wipe``). A write whose every copy was on
  hosts that crashed for good or lost their disk is gone with them, legitimately, and counted
  as such in the detail, not hidden: it is the write's only copies that died, not a replica
  that dropped one;
- bounded memory per host (``MemoryWatch``, sampled every 2 s of the run): members known <=
  hosts that ever existed, the broadcast queue <= ``broadcast_queue_max``, config syncs and
  pushes in flight <= the core's limits, the replica's peer table <= hosts, the document's keys
  <= the keys ever written.

*Settled*, which faults may break for a while, so they are checked only after the settle window
after the last heal (``runner.settle_bound_ms``): every crashed or departed host dead or gone at
every live host (completeness), no live host suspect or dead anywhere (accuracy), every live
host alive at every live host (convergence), and every live replica's document identical
(root digest, known maps, items, conflict winners). ``settled_now`` is the cheap form the
runner polls each second to say *when* the cluster settled, and every 2 s of the hold window
after the bound to see that it *stays* settled. A settled property that fails at the bound is
"too slow" or "wrong" (``Verdict.classified``); one that held at the bound and broke in the hold
is "relapsed" (``Verdict.relapsed``); all three fail the seed.

A core that raises is a failure of its own (the engine stops the run; the runner keeps the
traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gossipmesh.crdt.replica import SPREAD_CONCURRENCY_MAX, SYNC_CONCURRENCY_MAX
from simulations import checkers
from simulations.checkers import CheckResult
from simulations.cluster import Cluster
from simulations.config_core import (
    ConfigAttachment,
    ConfigLedger,
    documents_identical,
    no_lost_write,
)
from simulations.hosts import UP

EXAMPLES = 5


@dataclass(slots=True)
class MemoryWatch:
    """Sizes of every live host's core tables against their bounds (see the module docstring)."""

    violations: list[str] = field(default_factory=list)
    peak: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def check(self, c: Cluster, now_ms: int) -> None:
        self.samples += 1
        hosts = len(c.nodes)
        queue_max = c.config.broadcast_queue_max
        # every attachment of a run shares one ledger: the keys ever acknowledged
        keys_written = next((len({a.entry.key for a in n.attachment.ledger.acked})
                             for n in c.nodes if isinstance(n.attachment, ConfigAttachment)), 0)  # fmt: skip
        for node in c.nodes:
            core = node.core
            if node.state != UP or core is None:
                continue
            sizes = {"members": len(core.members()),
                     "broadcast_queue": core.broadcast_queue_len}  # type: ignore[attr-defined]  # fmt: skip
            bounds = {"members": hosts, "broadcast_queue": queue_max}
            att = node.attachment
            if isinstance(att, ConfigAttachment):
                rep = att.core
                sizes.update(syncs=rep.syncs_in_flight, pushes=rep.pushes_in_flight,
                             replica_peers=len(rep.members), doc_keys=len(rep.doc.keys()))  # fmt: skip
                bounds.update(syncs=SYNC_CONCURRENCY_MAX, pushes=SPREAD_CONCURRENCY_MAX,
                              replica_peers=hosts, doc_keys=keys_written)  # fmt: skip
            for name, size in sizes.items():
                if size > self.peak.get(name, -1):
                    self.peak[name] = size
                if size > bounds[name] and len(self.violations) < 100:
                    self.violations.append(f"t={now_ms / 1000:.1f}s {node.name}: {name} {size} > "
                                           f"{bounds[name]}")  # fmt: skip

    def result(self) -> CheckResult:
        if self.violations:
            return CheckResult("bounded-memory", False, f"{len(self.violations)} over a bound; "
                               + "; ".join(self.violations[:EXAMPLES]))  # fmt: skip
        peak = ", ".join(f"{k} {v}" for k, v in sorted(self.peak.items()))
        return CheckResult("bounded-memory", True, f"{self.samples} samples; peaks: {peak}")


def wipe(ledger: ConfigLedger, idx: int) -> None:
    """Host ``idx`` restarts without its data: what it held no longer counts as held."""
    for watch in ledger.watches.values():
        watch.seen_ms.pop(idx, None)


def settled_now(c: Cluster) -> bool:
    """Every live view whole and every live replica's root digest the same."""
    if c.view_errors()[0]:
        return False
    roots = {n.attachment.doc.root_hash for n in c.nodes
             if n.state == UP and isinstance(n.attachment, ConfigAttachment)}  # fmt: skip
    return len(roots) <= 1


@dataclass(frozen=True, slots=True)
class Verdict:
    settled: tuple[CheckResult, ...]
    safety: tuple[CheckResult, ...]

    @property
    def settled_ok(self) -> bool:
        return all(r.ok for r in self.settled)

    @property
    def failures(self) -> tuple[tuple[str, str], ...]:
        return tuple((r.name, r.detail) for r in self.settled + self.safety if not r.ok)

    def classified(self, later: Verdict, settled_after_ms: int | None, bound_ms: int) -> Verdict:
        """Name each settled property that failed at the bound "too slow" (it held at three
        times the bound) or "wrong" (it still did not)."""
        out = []
        for now, then in zip(self.settled, later.settled, strict=True):
            if now.ok:
                out.append(now)
            elif then.ok:
                when = ("" if settled_after_ms is None
                        else f", everything settled {settled_after_ms / 1000:.0f}s after the heal")  # fmt: skip
                out.append(replace(now, detail=f"too slow: not settled {bound_ms / 1000:.0f}s "
                                   f"after the heal{when}; at the bound: {now.detail}"))  # fmt: skip
            else:
                out.append(replace(then, detail=f"wrong: still at {3 * bound_ms / 1000:.0f}s "
                                   f"after the heal: {then.detail}"))  # fmt: skip
        return Verdict(tuple(out), later.safety)

    def relapsed(self, at_ms: int, bound_ms: int, settled_ms: int | None) -> Verdict:
        """Name each settled property that fails here, ``at_ms`` after the heal in the hold
        window (it held at the bound), "relapsed". ``settled_ms``: since when it had held."""
        since = "" if settled_ms is None else f", settled since {settled_ms / 1000:.0f}s"
        head = (f"relapsed: broke {at_ms / 1000:.0f}s after the heal, "
                f"{(at_ms - bound_ms) / 1000:.0f}s past the {bound_ms / 1000:.0f}s bound{since}")  # fmt: skip
        out = tuple(r if r.ok else replace(r, detail=f"{head}: {r.detail}") for r in self.settled)
        if all(r.ok for r in out):  # the poll saw it; no full check names it
            out += (CheckResult("settled", False, f"{head}: a view or a root digest differed"),)
        return Verdict(out, self.safety)


def judge(c: Cluster, ledger: ConfigLedger, memory: MemoryWatch) -> Verdict:
    settled = (
        checkers.completeness(c),
        checkers.accuracy(c),
        checkers.convergence(c),
        documents_identical(c),
    )
    safety = (
        checkers.monotone_incarnations(c),
        checkers.forgeries_refused(c),
        checkers.packet_limit(c),
        checkers.ledger_matches_core(c),
        _no_lost_write(c, ledger),
        memory.result(),
    )
    return Verdict(settled, safety)


def _no_lost_write(c: Cluster, ledger: ConfigLedger) -> CheckResult:
    live = {n.idx for n in c.nodes if n.state == UP}
    required = ConfigLedger()
    gone = 0
    for ack in ledger.acked:
        w = ledger.watches.get((ack.entry.key, ack.entry.dot))
        if w is None or live & set(w.seen_ms):
            required.acked.append(ack)
        else:
            gone += 1
    res = no_lost_write(c, required)
    if gone:
        res = replace(res, detail=res.detail + f"; {gone} more held only by hosts that crashed "
                      "for good or lost their disk")  # fmt: skip
    return res
