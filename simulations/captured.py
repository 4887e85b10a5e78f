"""Captured hosts: members whose key an attacker holds, forging membership from inside the mesh.

Theory of operation
-------------------
Issue 11's "captured node": an attacker holds the gossip key and one node's credentials. Here a
captured host keeps running its real, honest core (it stays a member: its own word and its own
accusations are valid) and, on top, every ``period_ms`` during the attack window sends one burst
of forged membership traffic from its own address, through the simulated network like any other
datagram, to a random live host, cycling through:

- ``Alive`` of another live host at a higher incarnation and the attacker's address, under the
  attacker's certificate; and the same under the victim's (public) certificate, signed by the
  attacker (nobody may speak for another node);
- ``Alive`` of invented members, under the attacker's certificate and under junk certificates
  (a member with no valid certificate for its name is never added);
- ``Suspect`` and ``Dead`` of a live host at ``2**62``, validly signed by the attacker (no
  packet may push a member past what it can refute), and a leave of a live host (only a member
  itself can leave);
- a push-pull of ``invented_per_push`` invented members (a flood must cost a bounded amount).

What must hold is checked by ``checkers.forgeries_refused`` from the cluster's ledger: no host
ever believed an incarnation above what its subject signed + 1, an address that is not the
subject's, a leave the subject never made, or a member that does not exist. The usual checks
must still pass too: failure detection of real crashes goes on under the attack.
"""

from __future__ import annotations

import random
from collections import Counter

from gossipmesh.ids import Address
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim
from gossipmesh.swim.member import Member, MemberState, Proof
from gossipmesh.swim.messages import Alive, Dead, Message, Suspect, encode
from gossipmesh.swim.state_codec import PushPull
from gossipmesh.swim.state_codec import encode_push_pull as encode_state
from gossipmesh.wire import encode_packet
from simulations.cluster import Cluster
from simulations.hosts import UP

HUGE = 1 << 62


class Attacker:
    """One captured host (see the module docstring)."""

    def __init__(
        self,
        c: Cluster,
        idx: int,
        rng: random.Random,
        *,
        until_ms: int,
        period_ms: int = 200,
        invented_per_push: int = 2_000,
    ) -> None:
        self.c = c
        self.idx = idx
        self.host = c.nodes[idx]
        self.rng = rng
        self.until_ms = until_ms
        self.period_ms = period_ms
        self.invented_per_push = invented_per_push
        self.auth = c.identities.authority(self.host.name, c.wall_ms)
        self.sent: Counter[str] = Counter()
        self._step = 0
        self._invented = 0

    def start(self, at_ms: int) -> None:
        self.c.at(at_ms, self._tick)

    def _tick(self) -> None:
        c = self.c
        now = c.engine.now_ms
        if now >= self.until_ms or self.host.state != UP:
            return
        live = [n.idx for n in c.nodes if n.state == UP and n.idx != self.idx]
        if len(live) >= 2:
            target, victim = self.rng.sample(live, 2)
            actions = (self._forge_alive, self._invent, self._accuse, self._push_invented)
            actions[self._step % len(actions)](target, victim)
            self._step += 1
        c.at(now + self.period_ms, self._tick)

    def _send(self, target: int, kind: str, *msgs: Message) -> None:
        self.c.send_from(
            self.idx, self.c.nodes[target].address, encode_packet([encode(m) for m in msgs])
        )
        self.sent[kind] += len(msgs)

    def _own_claim(self, incarnation: int, address: Address) -> bytes:
        """The attacker's signature over its own alive claim (all it can sign for alive)."""
        return self.auth.sign_alive(AliveClaim(self.host.name, incarnation, address, b""))

    def _forge_alive(self, target: int, victim: int) -> None:
        c = self.c
        v = c.nodes[victim]
        inc = c.signed_max[victim] + 5
        sig = self._own_claim(inc, self.host.address)
        under_own = Alive(v.name, inc, self.host.address, b"", self.auth.certificate, sig)
        victim_cert = c.identities.credentials(v.name).cert_der  # certificates are public
        under_victims = Alive(v.name, inc, self.host.address, b"", victim_cert, sig)
        self._send(target, "forged_alive", under_own)
        self._send(target, "forged_alive", under_victims)

    def _invent(self, target: int, victim: int) -> None:
        k = self._invented
        self._invented += 2
        address = Address(f"192.0.2.{k % 250 + 1}", 7946)
        sig = self._own_claim(0, address)
        own_cert = Alive(f"ghost-{k}", 0, address, b"", self.auth.certificate, sig)
        junk = Alive(
            f"ghost-{k + 1}", 0, address, b"", b"\x30\x82" + k.to_bytes(8, "big") * 50, sig
        )
        self._send(target, "invented", own_cert, junk)

    def _accuse(self, target: int, victim: int) -> None:
        name = self.c.nodes[victim].name
        me = self.host.name
        sign = self.auth.sign_accusation
        suspect = Suspect(name, HUGE, me, sign(Accusation(AccusationKind.SUSPECT, name, HUGE, me)))
        dead = Dead(name, HUGE - 1, me, False,
                    sign(Accusation(AccusationKind.DEAD, name, HUGE - 1, me)))  # fmt: skip
        inc = self.c.signed_max[victim]
        own_leave = sign(Accusation(AccusationKind.LEFT, me, inc, me))
        leave = Dead(name, inc, name, True, own_leave)  # its own leave signature, renamed
        self._send(target, "accusation", suspect, dead)
        self._send(target, "forged_leave", leave)

    def _push_invented(self, target: int, victim: int) -> None:
        base = self._invented
        self._invented += self.invented_per_push
        cert = self.auth.certificate
        records = tuple(
            Member(
                f"ghost-{base + i}",
                Address("192.0.2.1", 7946),
                0,
                MemberState.ALIVE,
                b"",
                Proof(cert, 0, b"\x07" * 64),
            )  # fmt: skip
            for i in range(self.invented_per_push)
        )
        data = encode_state(PushPull(False, records))
        self.c.push_pull_from(self.idx, self.c.nodes[target].address, data)
        self.sent["invented_push_pull"] += len(records)


def install(
    c: Cluster, count: int, rng: random.Random, start_ms: int, until_ms: int
) -> list[Attacker]:
    """Capture ``count`` random hosts and start their attacks at ``start_ms``."""
    idxs = rng.sample(range(len(c.nodes)), count)
    attackers = [Attacker(c, i, rng, until_ms=until_ms) for i in sorted(idxs)]
    for a in attackers:
        a.start(start_ms + rng.randrange(a.period_ms))
    return attackers
