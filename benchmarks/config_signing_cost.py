"""CPU cost of signed configuration, per config write and per merged entry, and bytes per entry.

Not a test; no network, no files. In one process, with the agent's own ``Document`` and
``ConfigAuthority`` and the CLI's ``ProposalSigner`` (what ``POST /v1/config/prepare``, the CLI
and ``POST /v1/config/commit`` run, minus HTTP and the fsync), for ``--n`` single-entity writes
over 100 keys (so each write replaces one signed sibling, which the CLI verifies):

- ``prepare``: the agent's proposal (validation, counters, HLC, context);
- ``check + sign``: the CLI's checks (the sibling's signature and chain, the context, the value)
  and one P-256 signature;
- ``commit``: the agent's checks and admission (the signature verified once: a memo miss), then
  the write applied (supersession, known map, Merkle leaf);
- ``merge, new entry``: a peer merging that entry (a new signature: verified, a memo miss);
- ``merge, memoised``: the same entry merged by another replica sharing the signature memo (the
  simulator's case; an agent meets each signature once anyway);
- ``merge, unsigned before``: the same merge with signatures ignored (a stub authority), to
  show what the checks add.

Each row is the median over ``--rounds`` rounds of process CPU µs per operation. Then the bytes
an entry takes on the wire now and in the pre-issue-11 format.

    python benchmarks/config_signing_cost.py [--n 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import msgpack

from gossipmesh.agent.config_json import proposal_json
from gossipmesh.config.authority import ConfigAuthority, SignatureMemo, TrustPolicy
from gossipmesh.config.schema import check_entry
from gossipmesh.config.signing import ProposalSigner
from gossipmesh.config.trust import cert_key
from gossipmesh.crdt.authority import OPERATOR, DocumentView, SignerInfo
from gossipmesh.crdt.document import Delta, Document, Entry
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.identity import CaCredentials, OperatorCredentials

NOW_MS = 1_790_000_000_000
BODY = {"destinations": [{"service": "api", "weight": 90}, {"service": "api-v2", "weight": 10}]}
WRITER = "node-0001@0badc0de"


class NoChecks:
    """An authority that admits everything: the cost of the CRDT alone."""

    version = 0

    def admit(self, entry: Entry, view: DocumentView) -> SignerInfo:
        return SignerInfo(entry.signer, OPERATOR, "x", b"r", 0, 2**62)

    def policy(self, view: DocumentView) -> Any:
        return TrustPolicy({}, {}, {}, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="writes per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ca = CaCredentials.generate("bench", now_ms=NOW_MS - 86_400_000)
    op = OperatorCredentials.issue(ca, "alice", now_ms=NOW_MS - 86_400_000)
    signer = ProposalSigner.for_operator(op)
    rows: dict[str, list[float]] = {}
    sizes: list[tuple[int, int]] = []
    for _ in range(args.rounds):
        memo = SignatureMemo()
        agent = Document(ConfigAuthority("bench", [ca.cert_der], memo), check_entry)
        peer = Document(ConfigAuthority("bench", [ca.cert_der], SignatureMemo()), check_entry)
        shared = Document(ConfigAuthority("bench", [ca.cert_der], memo), check_entry)
        plain = Document(NoChecks(), check_entry)
        cert = [(cert_key(signer.fingerprint), {"der": signer.prepare_request({})["certificate"]})]
        first = agent.prepare(cert, WRITER, NOW_MS)
        body = signer.sign(proposal_json(agent, "bench", "node-0001", WRITER, first),
                           dict(cert), "node-0001", NOW_MS)  # fmt: skip
        from gossipmesh.agent.config_json import from_wire
        from gossipmesh.config.signing import WireEntry

        seed = agent.commit([from_wire(WireEntry.from_json(e, "e")) for e in body["entries"]],
                            WRITER, NOW_MS)  # fmt: skip
        for doc in (peer, shared, plain):
            assert seed.forward is not None
            doc.merge(seed.forward, NOW_MS)
        t = dict.fromkeys(("prepare", "check + sign", "commit", "merge, new entry",
                           "merge, memoised", "merge, unsigned before"), 0.0)  # fmt: skip
        for i in range(args.n):
            key, wall = f"route/r{i % 100}", NOW_MS + i
            items = {key: BODY}
            c0 = time.process_time()
            proposal = agent.prepare(list(items.items()), WRITER, wall)
            c1 = time.process_time()
            view = proposal_json(agent, "bench", "node-0001", WRITER, proposal)
            c2 = time.process_time()
            signed = signer.sign(view, items, "node-0001", wall)
            entries = [from_wire(WireEntry.from_json(e, "e")) for e in signed["entries"]]
            c3 = time.process_time()
            result = agent.commit(entries, WRITER, wall)
            c4 = time.process_time()
            assert result.forward is not None
            delta = Delta(result.forward.entries)
            peer.merge(delta, wall)
            c5 = time.process_time()
            shared.merge(delta, wall)
            c6 = time.process_time()
            plain.merge(delta, wall)
            c7 = time.process_time()
            t["prepare"] += c1 - c0
            t["check + sign"] += c3 - c2
            t["commit"] += c4 - c3
            t["merge, new entry"] += c5 - c4
            t["merge, memoised"] += c6 - c5
            t["merge, unsigned before"] += c7 - c6
            if i == args.n - 1:
                e = delta.entries[0]
                old = [e.key, e.writer, e.counter, e.hlc.wall_ms, e.hlc.logical,
                       [[w, c] for w, c in e.context], e.value, e.suspect]  # fmt: skip
                old_delta = msgpack.packb([1, 4, [[old], [[], [[e.writer, e.counter]]]]],
                                          use_bin_type=True)  # fmt: skip
                sizes.append((len(encode_delta(delta)), len(old_delta)))
        for name, total in t.items():
            rows.setdefault(name, []).append(total / args.n * 1e6)
    print(f"{args.n} single-entity writes per round, median of {args.rounds} rounds "
          "(process CPU µs per operation)")  # fmt: skip
    for name, samples in rows.items():
        print(f"  {name:<26} {statistics.median(samples):8.1f}")
    write = sum(statistics.median(rows[k]) for k in ("prepare", "check + sign", "commit"))
    print(f"  {'one write, all three':<26} {write:8.1f}")
    now, before = sizes[-1]
    print(
        f"one-entry delta on the wire: {now} bytes now, {before} before "
        f"(+{now - before}: signer 32 + signature 64 + msgpack framing)"
    )


if __name__ == "__main__":
    main()
