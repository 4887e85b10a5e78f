"""Who may sign what, and which entries count: forgeries refused, revocation and root rotation
decided by the document itself, the same way at every replica (DESIGN-11 D4, D5)."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest
from crdt_helpers import (
    CLUSTER,
    PKI_FROM_MS,
    T0,
    authority,
    cert_entries,
    new_doc,
    operator,
    root,
    sign,
    write,
)

from gossipmesh.config.authority import ConfigAuthority, SignatureMemo
from gossipmesh.config.signing import entry_bytes
from gossipmesh.config.trust import cert_key, revocation_key, root_key
from gossipmesh.crdt.document import Delta, Document, Entry, RefusedWriteError
from gossipmesh.crdt.entries import pack
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.identity import CaCredentials, OperatorCredentials, Signer, fingerprint

DAY_MS = 86_400_000


def signed_by(signer: Signer, cert_der: bytes, entry: Entry) -> Entry:
    fp = fingerprint(cert_der)
    unsigned = replace(entry, signer=fp)
    return unsigned.signed(fp, signer.sign(entry_bytes(CLUSTER, *unsigned.signed_fields())))


def by_root(ca: CaCredentials, key: str, value: dict[str, Any], t: int, n: int = 1) -> Entry:
    e = Entry(key, "ca@0", n, Timestamp(t, 0), (), pack(value))
    return signed_by(ca.signer, ca.cert_der, e)


def by_op(op: OperatorCredentials, key: str, value: Any, t: int, n: int, writer: str) -> Entry:
    e = Entry(key, writer, n, Timestamp(t, 0), (), None if value is None else pack(value))
    return signed_by(op.signer, op.cert_der, e)


def cert_of(op: OperatorCredentials, t: int = T0 - 1000) -> Entry:
    body = {"der": base64.b64encode(op.cert_der).decode()}
    return by_op(op, cert_key(fingerprint(op.cert_der)), body, t, 1, f"{op.name}-cert@0")


def revocation(ca: CaCredentials, op: OperatorCredentials, mode: str, t: int) -> Entry:
    body = {"kind": "operator", "name": op.name, "mode": mode}
    return by_root(ca, revocation_key(fingerprint(op.cert_der)), body, t)


def statement(signer: CaCredentials, subject: CaCredentials, t: int, **kw: str) -> Entry:
    body = {"der": base64.b64encode(subject.cert_der).decode(), **kw}
    return by_root(signer, root_key(fingerprint(subject.cert_der)), body, t)


# ---- forgeries -------------------------------------------------------------------------------


def test_a_forged_entry_under_another_writer_is_refused_and_not_stored() -> None:
    a, b = new_doc(), new_doc()
    route = write(a, "route/web", {"v": "operator"}, "a@1", T0).entries[0]
    b.merge(Delta((route,)), T0)
    # A captured node rewrites the route under the same writer with a higher counter.
    forged = replace(route, counter=route.counter + 10**6, value=pack({"v": "attacker"}))
    other = replace(forged, writer="b@2")
    r = b.merge(Delta((forged, other)), T0)
    assert r.refused_reasons == ("bad_signature", "bad_signature") and r.forward is None
    assert b.get("route/web") == {"v": "operator"} and b.top("a@1") == route.counter


def test_each_refusal_has_its_reason() -> None:
    doc = new_doc()
    ca = root()
    stranger = OperatorCredentials.issue(CaCredentials.generate(CLUSTER, now_ms=PKI_FROM_MS),
                                         "eve", now_ms=PKI_FROM_MS, days=7300)  # fmt: skip
    zero = Entry("route/x", "w@1", 1, Timestamp(T0, 0), (), pack({}), bytes(32), bytes(64))
    cases = {
        "unknown_signer": by_op(operator(0), "route/x", {}, T0, 1, "w@1").signed(
            bytes(32), bytes(64)
        ),
        "bad_signature": replace(sign(zero), value=pack({"x": 1})),
        "untrusted_chain": cert_of(stranger),
        "unauthorized": by_root(ca, "route/x", {}, T0),
    }
    for reason, entry in cases.items():
        assert doc.merge(Delta((entry,)), T0).refused_reasons == (reason,), reason
    trust = by_op(operator(0), root_key(fingerprint(ca.cert_der)),
                  {"der": base64.b64encode(ca.cert_der).decode()}, T0, 1, "w@1")  # fmt: skip
    assert doc.merge(Delta((trust,)), T0).refused_reasons == ("unauthorized",)
    op_revokes_op = by_op(operator(0), revocation_key(fingerprint(operator(1).cert_der)),
                          {"kind": "operator", "name": "op1"}, T0, 2, "w@1")  # fmt: skip
    assert doc.merge(Delta((op_revokes_op,)), T0).refused_reasons == ("unauthorized",)
    delete_cert = by_op(operator(0), cert_key(fingerprint(operator(0).cert_der)), None, T0, 9,
                        "w@1")  # fmt: skip
    assert doc.merge(Delta((delete_cert,)), T0).refused_reasons == ("immutable",)
    assert doc.keys() == new_doc().keys()  # nothing stored


def test_a_write_signed_in_another_cluster_does_not_verify() -> None:
    e = Entry("route/x", "w@1", 1, Timestamp(T0, 0), (), pack({}))
    other = sign(e, cluster="other")
    assert new_doc().merge(Delta((other,)), T0).refused_reasons == ("bad_signature",)


# ---- revocation ------------------------------------------------------------------------------


def test_a_retired_operator_keeps_what_it_wrote_before_the_revocation() -> None:
    doc = new_doc()
    w = "w@1"
    before = by_op(operator(0), "route/old", {"v": 1}, T0, 1, w)
    after = by_op(operator(0), "route/new", {"v": 2}, T0 + 2000, 2, w)
    r = doc.merge(Delta((before, after, revocation(root(), operator(0), "retired", T0 + 1000))), T0)
    assert r.accepted == 3 and r.refused == 0  # stored, all of them ...
    assert doc.get("route/old") == {"v": 1}  # ... but only what came before counts
    assert doc.get("route/new") is None and doc.void_reason(after) == "revoked"
    with pytest.raises(RefusedWriteError, match="revoked"):
        write(doc, "route/later", {"v": 3}, "a@1", T0 + 3000, op=0)
    assert write(doc, "route/later", {"v": 3}, "a@1", T0 + 3000, op=1).entries


def test_a_compromised_operator_voids_everything_it_signed_and_says_which_keys() -> None:
    doc = new_doc()
    write(doc, "route/web", {"v": 1}, "a@1", T0, op=0)
    write(doc, "route/db", {"v": 1}, "a@1", T0, op=1)
    r = doc.merge(Delta((revocation(root(), operator(0), "compromised", T0 + 5000),)), T0)
    assert r.voided >= {"route/web"} and "route/db" not in r.voided
    assert doc.get("route/web") is None and doc.get("route/db") == {"v": 1}
    assert [e for e in doc.siblings("route/web") if doc.void_reason(e) == "revoked"]


def test_an_expired_certificate_counts_only_inside_its_window() -> None:
    short = OperatorCredentials.issue(root(), "brief", now_ms=T0, days=1)
    doc = new_doc()
    in_time = by_op(short, "route/a", {"v": 1}, T0 + 1000, 2, "w@1")
    late = by_op(short, "route/b", {"v": 1}, T0 + 3 * DAY_MS, 3, "w@1")
    doc.merge(Delta((cert_of(short, T0 + 10), in_time, late)), T0 + 3 * DAY_MS)
    assert doc.get("route/a") == {"v": 1} and doc.void_reason(late) == "expired"


# ---- root rotation -----------------------------------------------------------------------------


def test_a_root_rotation_loses_nothing_and_every_replica_agrees() -> None:
    old, new = root(), CaCredentials.generate(CLUSTER, now_ms=PKI_FROM_MS, days=7300)
    op_new = OperatorCredentials.issue(new, "newop", now_ms=PKI_FROM_MS, days=7300)
    doc = new_doc()  # anchored on the old root
    write(doc, "route/kept", {"v": "old"}, "a@1", T0, op=0)
    trust_new = statement(old, new, T0 + 1000)  # signed by the old root
    doc.merge(Delta((trust_new, cert_of(op_new, T0 + 1100))), T0 + 1100)
    doc.merge(Delta((by_op(op_new, "route/new", {"v": "new"}, T0 + 2000, 2, "b@1"),)), T0 + 2000)
    distrust_old = statement(new, old, T0 + 3000, state="distrusted")  # signed by the new root
    late_old = by_op(operator(0), "route/late", {"v": "old"}, T0 + 4000, 5, "c@1")
    r = doc.merge(Delta((distrust_old, late_old)), T0 + 4000)
    assert r.refused == 0
    assert doc.get("route/kept") == {"v": "old"}  # written while the old root was trusted
    assert doc.get("route/new") == {"v": "new"}
    assert doc.get("route/late") is None and doc.void_reason(late_old) == "root_distrusted"
    # A replica configured with the new root only learns the old one from the distrust statement
    # (signed by the new root), and through it everything else: it shows the same values.
    fresh = Document(ConfigAuthority(CLUSTER, [new.cert_der], SignatureMemo()))
    fresh.merge(doc.full_state(), T0 + 5000)
    assert list(fresh.items()) == list(doc.items()) and fresh.root_hash == doc.root_hash


def test_a_statement_by_an_untrusted_root_does_not_count() -> None:
    rogue = CaCredentials.generate(CLUSTER, now_ms=PKI_FROM_MS, days=7300)
    doc = new_doc()
    # Unknown signer: refused outright (no anchor and no statement vouches for the rogue root).
    r = doc.merge(Delta((statement(rogue, rogue, T0),)), T0)
    assert r.refused_reasons == ("unknown_signer",)
    # Known only because a statement carries it, but distrusted: its own statements are void.
    doc.merge(Delta((statement(root(), rogue, T0, state="distrusted", mode="compromised"),)), T0)
    other = CaCredentials.generate(CLUSTER, now_ms=PKI_FROM_MS, days=7300)
    vouched = statement(rogue, other, T0 + 10)
    assert doc.merge(Delta((vouched,)), T0 + 10).accepted == 1
    assert doc.void_reason(vouched) == "root_distrusted"


def test_the_authority_memo_is_shared_and_pure() -> None:
    memo = SignatureMemo()
    a = Document(ConfigAuthority(CLUSTER, [root().cert_der], memo))
    b = Document(authority())
    a.merge(Delta(cert_entries()), T0)
    misses = memo.misses
    Document(ConfigAuthority(CLUSTER, [root().cert_der], memo)).merge(Delta(cert_entries()), T0)
    assert memo.misses == misses and memo.hits >= 2
    b.merge(Delta(cert_entries()), T0)
    assert a.root_hash == b.root_hash
