"""Shared helpers for the CRDT tests: a small PKI, signed writes, and a replica's observable state.

Every entry is signed for real (P-256) by one of two operators of one test root, through the same
``ConfigAuthority`` the agent uses. Signatures are memoised by their bytes (and verification by
the authority's shared ``SignatureMemo``), so property tests that write the same entries again
stay fast. Every document starts with both operators' ``cert/`` entries, as a replica that has
synced once would: a delta of one operator is then admissible anywhere, in any order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from gossipmesh.config.authority import ConfigAuthority, SignatureMemo
from gossipmesh.config.signing import entry_bytes
from gossipmesh.config.trust import cert_body, cert_key
from gossipmesh.crdt.document import Delta, Document, Entry
from gossipmesh.crdt.entries import Validator, pack
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.identity import CaCredentials, OperatorCredentials, fingerprint

CLUSTER = "test"
T0 = 1_700_000_000_000
PKI_FROM_MS = 1_577_836_800_000  # 2020-01-01: certificates valid 2020-2040
MEMO = SignatureMemo()
_SIGNATURES: dict[tuple[int, bytes], bytes] = {}


@functools.cache
def root() -> CaCredentials:
    return CaCredentials.generate(CLUSTER, now_ms=PKI_FROM_MS, days=7300)


@functools.cache
def operator(i: int = 0) -> OperatorCredentials:
    return OperatorCredentials.issue(root(), f"op{i}", now_ms=PKI_FROM_MS, days=7300)


def authority() -> ConfigAuthority:
    return ConfigAuthority(CLUSTER, [root().cert_der], MEMO)


def sign(entry: Entry, op: int = 0, cluster: str = CLUSTER) -> Entry:
    """``entry`` signed by operator ``op`` (memoised: ECDSA is randomised, the memo keeps one)."""
    creds = operator(op)
    fp = fingerprint(creds.cert_der)
    unsigned = Entry(entry.key, entry.writer, entry.counter, entry.hlc, entry.context,
                     entry.value, fp)  # fmt: skip
    message = entry_bytes(cluster, *unsigned.signed_fields())
    sig = _SIGNATURES.get((op, message))
    if sig is None:
        sig = _SIGNATURES[(op, message)] = creds.signer.sign(message)
    return unsigned.signed(fp, sig)


@functools.cache
def cert_entries() -> tuple[Entry, ...]:
    """Both operators' ``cert/FP`` entries, each signed by its own key."""
    out = []
    for i in (0, 1):
        creds = operator(i)
        fp = fingerprint(creds.cert_der)
        from gossipmesh.config.trust import CertEntry

        body = cert_body(CertEntry(fp.hex(), creds.cert_der))
        e = Entry(cert_key(fp), "seed@0", i + 1, Timestamp(T0 - 1000, 0), (), pack(body))
        out.append(sign(e, i))
    return tuple(out)


def new_doc(validator: Validator | None = None, **kw: Any) -> Document:
    doc = Document(authority(), validator, **kw)
    result = doc.merge(Delta(cert_entries()), T0)
    assert result.accepted == 2, result
    return doc


def write(
    doc: Document, key: str, value: Mapping[str, Any] | None, writer: str, wall_ms: int,
    op: int = 0,
) -> Delta:  # fmt: skip
    """Prepare, sign and commit one write, as the admin API does; the delta it produced."""
    return apply_batch(doc, [(key, value)], writer, wall_ms, op)


def apply_batch(
    doc: Document,
    items: Sequence[tuple[str, Mapping[str, Any] | None]],
    writer: str,
    wall_ms: int,
    op: int = 0,
) -> Delta:
    proposal = doc.prepare(items, writer, wall_ms)
    result = doc.commit([sign(e, op) for e in proposal], writer, wall_ms)
    return result.forward if result.forward is not None else Delta()


def snapshot(doc: Document) -> tuple[Any, ...]:
    """Everything replicas must agree on: entries (with suspect marks), known maps, root hash."""
    entries = tuple(sorted((e.key, e.writer, e.counter, e.hlc, e.context, e.value, e.signer,
                            e.suspect) for e in doc.entries()))  # fmt: skip
    known = tuple(sorted((k, tuple(sorted(v.items()))) for k, v in doc.known_maps().items()))
    return (entries, known, doc.root_hash)


def merged(*docs: Document, wall_ms: int = 1_800_000_000_000) -> Document:
    out = new_doc()
    for d in docs:
        out.merge(d.full_state(), wall_ms)
    return out
