"""What signed membership (DESIGN-11 D3) costs: CPU per message, bytes per packet and per member,
and the longest single call into the SWIM core (the owner task's worst stall).

Not a test; no network, no files. Three parts:

1. CPU per gossip message, through ``MembershipAuthority`` as the agent uses it (µs of process
   CPU, median of ``--rounds`` rounds of ``--n``): signing our alive claim and an accusation;
   verifying a claim whose certificate is already known (the common case), a claim with a new
   certificate (a join), the same claim seen again (memo hit), and a replayed forgery (memoised
   failure); and a node-owned record through ``RecordSigner``/``RecordKeys`` (sign; verify with
   a cold certificate, a known one, and a memo hit).
2. Bytes: each membership message and one push-pull member record, encoded without and with
   signatures (the pre-issue-11 encodings are rebuilt here from their field lists), and how many
   fit a 1,400-byte packet.
3. Worst stall: the wall time of the longest single core call (``handle_packet``,
   ``handle_push_pull_request``, ``handle_timer``) while a fresh node (cold memo, like an agent
   that just started) merges (a) an honest join reply of ``--members`` members, all new, (b) a
   push-pull of 20,000 invented members under a valid certificate of the wrong name, (c) one
   packet of forged alive claims with junk certificates; and the total CPU for each. A runtime
   interleaves other input between calls, so the longest call is what the event loop feels.

    python benchmarks/membership_cost.py [--n 1000] [--rounds 5] [--members 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack

from gossipmesh.config.identity import RecordKeys, RecordSigner
from gossipmesh.crdt.records import RecordBody, ServiceInstance, encode_record, make_record
from gossipmesh.identity import TrustStore
from gossipmesh.identity.membership import MembershipAuthority, VerificationMemo
from gossipmesh.ids import Address
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.effects import Effect, SetTimer
from gossipmesh.swim.fields import cert_ref
from gossipmesh.swim.member import Member, MemberState, Proof
from gossipmesh.swim.messages import Alive, encode
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.state_codec import PushPull, encode_push_pull
from gossipmesh.swim.timers import TimerKind
from gossipmesh.wire import PACKET_OVERHEAD_BYTES, encode_packet
from simulations.identity import EPOCH_MS, SimIdentities

CLUSTER = "bench"
ADDR = Address("10.1.2.3", 7946)
META = msgpack.packb({"in": ["10.1.2.3", 4143], "out": None, "rv": 1_767_225_600_123})


def per_op_us(fn: Callable[[int], object], n: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for i in range(n):
            fn(i)
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def cpu(n: int, rounds: int) -> list[tuple[str, float]]:
    ids = SimIdentities(CLUSTER, memo_entries=4 * n * rounds + 16)
    a = ids.authority("node-a", lambda: EPOCH_MS)
    alive = [AliveClaim("node-a", i, ADDR, META) for i in range(n * rounds)]
    acc = [Accusation(AccusationKind.SUSPECT, "node-b", i, "node-a") for i in range(n * rounds)]
    sigs = [a.sign_alive(c) for c in alive[:n]]
    acc_sigs = [a.sign_accusation(c) for c in acc[:n]]
    for name in (f"new-{i}" for i in range(n * rounds)):
        ids.credentials(name)  # issue up front: only verification is timed below

    def fresh_checker(signature_entries: int = 20_000) -> MembershipAuthority:
        trust = TrustStore(CLUSTER, roots=[ids.root_der])
        memo = VerificationMemo(trust, signature_entries=signature_entries)
        return MembershipAuthority(ids.credentials("node-c"), memo, lambda: EPOCH_MS)

    known = fresh_checker(signature_entries=1)  # every signature checked, certificate memoised
    known.check_certificate("node-a", a.certificate)
    cold = fresh_checker()
    replay = fresh_checker()
    counter = iter(range(10**9))

    news = [(AliveClaim(f"new-{i}", 0, ADDR, META), ids.credentials(f"new-{i}").cert_der)
            for i in range(n * rounds)]  # fmt: skip

    def verify_new(i: int) -> object:
        claim, cert = news[next(counter)]  # a certificate never seen: chain, then signature
        return cold.verify_alive(claim, cert, b"\x01" * 64)

    forged = AliveClaim("node-a", 0, ADDR, META)
    replay.verify_alive(forged, a.certificate, b"\x02" * 64)
    # The same claim again (a rumour heard from a second peer): the whole verdict is memoised.
    seen = fresh_checker()
    seen.verify_alive(alive[0], a.certificate, sigs[0])
    seen.verify_accusation(acc[0], a.certificate, acc_sigs[0])
    return [
        ("sign our alive claim", per_op_us(lambda i: a.sign_alive(alive[i]), n, rounds)),
        ("sign an accusation", per_op_us(lambda i: a.sign_accusation(acc[i]), n, rounds)),
        ("verify alive claim, certificate known",
         per_op_us(lambda i: known.verify_alive(alive[i], a.certificate, sigs[i]), n, rounds)),
        ("verify accusation, accuser known",
         per_op_us(lambda i: known.verify_accusation(acc[i], a.certificate, acc_sigs[i]), n,
                   rounds)),
        ("verify alive claim, new certificate (chain + signature)",
         per_op_us(verify_new, n // 4, rounds)),
        ("verify alive claim, seen before (memo hit)",
         per_op_us(lambda i: seen.verify_alive(alive[0], a.certificate, sigs[0]), n, rounds)),
        ("verify accusation, seen before (memo hit)",
         per_op_us(lambda i: seen.verify_accusation(acc[0], a.certificate, acc_sigs[0]), n,
                   rounds)),
        ("replayed forgery (memoised failure)",
         per_op_us(lambda i: replay.verify_alive(forged, a.certificate, b"\x02" * 64), n, rounds)),
        *record_cpu(ids, n, rounds),
    ]  # fmt: skip


RECORD_BODY = RecordBody(
    tuple(ServiceInstance(name, "10.1.2.3", 8080 + i, ("v1",), 1, "passing")
          for i, name in enumerate(("web", "api", "db"))),
    ("10.1.2.3", 4143),
)  # fmt: skip


def record_cpu(ids: SimIdentities, n: int, rounds: int) -> list[tuple[str, float]]:
    """A node-owned record (three instances and a proxy address), through ``RecordSigner`` and
    ``RecordKeys`` as the agent uses them: cold certificate, known certificate, memo hit."""
    owner = "node-a"
    sign = RecordSigner(ids.credentials(owner))
    records = [make_record(owner, i + 1, RECORD_BODY, sign) for i in range(n)]
    cert = ids.credentials(owner).cert_der

    def keys(signature_entries: int = 20_000) -> RecordKeys:
        trust = TrustStore(CLUSTER, roots=[ids.root_der])
        memo = VerificationMemo(trust, signature_entries=signature_entries)
        k = RecordKeys(CLUSTER, memo, lambda: EPOCH_MS)
        k.learn(owner, cert)
        return k

    known = keys(signature_entries=1)
    known.verify(records[0])  # the certificate chain, once
    seen = keys()
    seen.verify(records[0])

    fresh = [keys() for _ in range(n // 4 * rounds)]  # each with an empty memo: chain + signature
    counter = iter(range(10**9))

    def cold(i: int) -> object:
        return fresh[next(counter)].verify(records[i])

    return [
        ("sign a node record", per_op_us(lambda i: make_record(owner, i + 1, RECORD_BODY, sign),
                                         n, rounds)),
        ("verify node record, certificate known",
         per_op_us(lambda i: known.verify(records[i]), n, rounds)),
        ("verify node record, cold certificate (chain + signature)",
         per_op_us(cold, n // 4, rounds)),
        ("verify node record, seen before (memo hit)",
         per_op_us(lambda i: seen.verify(records[0]), n, rounds)),
    ]  # fmt: skip


def sizes() -> list[tuple[str, int, int]]:
    """(message, bytes without signatures, bytes with)."""
    ids = SimIdentities(CLUSTER)
    name, accuser = "node-0042", "node-0007"
    alive = ids.alive(name, 17, ADDR, META)
    compact = Alive(name, 17, ADDR, META, cert_ref(alive.cert), alive.signature)
    suspect, dead = ids.suspect(name, 17, accuser), ids.dead(name, 17, accuser)
    leave = ids.dead(name, 17, name, left=True)
    pk = msgpack.packb({"pk": b"k" * 32, **msgpack.unpackb(META)})  # metadata carried a key then
    old_alive = msgpack.packb([5, name, 17, ADDR.host, ADDR.port, pk])
    old_suspect = msgpack.packb([6, name, 17, accuser])
    old_dead = msgpack.packb([7, name, 17, accuser, False])
    old_leave = msgpack.packb([7, name, 17, name, True])
    cert = alive.cert
    record = make_record(name, 1_767_225_600_123, RECORD_BODY, RecordSigner(ids.credentials(name)))
    alive_rec = Member(name, ADDR, 17, MemberState.ALIVE, META, Proof(cert, 17, alive.signature))
    dead_rec = Member(name, ADDR, 17, MemberState.DEAD, META,
                      Proof(cert, 17, alive.signature, accuser, dead.signature))  # fmt: skip
    one = len(encode_push_pull(PushPull(False, ())))
    old_rec = len(msgpack.packb([name, ADDR.host, ADDR.port, 17, 0, pk]))
    return [
        ("Alive, with certificate", len(old_alive), len(encode(alive))),
        ("Alive, certificate by reference", len(old_alive), len(encode(compact))),
        ("Suspect", len(old_suspect), len(encode(suspect))),
        ("Dead", len(old_dead), len(encode(dead))),
        ("Dead (left)", len(old_leave), len(encode(leave))),
        ("push-pull record, alive",
         old_rec, len(encode_push_pull(PushPull(False, (alive_rec,)))) - one),
        ("push-pull record, dead",
         old_rec, len(encode_push_pull(PushPull(False, (dead_rec,)))) - one),
        ("node record, 3 instances (unsigned)", len(msgpack.packb(
            [record.owner, record.version, record.body])), len(encode_record(record))),
    ]  # fmt: skip


class Timed:
    """A node whose every core call is timed (wall clock, like the event loop feels it)."""

    def __init__(self, node: SwimNode) -> None:
        self.node = node
        self.calls: list[float] = []

    def call(self, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        self.calls.append(time.perf_counter() - start)
        return out

    def drain(self, effects: list[Effect]) -> None:
        while True:
            merge = [e for e in effects if isinstance(e, SetTimer)
                     and getattr(e.timer, "kind", None) is TimerKind.MERGE]  # fmt: skip
            if not merge:
                return
            effects = self.call(partial(self.node.handle_timer, merge[0].timer, 0))


def fresh_node(ids: SimIdentities, name: str) -> Timed:
    memo = VerificationMemo(TrustStore(CLUSTER, roots=[ids.root_der]))
    auth = MembershipAuthority(ids.credentials(name), memo, lambda: EPOCH_MS)
    node = SwimNode(name, ADDR, SwimConfig.lan(), random.Random(1), 0, authority=auth)
    node.start(0)
    return Timed(node)


def stalls(members: int) -> list[tuple[str, float, float, int]]:
    """(case, longest call ms, total CPU ms, calls)."""
    ids = SimIdentities(CLUSTER, memo_entries=2 * members + 16)
    seed = ids.authority("seed", lambda: EPOCH_MS)
    records = [
        Member(
            f"m-{i}",
            Address(f"10.9.{i >> 8 & 255}.{i & 255}", 7946),
            0,
            MemberState.ALIVE,
            META,
            Proof(
                ids.credentials(f"m-{i}").cert_der,
                0,
                ids.alive(
                    f"m-{i}", 0, Address(f"10.9.{i >> 8 & 255}.{i & 255}", 7946), META
                ).signature,
            ),
        )  # fmt: skip
        for i in range(members)
    ]
    honest = encode_push_pull(PushPull(False, tuple(records)))
    wrong = tuple(
        Member(f"x{i}", ADDR, 0, MemberState.ALIVE, b"", Proof(seed.certificate, 0, b"\x03" * 64))
        for i in range(20_000)
    )
    invented = encode_push_pull(PushPull(False, wrong))
    junk = [Alive(f"j{i}", 0, ADDR, b"", b"\x30\x82" + bytes([i]) * 400, b"\x04" * 64)
            for i in range(2)]  # fmt: skip
    packet = encode_packet([encode(m) for m in junk])
    out = []
    for label, run in (
        (
            f"honest join reply, {members} new members",
            lambda t: t.drain(t.call(lambda: t.node.handle_push_pull_request(ADDR, honest, 0))[1]),
        ),
        (
            "push-pull of 20,000 invented members",
            lambda t: t.drain(
                t.call(lambda: t.node.handle_push_pull_request(ADDR, invented, 0))[1]
            ),
        ),
        (
            "one packet of forged claims with junk certificates",
            lambda t: t.call(lambda: t.node.handle_packet(ADDR, packet, 0)),
        ),
    ):
        t = fresh_node(ids, "bench-node")
        cpu_start = time.process_time()
        run(t)
        total = time.process_time() - cpu_start
        out.append((label, max(t.calls) * 1000, total * 1000, len(t.calls)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()
    print("CPU per message (µs, median of rounds)")
    for label, us in cpu(args.n, args.rounds):
        print(f"  {label:58s} {us:8.1f}")
    room = SwimConfig.lan().packet_size_bytes - PACKET_OVERHEAD_BYTES
    print(
        f"\nBytes (encoded; a {room}-byte packet body): before -> after, per packet before -> after"
    )
    for label, before, after in sizes():
        print(
            f"  {label:34s} {before:5d} -> {after:5d} (+{after - before:4d})"
            f"   {room // before:3d} -> {room // after:3d}"
        )
    print("\nLongest single core call (the owner task's worst stall) and total CPU")
    for label, longest, total, calls in stalls(args.members):
        print(f"  {label:50s} longest {longest:7.1f} ms   total {total:8.1f} ms   {calls} calls")


if __name__ == "__main__":
    main()
