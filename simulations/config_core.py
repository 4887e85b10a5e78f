"""The config replica as a simulator attachment: the agent's own ``ReplicaCore``, run by the simulator.

Theory of operation
-------------------
``ConfigAttachment`` is, for one simulated host, what ``gossipmesh/agent/replica.py`` is in the
agent: a runtime for the sans-IO ``ReplicaCore`` (``gossipmesh/crdt/replica.py``). It owns one core
(with a real ``Document`` and the real schema validator), feeds it the host's inputs (SWIM user
messages, member changes, timers, exchange legs) with the virtual clock, and carries out the
effects it returns through the host handle (``simulations/hosts.py``). Every decision -- spread,
merge, forward, sync triggers and periods, peer choice, concurrency limits, framing, what is
refused -- is the core's; nothing here restates it. So the checkers judge the code the agent runs.

How each effect is carried out:

- ``Gossip``: ``host.queue_broadcast`` (relayed cluster-wide by the SWIM core) and
  ``host.send_user_message``; a ``LimitExceededError`` goes back to ``core.gossip_refused``.
- ``OpenExchange``: ``host.exchange``, a TCP-like request/reply; the peer attachment hands the body
  to ``serve_sync`` / ``serve_push``. The agent's streams have kinds; here the first byte of the
  request names the leg (``S`` digest, ``P`` a config-push, ``Q`` the sync's third leg), which is
  simulator plumbing and not counted in the byte figures.
- ``SendSyncPush``: the agent sends the third leg on the open stream, which already names the
  sender, and reads the fourth; the simulator's exchange is one request/reply, so it opens a
  second one (``Q``) with the core's own name frame (``frame``) around it, whose reply is the
  fourth leg.
- ``SetTimer``: ``host.set_timer``. ``Persist``: there is no store ("acknowledged" means the core
  returned, when the agent would answer after its fsync), but a ``Persist`` is exactly "this host
  now holds something new", so the ledger notes which watched writes it now holds.
- ``SyncDone``: the ledger records the bytes of the exchange. ``Changed``, ``Refused`` and
  ``SaveSnapshot`` have nobody to tell here.

**Signatures.** Every write is signed for real (P-256) by one of two simulated operators
(``SimPki``: real keys and certificates from one in-process CA, built once per process): a host's
``commit`` is the admin API's two phases, ``prepare``, sign, ``commit``, adding the operator's
``cert/FP`` entry when the host's document lacks it, as the agent does. Every merge verifies every
entry through the same ``ConfigAuthority`` the agent uses; one authority and one signature memo
serve every simulated host (a memo of a pure function is behaviour-neutral, DESIGN-11 D2), so a
1000-node run verifies each signature once.

**Clock.** The HLC's physical time is ``EPOCH_MS + now_ms + skew``, the skew drawn per host (±50 ms
by default, well inside the 500 ms drift bound), so writers' timestamps disagree a little, as real
clocks do, and the deterministic winner rule is actually exercised. **Restart.** With data: the
previous core's document and writer id carry over (what the agent loads from its store). Without:
an empty document under a new writer epoch. Reaped members are not forwarded to attachments, so
they stay in the peer table as dead; dead members are never picked, so that changes no decision.
Tombstone GC is not driven (its grace period is an hour, longer than any scenario).

A ``ConfigLedger`` shared by all attachments of a run records what the checkers and reports need:
every acknowledged write (the entry itself), when each host first held each *watched* write (for
spread percentiles), the bytes of every anti-entropy exchange, and the cores' counters (every core
of the run counts into the ledger's table). ``ReplicaSettings`` carries the core's ``ReplicaConfig``
and the clock skew.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gossipmesh.config.authority import ConfigAuthority, SignatureMemo
from gossipmesh.config.schema import check_entry
from gossipmesh.config.signing import entry_bytes
from gossipmesh.config.trust import cert_key
from gossipmesh.crdt.document import Delta, Document, Entry
from gossipmesh.crdt.effects import (
    Changed,
    Effect,
    Exchange,
    ExchangeKind,
    Gossip,
    OpenExchange,
    Persist,
    Refused,
    SaveSnapshot,
    SendSyncPush,
    SetTimer,
    SyncDone,
)
from gossipmesh.crdt.replica import ReplicaConfig, ReplicaCore, frame, make_writer, unframe
from gossipmesh.errors import LimitExceededError
from gossipmesh.identity import (
    CaCredentials,
    OperatorCredentials,
    SpiffeId,
    fingerprint,
    parse_certificate,
)
from gossipmesh.identity.certs import build_certificate
from gossipmesh.identity.playground import derive_signer
from gossipmesh.ids import Address
from gossipmesh.swim.member import Member, MemberState
from simulations.checkers import CheckResult
from simulations.cluster import Cluster
from simulations.hosts import UP, Attachment, SimNode

PKI_ROOT_LABEL = b"gossipmesh simulator config root/"
PKI_OPERATOR_LABEL = b"gossipmesh simulator operator/"
EPOCH_MS = 1_790_000_000_000  # virtual t=0 as a wall clock (late 2026), so HLCs look real
CLUSTER = "sim"
OPERATORS = 2
LEG_SYNC, LEG_PUSH_BACK, LEG_PUSH = b"S", b"Q", b"P"
_LEG = {ExchangeKind.SYNC: LEG_SYNC, ExchangeKind.PUSH: LEG_PUSH}
_SILENT = (Changed, Refused, SaveSnapshot)

Dot = tuple[str, int]
Watched = tuple[str, Dot]  # (key, dot): a dot names an entry within its key


class SimPki:
    """One CA and ``OPERATORS`` operators, real P-256, made once per process; the authority
    every simulated host's document uses, with one signature memo.

    Keys are derived from fixed labels and certificates signed deterministically (RFC 6979), as
    ``identities.py`` does for the hosts: a certificate's DER length varies with its ECDSA
    signature (70-72 bytes), and the operators' certificates travel in ``cert/`` entries, so
    random keys made config messages a byte longer or shorter in each process and a seed
    replayed in a new process ran a different trace."""

    def __init__(self) -> None:
        root_signer = derive_signer(PKI_ROOT_LABEL, CLUSTER)
        not_before, not_after = EPOCH_MS - 86_400_000, EPOCH_MS + 3650 * 86_400_000
        root_der = build_certificate(
            spiffe_id=SpiffeId.root(CLUSTER), public_key=root_signer.public_key,
            issuer_signer=root_signer, issuer=None, not_before_ms=not_before,
            not_after_ms=not_after, serial=_pki_serial("root"), deterministic=True,
        )  # fmt: skip
        self.root = CaCredentials.from_parts(root_signer, root_der)
        root_info = parse_certificate(root_der)
        self.operators = []
        for i in range(OPERATORS):
            signer = derive_signer(PKI_OPERATOR_LABEL, f"{CLUSTER}/op{i}")
            der = build_certificate(
                spiffe_id=SpiffeId.operator(CLUSTER, f"op{i}"), public_key=signer.public_key,
                issuer_signer=root_signer, issuer=root_info, not_before_ms=not_before,
                not_after_ms=not_after, serial=_pki_serial(f"op{i}"), deterministic=True,
            )  # fmt: skip
            self.operators.append(OperatorCredentials.from_parts(signer, der, (root_der,)))
        self.fingerprints = [fingerprint(op.cert_der) for op in self.operators]
        self.authority = ConfigAuthority(CLUSTER, [self.root.cert_der], SignatureMemo())

    def cert_item(self, op: int) -> tuple[str, dict[str, Any]]:
        der = self.operators[op].cert_der
        return cert_key(self.fingerprints[op]), {"der": base64.b64encode(der).decode()}

    def sign(self, entry: Entry, op: int) -> Entry:
        fp = self.fingerprints[op]
        unsigned = replace(entry, signer=fp)
        message = entry_bytes(CLUSTER, *unsigned.signed_fields())
        return unsigned.signed(fp, self.operators[op].signer.sign(message))


def _pki_serial(what: str) -> int:
    digest = hashlib.sha256(b"gossipmesh simulator config serial/" + what.encode()).digest()
    return (int.from_bytes(digest[:19], "big") >> 1) + 1  # positive, at most 19 bytes


@functools.cache
def sim_pki() -> SimPki:
    return SimPki()


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """The core's config (defaults are the agent's) and this simulator's clock skew."""

    config: ReplicaConfig = ReplicaConfig()
    clock_skew_ms_max: int = 50


@dataclass(frozen=True, slots=True)
class ThirdLeg:
    """Token of the exchange that carries a sync's ``SyncPush``; its answer is empty."""

    sync: Exchange


@dataclass(slots=True)
class AckedWrite:
    t_ms: int
    host: int
    entry: Entry


@dataclass(slots=True)
class Watch:
    """Spread of one write: when each host first held its dot."""

    t_ms: int
    host: int
    live: int  # hosts UP when it was written: the denominator of the percentiles
    seen_ms: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class ConfigLedger:
    acked: list[AckedWrite] = field(default_factory=list)
    watches: dict[Watched, Watch] = field(default_factory=dict)
    insync_bytes: list[int] = field(default_factory=list)  # digest + in-sync reply
    insync_framed_bytes: list[int] = field(default_factory=list)  # plus the sender-name frame
    repair_bytes: list[int] = field(default_factory=list)  # digest + reply + push
    counters: Counter[str] = field(default_factory=Counter)  # every core's config.* counters

    def watch(self, watched: Watched, t_ms: int, host: int, live: int) -> None:
        self.watches[watched] = Watch(t_ms, host, live, {host: t_ms})

    def observe(self, host: SimNode, doc: Document) -> None:
        """After ``host`` took in something new: note the watched writes it now holds first."""
        idx = host.idx
        for (key, dot), w in self.watches.items():
            if idx not in w.seen_ms and doc.has_seen(key, dot):
                w.seen_ms[idx] = host.now_ms


class ConfigAttachment(Attachment):
    """One host's config replica: a ``ReplicaCore`` and its effects (see the module docstring)."""

    core: ReplicaCore
    skew_ms: int

    def __init__(
        self,
        host: SimNode,
        ledger: ConfigLedger,
        settings: ReplicaSettings,
        previous: ConfigAttachment | None = None,
    ) -> None:
        self.ledger = ledger
        # The agent derives its replica rng from the agent's; we derive ours from the host's.
        rng = random.Random(host.rng.getrandbits(64))
        if previous is not None:  # restart with data: the store's document and writer id
            doc, writer, self.skew_ms = previous.doc, previous.core.writer, previous.skew_ms
        else:
            doc = Document(sim_pki().authority, validator=check_entry)
            writer = make_writer(host.name, rng)
            m = settings.clock_skew_ms_max
            self.skew_ms = rng.randint(-m, m) if m else 0
        self.core = ReplicaCore(host.name, doc, writer, rng, settings.config, ledger.counters)
        self.operator = host.idx % OPERATORS  # who signs the writes made at this host

    @property
    def doc(self) -> Document:
        return self.core.doc

    def wall_ms(self, now_ms: int) -> int:
        return EPOCH_MS + now_ms + self.skew_ms

    # ---- inputs ---------------------------------------------------------------------------

    def start(self, host: SimNode, now_ms: int) -> None:
        self._apply(host, self.core.start(now_ms))

    def commit(self, host: SimNode, items: Sequence[tuple[str, dict[str, Any] | None]]) -> Delta:
        """An operator's write at this host; returns once acknowledged (as the agent would)."""
        now, wall = host.now_ms, self.wall_ms(host.now_ms)
        pki = sim_pki()
        items = list(items)
        cert = pki.cert_item(self.operator)
        if not self.doc.stored(cert[0]):
            items.append(cert)
        proposal, effects = self.core.prepare(items, wall)
        signed = [pki.sign(e, self.operator) for e in proposal]
        result, more = self.core.commit(signed, now, wall)
        delta = result.forward or Delta()
        for e in delta.entries:
            self.ledger.acked.append(AckedWrite(now, host.idx, e))
        self._apply(host, effects + more)
        return delta

    def on_member_changed(
        self, host: SimNode, member: Member, previous: MemberState | None, now_ms: int
    ) -> None:
        prev = previous.value if previous is not None else None
        self._apply(host, self.core.member_changed(member.name, member.address,
                                                   member.state.value, prev, now_ms))  # fmt: skip

    def on_user_message(self, host: SimNode, src: Address, payload: bytes, now_ms: int) -> None:
        self._apply(host, self.core.on_user_message(src, payload, now_ms, self.wall_ms(now_ms)))

    def on_timer(self, host: SimNode, token: object, now_ms: int) -> None:
        self._apply(host, self.core.handle_timer(token, now_ms))

    def handle_exchange(self, host: SimNode, src: Address, data: bytes, now_ms: int) -> bytes:
        leg, body = data[:1], data[1:]
        core, wall = self.core, self.wall_ms(now_ms)
        if leg == LEG_PUSH_BACK:
            name, push = unframe(body)  # our own framing (see SendSyncPush above)
            third = core.serve_sync_push(name, push, now_ms, wall)
            self._apply(host, third.effects)
            return third.reply
        if leg == LEG_SYNC:
            served = core.serve_sync(src, body, now_ms, wall)
        elif leg == LEG_PUSH:
            served = core.serve_push(src, body, now_ms, wall)
        else:
            raise ValueError(f"unknown exchange leg {leg!r}")
        self._apply(host, served.effects)
        return served.reply

    def on_exchange_reply(self, host: SimNode, token: object, reply: bytes, now_ms: int) -> None:
        if isinstance(token, ThirdLeg):  # its reply is the sync's fourth leg
            wall = self.wall_ms(now_ms)
            self._apply(host, self.core.sync_push_reply(token.sync, reply, now_ms, wall))
            return
        assert isinstance(token, Exchange)
        self._apply(host, self.core.exchange_reply(token, reply, now_ms, self.wall_ms(now_ms)))

    def on_exchange_failed(self, host: SimNode, token: object, now_ms: int) -> None:
        sync = token.sync if isinstance(token, ThirdLeg) else token
        assert isinstance(sync, Exchange)
        self._apply(host, self.core.exchange_failed(sync, now_ms))

    # ---- effects --------------------------------------------------------------------------

    def _apply(self, host: SimNode, effects: Sequence[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Persist):
                self.ledger.observe(host, self.core.doc)
            elif isinstance(eff, Gossip):
                try:
                    if eff.broadcast:
                        host.queue_broadcast(eff.payload)
                    if eff.fanout:
                        host.send_user_message(eff.payload, eff.fanout)
                except LimitExceededError:
                    self._apply(host, self.core.gossip_refused(eff, host.now_ms))
            elif isinstance(eff, OpenExchange):
                host.exchange(eff.to, _LEG[eff.token.kind] + eff.body, eff.token)
            elif isinstance(eff, SendSyncPush):
                host.exchange(eff.to, LEG_PUSH_BACK + frame(host.name, eff.data),
                              ThirdLeg(eff.token))  # fmt: skip
            elif isinstance(eff, SetTimer):
                host.set_timer(eff.timer, eff.at_ms)
            elif isinstance(eff, SyncDone):
                self._record_sync(eff)
            elif not isinstance(eff, _SILENT):
                raise TypeError(f"unknown effect {eff!r}")

    def _record_sync(self, done: SyncDone) -> None:
        ledger = self.ledger
        if done.in_sync:
            ledger.insync_bytes.append(done.sent_bytes + done.received_bytes)
            ledger.insync_framed_bytes.append(done.framed_bytes + done.received_bytes)
        else:
            ledger.repair_bytes.append(done.sent_bytes + done.received_bytes + done.pushed_bytes
                                       + done.back_bytes)  # fmt: skip


def attachment_factory(
    ledger: ConfigLedger, settings: ReplicaSettings
) -> Callable[[SimNode, Attachment | None], Attachment]:
    def make(host: SimNode, previous: Attachment | None) -> Attachment:
        prev = previous if isinstance(previous, ConfigAttachment) else None
        return ConfigAttachment(host, ledger, settings, prev)

    return make


# ---- checkers ----------------------------------------------------------------------------------


def _replicas(c: Cluster) -> list[tuple[SimNode, ConfigAttachment]]:
    return [
        (n, n.attachment)
        for n in c.nodes
        if n.state == UP and isinstance(n.attachment, ConfigAttachment)
    ]


def documents_identical(c: Cluster) -> CheckResult:
    """Every live replica has the same root hash, known maps, items and winners."""
    reps = _replicas(c)
    if not reps:
        return CheckResult("config-identical", False, "no live replica")
    ref_node, ref = reps[0]
    ref_key = (ref.doc.root_hash, ref.doc.known_maps(), list(ref.doc.items()),
               [(k.key, k.winner.dot) for k in ref.doc.conflicts()])  # fmt: skip
    bad: list[str] = []
    for node, att in reps[1:]:
        d = att.doc
        if d.root_hash != ref_key[0]:
            bad.append(f"{node.name}: root {d.root_hash.hex()[:16]} != {ref_key[0].hex()[:16]}")
        elif d.known_maps() != ref_key[1]:
            bad.append(f"{node.name}: known maps differ")
        elif list(d.items()) != ref_key[2]:
            bad.append(f"{node.name}: items differ")
        elif [(k.key, k.winner.dot) for k in d.conflicts()] != ref_key[3]:
            bad.append(f"{node.name}: conflict winners differ")
    if bad:
        return CheckResult("config-identical", False,
                           f"{len(bad)} of {len(reps)} replicas differ from {ref_node.name}; "
                           + "; ".join(bad[:5]))  # fmt: skip
    return CheckResult(
        "config-identical",
        True,
        f"{len(reps)} replicas: root {ref_key[0].hex()[:16]}, {len(ref_key[2])} live keys, "
        f"{len({w for m in ref_key[1].values() for w in m})} writers, {len(ref_key[3])} "
        "conflicts",
    )


def no_lost_write(c: Cluster, ledger: ConfigLedger) -> CheckResult:
    """Every acknowledged write is held by every live replica, or superseded there by a write
    that had seen it (a write nobody saw replaced must never vanish)."""
    reps = _replicas(c)
    lost: list[str] = []
    for ack in ledger.acked:
        e = ack.entry
        for node, att in reps:
            sibs = att.doc.siblings(e.key)
            held = any(s.dot == e.dot or s.covers(e) for s in sibs)
            if not att.doc.has_seen(e.key, e.dot) or not held:
                lost.append(f"{e.key} {e.writer}:{e.counter} missing at {node.name}")
                break
    if lost:
        return CheckResult("config-no-lost-write", False,
                           f"{len(lost)} of {len(ledger.acked)} acknowledged writes lost; "
                           + "; ".join(lost[:5]))  # fmt: skip
    return CheckResult("config-no-lost-write", True,
                       f"all {len(ledger.acked)} acknowledged writes held or causally "
                       f"superseded at {len(reps)} replicas")  # fmt: skip


def conflicts_visible(c: Cluster, keys: Sequence[str]) -> CheckResult:
    """Keys written concurrently on both sides keep both versions, with one winner everywhere."""
    bad: list[str] = []
    winners: dict[str, set[Dot]] = {k: set() for k in keys}
    for node, att in _replicas(c):
        for k in keys:
            sibs = att.doc.siblings(k)
            if len(sibs) < 2:
                bad.append(f"{k}: {len(sibs)} version(s) at {node.name}")
            elif sibs:
                winners[k].add(sibs[0].dot)
    split = [k for k, w in winners.items() if len(w) > 1]
    if bad or split:
        detail = "; ".join(bad[:5] + [f"{k}: {len(winners[k])} different winners" for k in split])
        return CheckResult("config-conflicts-visible", False, detail)
    return CheckResult("config-conflicts-visible", True,
                       f"{len(keys)} contested keys listed as conflicts, one winner each "
                       "everywhere")  # fmt: skip


__all__ = [
    "AckedWrite",
    "ConfigAttachment",
    "ConfigLedger",
    "ReplicaSettings",
    "attachment_factory",
    "conflicts_visible",
    "documents_identical",
    "no_lost_write",
]
