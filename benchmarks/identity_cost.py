"""CPU cost of signatures and certificates (gossipmesh.identity), in µs per operation.

Not a test; no network, no files. Each row is the median over ``--rounds`` rounds of the mean
time per operation in a round of ``--n`` operations (process CPU time, so a busy neighbour on the
shared machine slows the wall clock but not these numbers). Rows:

- ``canonical``: encoding an Alive-sized statement (DESIGN-11 D3's fields) to signing bytes;
- ``sign`` / ``verify signature``: P-256 ECDSA-SHA256 over those bytes, raw 64-byte r||s;
  ``verify signature (key bytes)`` also loads the 65-byte SEC1 key each time;
- ``verify node cert, cold``: a TrustStore miss: parse, profile, revocation, the library's chain
  verifier; every operation uses a different certificate;
- ``verify node cert, memoised``: the same certificate again (hash, LRU lookup, window check);
- ``verify workload chain, cold``: leaf + node intermediate + root;
- ``issue node cert``: key generation and a root-signed certificate.

Then the DER size of each kind of certificate.

    python benchmarks/identity_cost.py [--n 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from gossipmesh.identity import (
    CaCredentials,
    NodeCredentials,
    OperatorCredentials,
    Signer,
    TrustStore,
    VerifiedIdentity,
    canonical,
    issue_workload,
    playground_root,
    verify_signature,
)

NOW_MS = 1_767_225_600_000


def per_op_us(fn: Callable[[int], object], n: int, rounds: int) -> float:
    """Median over rounds of the CPU µs per call of ``fn(i)`` for i in range(n)."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for i in range(n):
            fn(i)
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds

    ca = CaCredentials.generate("bench", now_ms=NOW_MS)
    node = NodeCredentials.issue(ca, "node-0001", now_ms=NOW_MS)
    operator = OperatorCredentials.issue(ca, "alice", now_ms=NOW_MS)
    workload = issue_workload(node, "api", Signer.generate().public_key, now_ms=NOW_MS)
    signer = node.signer
    fields = ("node-0001", 12345, "10.0.0.17", 7946, b"m" * 40, bytes(32))
    message = canonical(b"gossipmesh/alive/v1", "bench", *fields)
    sig = signer.sign(message)
    assert verify_signature(signer.public_key, message, sig)

    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "canonical (Alive fields)",
            per_op_us(lambda i: canonical(b"gossipmesh/alive/v1", "bench", *fields), n, rounds),
        )
    )
    rows.append(("sign", per_op_us(lambda i: signer.sign(message), n, rounds)))
    rows.append(
        (
            "verify signature",
            per_op_us(lambda i: verify_signature(signer.public_key, message, sig), n, rounds),
        )
    )
    key_bytes = signer.public_key_bytes
    rows.append(
        (
            "verify signature (key bytes)",
            per_op_us(lambda i: verify_signature(key_bytes, message, sig), n, rounds),
        )
    )

    cold_n = max(50, n // 10)
    certs = [
        NodeCredentials.issue(ca, f"node-{i:04d}", now_ms=NOW_MS).cert_der
        for i in range(cold_n * rounds)
    ]
    store = TrustStore("bench", [ca.cert_der], memo_entries=len(certs) + 10)
    fresh = iter(certs)  # every cold verification gets a certificate never seen before

    def cold(i: int) -> None:
        assert isinstance(store.verify_node(next(fresh), NOW_MS), VerifiedIdentity)

    rows.append(("verify node cert, cold", per_op_us(cold, cold_n, rounds)))
    misses_before = store.chain_verifications
    rows.append(
        (
            "verify node cert, memoised",
            per_op_us(lambda i: store.verify_node(node.cert_der, NOW_MS + i), n, rounds),
        )
    )
    assert store.chain_verifications <= misses_before + 1

    wl_store = TrustStore("bench", [ca.cert_der], memo_entries=1)
    other = NodeCredentials.issue(ca, "other", now_ms=NOW_MS)
    other_wl = issue_workload(other, "api", Signer.generate().public_key, now_ms=NOW_MS)
    pairs = [(workload, node.cert_der), (other_wl, other.cert_der)]  # alternate: always a miss

    def workload_cold(i: int) -> None:
        leaf, inter = pairs[i % 2]
        assert isinstance(wl_store.verify_workload(leaf, inter, NOW_MS), VerifiedIdentity)

    rows.append(("verify workload chain, cold", per_op_us(workload_cold, cold_n, rounds)))
    rows.append(
        (
            "issue node cert (keygen + sign)",
            per_op_us(lambda i: NodeCredentials.issue(ca, f"x{i}", now_ms=NOW_MS), cold_n, rounds),
        )
    )

    print(f"{'operation':34} {'µs/op':>9}")
    for name, us in rows:
        print(f"{name:34} {us:9.1f}")
    print()
    print(f"{'certificate':34} {'DER bytes':>9}")
    sizes = [
        ("root", ca.cert_der),
        ("node (name 'node-0001')", node.cert_der),
        ("operator (name 'alice')", operator.cert_der),
        ("workload (service 'api')", workload),
        ("playground root", playground_root("bench").cert_der),
    ]
    for name, der in sizes:
        print(f"{name:34} {len(der):9d}")
    print(f"{'signature':34} {len(sig):9d}")


if __name__ == "__main__":
    main()
