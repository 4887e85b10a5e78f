"""TrustSync: the agent's TrustStore follows the document's revocations and root statements."""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import replace

from gossipmesh.agent.trust_sync import TrustSync
from gossipmesh.config.authority import ConfigAuthority
from gossipmesh.config.signing import entry_bytes
from gossipmesh.config.trust import revocation_key, root_key
from gossipmesh.crdt.document import Delta, Document, Entry
from gossipmesh.crdt.entries import pack
from gossipmesh.crdt.hlc import Timestamp
from gossipmesh.identity import (
    CaCredentials,
    NodeCredentials,
    Reason,
    Rejected,
    TrustStore,
    fingerprint,
)

NOW = int(time.time() * 1000)


def by_root(ca: CaCredentials, key: str, body: dict[str, str], t: int) -> Entry:
    fp = fingerprint(ca.cert_der)
    e = Entry(key, "ca@0", 1, Timestamp(t, 0), (), pack(body), fp)
    return replace(e, signature=ca.signer.sign(entry_bytes("prod", *e.signed_fields())))


def test_revocations_and_root_statements_reach_the_trust_store() -> None:
    old = CaCredentials.generate("prod", now_ms=NOW - 3_600_000)
    new = CaCredentials.generate("prod", now_ms=NOW - 3_600_000)
    node = NodeCredentials.issue(old, "n1", now_ms=NOW - 3_600_000)
    store = TrustStore("prod", [old.cert_der])
    doc = Document(ConfigAuthority("prod", [old.cert_der]))
    counters: Counter[str] = Counter()
    sync = TrustSync(doc, store, counters)
    assert not sync.sync(NOW) and not isinstance(store.verify_node(node.cert_der, NOW), Rejected)
    # A node revocation: its certificate is refused by every mesh check from now on.
    revoke = by_root(old, revocation_key(fingerprint(node.cert_der)),
                     {"kind": "node", "name": "n1", "mode": "compromised"}, NOW - 1000)  # fmt: skip
    doc.merge(Delta((revoke,)), NOW)
    assert sync.concerns({revoke.key}) and sync.sync(NOW)
    verdict = store.verify_node(node.cert_der, NOW)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.REVOKED
    # A new root trusted by the old; then the old distrusted by the new.
    der = base64.b64encode(new.cert_der).decode()
    doc.merge(Delta((by_root(old, root_key(fingerprint(new.cert_der)), {"der": der},
                             NOW - 900),)), NOW)  # fmt: skip
    sync.sync(NOW)
    assert store.root_fingerprints == {fingerprint(old.cert_der), fingerprint(new.cert_der)}
    old_der = base64.b64encode(old.cert_der).decode()
    distrust = by_root(new, root_key(fingerprint(old.cert_der)),
                       {"der": old_der, "state": "distrusted"}, NOW + 60_000)  # fmt: skip
    doc.merge(Delta((distrust,)), NOW)
    assert sync.sync(NOW) is False  # the distrust's time has not come yet
    assert fingerprint(old.cert_der) in store.root_fingerprints
    assert sync.sync(NOW + 60_000)
    assert store.root_fingerprints == {fingerprint(new.cert_der)}
    assert counters["trust.updates"] == 3
