"""``Rumours``: membership news -- alive, suspect, dead -- merged, refuted, spread and reaped.

Theory of operation
-------------------
Every piece of news about a member, from a packet, a push-pull record or our own failed probe,
ends here. For one member the higher incarnation wins, and at equal incarnation DEAD > SUSPECT >
ALIVE; old news changes nothing. News we accept is queued for gossip (``broadcast.py``), keyed so
that newer news about a member replaces older news still waiting to be sent.

A suspicion starts a Lifeguard timeout (``suspicion.py``) that shrinks with each independent
confirmation; each new or confirmed suspicion is offered to the ``ConfirmationProber`` (the
node's ``probe.Prober``), which may probe the suspect itself. Its timer comes back to the prober,
which gives the suspect a last word before declaring it dead here.

News about ourselves is answered, not merged: a suspicion or death at our incarnation or above is
refuted by gossiping ``alive`` at a higher one (evidence that *we* are unhealthy, so local health
worsens); a stale one still going round is answered by gossiping our current incarnation again.

Nothing is believed unsigned (``authority.py``). News is first recognised as news from the
incarnation alone (old news costs no signature check), then checked: an alive claim must be
signed by its subject, under a certificate valid for exactly that name, so a member nobody can
vouch for is never added and nobody speaks for another; an accusation must be signed by a member
we know and be about an incarnation at most one above what the subject itself signed, so no
packet can push a member past what it can refute. Our own accusations (``local=True``) are signed
here, once we know they change something.

The bound costs accuracy when we miss refutations (30 % loss, a healed partition): an honest
accuser holds the subject's newer claim, we do not, and we would refuse every accusation of it
from then on -- a real death then reached all of 1,000 nodes in 49 s instead of 14 s. So a
refused accusation is kept (newest per subject) and the sender asked for the subject's claim
(``Want``); when a newer claim comes, from the answer or gossip, the accusation is heard again.
A claim at the incarnation we already hold the subject suspect or dead at (we took the
accusation before the refutation the accuser had seen) is not news, but is kept as the proof,
which raises the bound as far as honest accusers can go. Confirmations are queued under their
accuser, so newer news does not replace them: they are unqueued when a suspicion ends (each is
~90 bytes with its signature, and old news to every receiver).

An alive claim travels with its subject's certificate when the receiver may not hold it, else
with a 32-byte reference (``fields.cert_ref``), which keeps a refutation ~150 bytes instead of
~600 (with full certificates a healed 50/50 partition took 28 s instead of 1.3 s to be whole
again: every packet carried two refutations instead of dozens). Who sends which: a member's own
first claim after start, and any claim of a member that was new to the relay (or came with a new
certificate), goes out with the certificate for its first ``certificate_transmits`` sends per
holder, then with the reference: by then most members hold the certificate, and whoever knew the
member before us most likely does too. A member that gets a reference it cannot resolve (it missed
the certificate, as many do in a mass join) of a member it does not know asks the sender for a
push-pull (``StateFetcher``, at
most one per sender per ``FETCH_INTERVAL_MS``): its state carries every certificate.

Every ``gossip_interval_ms`` the queued news goes to ``gossip_nodes`` random members, including
members dead for less than ``gossip_to_dead_ms``, so a falsely accused member hears it and
refutes. Dead and left members are forgotten ``dead_reap_ms`` after they went.
"""

from __future__ import annotations

from typing import Protocol

from gossipmesh.ids import Address, Millis
from gossipmesh.swim.authority import AccusationKind, AliveClaim
from gossipmesh.swim.effects import Effect, MemberReaped, SendPacket, SetTimer
from gossipmesh.swim.fields import cert_ref, is_cert_ref
from gossipmesh.swim.member import Member, Proof, interned_member
from gossipmesh.swim.messages import Alive, Dead, Suspect, encode
from gossipmesh.swim.state import ALIVE, DEAD, LEFT, SUSPECT, NodeState
from gossipmesh.swim.suspicion import Suspicion
from gossipmesh.swim.timers import Timer, TimerKind
from gossipmesh.swim.wants import Wants
from gossipmesh.wire import PACKET_OVERHEAD_BYTES, encode_packet

# Accusations refused by the incarnation bound, kept (newest per subject) to be replayed once
# the subject's newer claim arrives.
PENDING_ACCUSATIONS_MAX = 256


class ConfirmationProber(Protocol):
    """Who decides on confirmation probes (``probe.Prober``): told of every open suspicion."""

    def maybe_confirm_probe(
        self, m: Member, s: Suspicion, now_ms: Millis, out: list[Effect]
    ) -> None: ...

    def forget(self, name: str) -> None: ...


class StateFetcher(Protocol):
    """Who runs push-pulls (``push_pull.StateSync``): asked for one with a member that holds
    certificates we lack."""

    def fetch(self, to: Address, now_ms: Millis, out: list[Effect]) -> None: ...


class Rumours:
    """Membership news for one node (see the module docstring)."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self._table = state.table
        self._broadcasts = state.broadcasts
        self._suspicions = state.suspicions
        # Set by the node once its prober and state sync exist (they need us too).
        self.prober: ConfirmationProber | None = None
        self.fetcher: StateFetcher | None = None
        self.wants = Wants(state)
        self._pending: dict[str, Suspect | Dead] = {}

    def on_alive(self, msg: Alive | Member, now_ms: Millis, out: list[Effect]) -> None:
        """An alive rumour: an ``Alive`` from a packet, or an ALIVE push-pull record, which is
        already the (interned) snapshot to keep, its proof the subject's signed claim."""
        st = self.state
        name = msg.name
        if name == st.name:
            if st.leaving:
                return
            # Someone claims to be us with newer or different details (a previous boot of ours,
            # or a name clash): out-bid it so our view wins. Only a claim signed for our name
            # counts (a restart that lost its data learns its old incarnation so).
            if msg.incarnation > st.incarnation or (
                msg.incarnation == st.incarnation
                and (msg.address != st.address or msg.meta != st.meta)
            ):
                if isinstance(msg, Alive) and is_cert_ref(msg.cert):
                    resolved = self._resolve(msg, None, now_ms, out)
                    if resolved is None:
                        return
                    msg = resolved
                if self._check_alive(msg, now_ms):
                    self.refute(msg.incarnation, now_ms, out)
            return
        cur = self._table.get(name)
        if cur is not None and msg.incarnation <= cur.incarnation:
            if msg.incarnation == cur.incarnation and proof_behind(cur):
                self._catch_up(msg, cur, now_ms, out)
            return  # old news (or the same news again)
        if isinstance(msg, Alive) and is_cert_ref(msg.cert):
            resolved = self._resolve(msg, cur, now_ms, out)
            if resolved is None:
                return
            msg = resolved
        if not self._check_alive(msg, now_ms):
            return
        self._drop_confirmations(name)
        self._suspicions.pop(name, None)
        if isinstance(msg, Member):
            st.put(msg, now_ms, out)
            if st.quiet:
                return
            p = msg.proof
            assert p is not None
            rumour = Alive(name, msg.incarnation, msg.address, msg.meta, p.cert, p.alive_signature)
        else:
            proof = Proof(msg.cert, msg.incarnation, msg.signature)
            st.put(interned_member(name, msg.address, msg.incarnation, ALIVE, msg.meta, proof),
                   now_ms, out)  # fmt: skip
            rumour = msg
        if not st.quiet:
            compact = Alive(name, rumour.incarnation, rumour.address, rumour.meta,
                            cert_ref(rumour.cert), rumour.signature)  # fmt: skip
            if cur is not None and cur.proof is not None and cur.proof.cert == rumour.cert:
                self._broadcasts.queue(encode(compact), name)
            else:
                after = st.config.certificate_transmits
                self._broadcasts.queue(encode(rumour), name, encode(compact), after)
        self._replay(name, now_ms, out)

    def _catch_up(
        self, msg: Alive | Member, cur: Member, now_ms: Millis, out: list[Effect]
    ) -> None:
        """The subject's own claim at the incarnation we already hold it suspect or dead at
        (we took the accusation before the refutation it answered): keep the state, but hold
        the newer claim as its proof, which raises the incarnation bound to what honest
        accusers may now name. Not news to anyone else, so not gossiped."""
        if isinstance(msg, Alive) and is_cert_ref(msg.cert):
            resolved = self._resolve(msg, cur, now_ms, out)
            if resolved is None:
                return
            msg = resolved
        if not self._check_alive(msg, now_ms):
            return
        p = cur.proof
        assert p is not None
        if isinstance(msg, Member):
            q = msg.proof
            assert q is not None
            cert, sig = q.cert, q.alive_signature
        else:
            cert, sig = msg.cert, msg.signature
        proof = Proof(cert, msg.incarnation, sig, p.accuser, p.accusation)
        self.state.count("proofs.caught_up")
        self.state.put(
            interned_member(cur.name, msg.address, cur.incarnation, cur.state, msg.meta, proof),
            now_ms,
            out,
        )
        self._replay(cur.name, now_ms, out)

    def _replay(self, name: str, now_ms: Millis, out: list[Effect]) -> None:
        """Hear again an accusation refused by the incarnation bound, now that the subject's
        newer claim has arrived (checked as from the wire: it may still be refused)."""
        if not self._pending:
            return
        msg = self._pending.pop(name, None)
        if msg is None:
            return
        self.state.count("accusations.replayed")
        if isinstance(msg, Suspect):
            self.on_suspect(msg, now_ms, out)
        else:
            self.on_dead(msg, now_ms, out)

    def _beyond_bound(
        self, cur: Member, msg: Suspect | Dead, now_ms: Millis, out: list[Effect]
    ) -> bool:
        """Is ``msg`` above the incarnation bound (``state.check_accusation``)? Then it is
        refused, but an honest accuser held the subject's newer claim, so we most likely missed
        the subject's refutations: keep the accusation and ask its sender for that claim."""
        p = cur.proof
        assert p is not None
        if msg.incarnation <= p.alive_incarnation + 1:
            return False
        st = self.state
        st.reject("incarnation_bound")
        pending = self._pending
        if msg.name not in pending and len(pending) >= PENDING_ACCUSATIONS_MAX:
            del pending[next(iter(pending))]
        pending[msg.name] = msg
        self.wants.ask(msg.name, p.alive_incarnation, False, now_ms, out)
        return True

    def _drop_confirmations(self, name: str) -> None:
        """Unqueue the confirmations of a suspicion that newer news ended: they are keyed by
        accuser, so the newer news does not replace them, and every receiver would drop them as
        old (the subject would answer each with its claim again) -- with signatures, ~90 bytes
        each that fresher news needs."""
        s = self._suspicions.get(name)
        if s is None:
            return
        drop = self._broadcasts.drop
        for source in s.confirmed_by:
            drop((name, source))

    def _resolve(
        self, msg: Alive, cur: Member | None, now_ms: Millis, out: list[Effect]
    ) -> Alive | None:
        """``msg`` with the certificate its reference names, if we hold it (else rejected, and
        the sender, who holds it, asked for its state)."""
        st = self.state
        if msg.name == st.name:
            held: bytes | None = st.authority.certificate
        else:
            held = cur.proof.cert if cur is not None and cur.proof is not None else None
        if held is None or cert_ref(held) != msg.cert:
            st.reject("unknown_cert")
            if cur is not None:
                # A member we know, under a certificate we lack (it renewed it): ask for that
                # one claim rather than a whole state.
                self.wants.ask(msg.name, msg.incarnation, True, now_ms, out)
            elif st.source is not None and self.fetcher is not None:
                # A member we never heard of: in a join we likely missed many, and one state
                # exchange teaches us all of them (and who the sender is).
                self.fetcher.fetch(st.source, now_ms, out)
            return None
        return Alive(msg.name, msg.incarnation, msg.address, msg.meta, held, msg.signature)

    def claim_holds(self, claim: Member, now_ms: Millis) -> bool:
        """Is ``claim`` (an ALIVE snapshot) signed by its subject? Counted as rejected if not."""
        return self._check_alive(claim, now_ms)

    def gone_again(self, claim: Member, msg: Dead, now_ms: Millis, out: list[Effect]) -> None:
        """A member we hold dead or left, dead or left again at ``msg.incarnation`` with its own
        newer ``claim`` behind it (both checked: push_pull.py ``_gone_again``). It stays gone;
        the death is gossiped for members that took the claim as news."""
        st = self.state
        name = msg.name
        st.count("deaths.again")
        assert claim.proof is not None
        c = claim.proof
        proof = Proof(c.cert, c.alive_incarnation, c.alive_signature, msg.source, msg.signature)
        state = LEFT if msg.left else DEAD
        st.put(interned_member(name, claim.address, msg.incarnation, state, claim.meta, proof),
               now_ms, out)  # fmt: skip
        self._pending.pop(name, None)
        if not st.quiet:
            self._broadcasts.queue(encode(msg), name)
        self.arm_reap(name, msg.incarnation, now_ms, out)

    def _check_alive(self, msg: Alive | Member, now_ms: Millis) -> bool:
        claim = AliveClaim(msg.name, msg.incarnation, msg.address, msg.meta)
        if isinstance(msg, Member):
            p = msg.proof
            assert p is not None and p.alive_incarnation == msg.incarnation
            return self.state.check_alive(claim, p.cert, p.alive_signature, now_ms)
        return self.state.check_alive(claim, msg.cert, msg.signature, now_ms)

    def on_suspect(
        self, msg: Suspect, now_ms: Millis, out: list[Effect], *, local: bool = False
    ) -> None:
        """A suspicion: from a packet (checked), or ours (``local``: signed here if it counts)."""
        st = self.state
        name = msg.name
        cur = self._table.get(name)
        if cur is None or msg.incarnation < cur.incarnation:
            if name == st.name:
                self.reassert()
            return
        kind = AccusationKind.SUSPECT
        if name == st.name:
            if not st.leaving and st.check_accusation(
                kind, cur, msg.incarnation, msg.source, msg.signature, now_ms
            ):
                self.refute(msg.incarnation, now_ms, out)
            return
        state = cur.state
        if state is SUSPECT and msg.incarnation == cur.incarnation:
            s = self._suspicions.get(name)
            if s is not None and s.would_confirm(msg.source):
                if local:
                    msg = st.sign_suspect(name, msg.incarnation)
                elif self._beyond_bound(cur, msg, now_ms, out) or not st.check_accusation(
                    kind, cur, msg.incarnation, msg.source, msg.signature, now_ms
                ):
                    return
                s.confirm(msg.source)
                st.count("confirmations")
                # Re-gossip so others count this independent confirmation too, keyed by its
                # accuser: keyed by the member alone (as memberlist does) it would replace our
                # own accusation, or an earlier confirmation, before they were sent. Two nodes
                # that suspected a dead member within a gossip round then each relayed only the
                # other's accusation back to it, neither counted a confirmation, and the death
                # took the 18 s maximum instead of the 2 s minimum (seen in the 3-node demo). A
                # refutation still replaces our own accusation, and unqueues these
                # (``_drop_confirmations``). With a fixed timeout (Lifeguard off: min = max)
                # a confirmation changes no deadline, so it is not worth its bytes.
                if s.min_ms < s.max_ms:
                    self._broadcasts.queue(encode(msg), (name, msg.source))
                self.arm_suspicion(cur, s, now_ms, out)
            if s is not None and self.prober is not None:
                self.prober.maybe_confirm_probe(cur, s, now_ms, out)
            return
        # An accusation at a newer incarnation than the one we hold it suspect at is a new
        # suspicion, not a confirmation: the member refuted the old one (we missed that) and is
        # accused afresh. Counting it as a confirmation of the old one let those confirmations,
        # our own failed probe among them, end the old suspicion with no last word: a live
        # member declared dead under 30 % loss (simulator, 100 nodes, seed 1, issue 19).
        if state is not ALIVE and state is not SUSPECT:
            return
        if local:
            msg = st.sign_suspect(name, msg.incarnation)
        elif self._beyond_bound(cur, msg, now_ms, out) or not st.check_accusation(
            kind, cur, msg.incarnation, msg.source, msg.signature, now_ms
        ):
            return
        if state is SUSPECT:
            self._drop_confirmations(name)
        st.count("suspicions")
        new = interned_member(name, cur.address, msg.incarnation, SUSPECT, cur.meta,
                              accused(cur, msg.source, msg.signature))  # fmt: skip
        st.put(new, now_ms, out)
        self._broadcasts.queue(encode(msg), name)
        n = self._table.live_count
        cfg = st.config
        k = cfg.suspicion_confirmations
        other = n - 2  # members who could confirm: all live ones but us and the suspect
        if cfg.confirm_probe_fanout > 0:
            # Confirmation probes ask every possible confirmer in a small cluster, so wait for
            # as many as there can be rather than dropping Lifeguard's protection altogether.
            k = max(0, min(k, other))
        elif other < k:
            # memberlist: too few members to give the expected confirmations, expect none
            # (the timeout is then simply the minimum).
            k = 0
        lo, hi = st.suspicion_bounds(n)
        s = Suspicion(st.next_token(), msg.source, k, lo, hi, now_ms)
        self._suspicions[name] = s
        self.arm_suspicion(new, s, now_ms, out)
        if self.prober is not None:
            self.prober.maybe_confirm_probe(new, s, now_ms, out)

    def suspicion_would_count(self, cur: Member, incarnation: int, source: str) -> bool:
        """Would a suspicion of ``cur`` at ``incarnation`` by ``source`` change anything (a new
        suspicion, or a new confirmation)? Asked before paying for a signature check."""
        if incarnation < cur.incarnation:
            return False
        if cur.state is ALIVE:
            return True
        if cur.state is SUSPECT:
            if incarnation > cur.incarnation:
                return True  # a new suspicion of a newer life (see on_suspect)
            s = self._suspicions.get(cur.name)
            return s is not None and s.would_confirm(source)
        return False

    def arm_suspicion(
        self, m: Member | None, s: Suspicion, now_ms: Millis, out: list[Effect]
    ) -> None:
        if m is None:
            return
        # A confirmation can pull the deadline into the past (the suspicion is already older
        # than its new timeout): then the timer is due now.
        at_ms = s.deadline_ms if s.deadline_ms > now_ms else now_ms
        out.append(SetTimer(Timer(TimerKind.SUSPICION, s.token, m.name, m.incarnation), at_ms))

    def on_dead(self, msg: Dead, now_ms: Millis, out: list[Effect], *, local: bool = False) -> None:
        """A death or a leave: from a packet (checked), or ours (``local``: signed here)."""
        st = self.state
        name = msg.name
        cur = self._table.get(name)
        if (
            cur is None
            or msg.incarnation < cur.incarnation
            or cur.state is DEAD
            or cur.state is LEFT
        ):
            if name == st.name and cur is not None and msg.incarnation < cur.incarnation:
                self.reassert()
            return
        left = msg.left
        if left and msg.source != name:
            st.reject("leave_not_own")  # only a member itself can say it left
            return
        kind = AccusationKind.LEFT if left else AccusationKind.DEAD
        if name == st.name:
            if not st.leaving and st.check_accusation(
                kind, cur, msg.incarnation, msg.source, msg.signature, now_ms
            ):
                self.refute(msg.incarnation, now_ms, out)
            return
        if local:
            msg = st.sign_dead(name, msg.incarnation)
        elif self._beyond_bound(cur, msg, now_ms, out) or not st.check_accusation(
            kind, cur, msg.incarnation, msg.source, msg.signature, now_ms
        ):
            return
        st.count("leaves" if left else "deaths")
        self._drop_confirmations(name)
        self._suspicions.pop(name, None)
        new = interned_member(name, cur.address, msg.incarnation, LEFT if left else DEAD, cur.meta,
                              accused(cur, msg.source, msg.signature))  # fmt: skip
        st.put(new, now_ms, out)
        self._broadcasts.queue(encode(msg), name)
        self.arm_reap(name, msg.incarnation, now_ms, out)

    def arm_reap(self, name: str, incarnation: int, now_ms: Millis, out: list[Effect]) -> None:
        out.append(
            SetTimer(
                Timer(TimerKind.REAP, 0, name, incarnation), now_ms + self.state.config.dead_reap_ms
            )
        )

    def forget_suspicion(self, name: str) -> None:
        self._suspicions.pop(name, None)

    def reassert(self) -> None:
        """An accusation we already refuted is still going round, so our refutation has not
        reached everyone (it may have been spent on packets that were lost, while we were cut
        off). Gossip our current incarnation again; memberlist ignores these and leaves the
        accusers' stale view to the next push-pull, up to a minute later. Not fresh evidence
        against our health, so awareness is left alone."""
        st = self.state
        if st.leaving:
            return
        st.count("refutes.reasserted")
        st.queue_self_alive()

    def refute(self, accused_incarnation: int, now_ms: Millis, out: list[Effect]) -> None:
        """Out-bid a rumour about ourselves; having to do so is evidence we are unhealthy.
        ``accused_incarnation`` is one we may believe: a checked accusation (at most one above
        our own), a claim signed for our name, or a buddy ping's clamped number."""
        st = self.state
        st.count("refutes")
        st.awareness.apply_delta(1)
        st.incarnation = max(st.incarnation, accused_incarnation) + 1
        st.put(st.self_snapshot(ALIVE), now_ms, out)
        st.queue_self_alive()

    def verdict_for(self, name: str) -> bytes:
        """What we hold against a member that just pinged us, encoded for its ack (or b"").

        The buddy system the other way round: it asks us, so we tell it. Our suspicion's gossip
        may have been spent while we were cut off from it, and our death notice ages out of
        gossip-to-the-dead after 30 s; without this a member cut off by a partition learns
        either only from our probes (Lifeguard slows them on exactly such a node) or from a
        reconnect push-pull (about one per 30 s cluster-wide when one member is dead). With it,
        the 999 others of a healed 1-vs-999 split see the isolated member alive again within
        5 s; every view is whole only after ~70 s, because the suspicions the isolated member
        kept still reach their subjects slowly (simulations/results/README.md, "Partition").
        A member that left is not told anything. The verdict is ours, signed (the pinger knows
        us: it is probing us; it may not know whoever accused it first)."""
        m = self._table.get(name)
        if m is None or m.proof is None:
            return b""
        st = self.state
        p = m.proof
        if m.state is SUSPECT:
            st.count("suspicions.told")
            if p.accuser == st.name:
                return encode(Suspect(m.name, m.incarnation, st.name, p.accusation))
            return encode(st.sign_suspect(m.name, m.incarnation))
        if m.state is DEAD:
            st.count("deaths.told")
            if p.accuser == st.name:
                return encode(Dead(m.name, m.incarnation, st.name, False, p.accusation))
            return encode(st.sign_dead(m.name, m.incarnation))
        return b""

    def reap(self, timer: Timer, now_ms: Millis, out: list[Effect]) -> None:
        """Forget a member dead or left for ``dead_reap_ms`` (unless it came back since)."""
        st = self.state
        m = self._table.get(timer.name)
        if (
            m is None
            or m.name == st.name
            or m.state not in (DEAD, LEFT)
            or m.incarnation != timer.incarnation
            or now_ms < (self._table.gone_since(m.name) or 0) + st.config.dead_reap_ms
        ):
            st.count("timers.stale")
            return
        self._table.remove(m.name)
        self._suspicions.pop(m.name, None)
        self._pending.pop(m.name, None)
        if self.prober is not None:
            self.prober.forget(m.name)
        st.count("reaped")
        out.append(MemberReaped(m.name))

    def gossip(self, now_ms: Millis, out: list[Effect]) -> None:
        """One gossip round: queued news to ``gossip_nodes`` random members (see above)."""
        if not len(self._broadcasts):
            return
        st = self.state
        cfg = st.config
        dead_after = now_ms - cfg.gossip_to_dead_ms
        gone_since = self._table.gone_since

        def accept(m: Member) -> bool:
            state = m.state
            if state is ALIVE or state is SUSPECT:
                return True
            since = gone_since(m.name) if state is DEAD else None
            return since is not None and since >= dead_after

        budget = cfg.packet_size_bytes - PACKET_OVERHEAD_BYTES
        limit = st.retransmit_limit()
        for m in self._table.random_members(cfg.gossip_nodes, accept):
            parts = self._broadcasts.get(budget, limit, m.name)
            if not parts:
                break
            out.append(SendPacket(m.address, encode_packet(parts)))
            st.stats["packets.out"] += 1


def proof_behind(cur: Member) -> bool:
    """Is ``cur`` held at an incarnation above the subject's own claim we hold (accused at
    one above it), so that its claim at that incarnation would still teach us something?"""
    p = cur.proof
    return p is not None and p.alive_incarnation < cur.incarnation


def accused(cur: Member, accuser: str, signature: bytes) -> Proof:
    """``cur``'s proof with the accusation that now stands against it."""
    p = cur.proof
    assert p is not None, "the core keeps a proof with every snapshot"
    return Proof(p.cert, p.alive_incarnation, p.alive_signature, accuser, signature)
