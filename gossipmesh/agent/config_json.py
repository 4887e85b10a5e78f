"""The JSON forms of the config document on the admin API: entries, versions, signers, proposals.

``to_wire``/``from_wire`` translate between the core's ``Entry`` and ``config.signing.WireEntry``
(the form an operator checks and signs: values as base64 msgpack bytes, fingerprints in hex).
``entry_view`` and ``version_view`` are what reads show a person: the value decoded, who signed it
(operator name, kind and fingerprint) and, for an entry that does not count, why (``void``).
"""

from __future__ import annotations

import base64
from typing import Any

from gossipmesh.config.signing import WireEntry
from gossipmesh.crdt.document import Document, Entry, Version
from gossipmesh.crdt.entries import CERT_PREFIX, TRUST_PREFIX
from gossipmesh.crdt.hlc import Timestamp

__all__ = ["entry_view", "from_wire", "proposal_json", "signer_view", "to_wire", "version_view"]


def to_wire(e: Entry) -> WireEntry:
    return WireEntry(e.key, e.writer, e.counter, e.hlc.wall_ms, e.hlc.logical, e.context,
                     e.value, e.signer, e.signature, e.suspect)  # fmt: skip


def from_wire(w: WireEntry) -> Entry:
    return Entry(w.key, w.writer, w.counter, Timestamp(w.wall_ms, w.logical), w.context, w.value,
                 w.signer, w.signature, w.suspect)  # fmt: skip


def signer_view(doc: Document, fingerprint: bytes) -> dict[str, Any]:
    info = doc.signer(fingerprint)
    out: dict[str, Any] = {"fingerprint": fingerprint.hex()}
    if info is not None:
        out.update(name=info.name, kind=info.kind)
    return out


def _hlc(ts: Timestamp) -> dict[str, int]:
    return {"wall_ms": ts.wall_ms, "logical": ts.logical}


def entry_view(doc: Document, e: Entry, winner: bool = False) -> dict[str, Any]:
    try:
        value = e.decoded()
    except Exception:  # validated on the way in; be safe for a view
        value = None
    return {
        "writer": e.writer,
        "counter": e.counter,
        "hlc": _hlc(e.hlc),
        "deleted": e.value is None,
        "suspect": e.suspect,
        "winner": winner,
        "value": value,
        "signer": signer_view(doc, e.signer),
        "void": doc.void_reason(e),
    }


def version_view(doc: Document, v: Version) -> dict[str, Any]:
    return {
        "writer": v.writer,
        "counter": v.counter,
        "hlc": _hlc(v.hlc),
        "deleted": v.value is None,
        "current": v.current,
        "suspect": v.suspect,
        "value": v.value,
        "signer": signer_view(doc, v.signer),
        "void": v.void,
    }


def proposal_json(
    doc: Document, cluster: str, node: str, writer: str, entries: tuple[Entry, ...]
) -> dict[str, Any]:
    """What ``POST /v1/config/prepare`` answers: the unsigned entries, the current signed
    siblings of their keys, the certificates of those siblings' signers, and every root
    statement (so the operator can follow a root rotation back to the roots it trusts)."""
    siblings: dict[str, list[dict[str, Any]]] = {}
    certs: dict[str, str] = {}
    for e in entries:
        for s in doc.stored(e.key):
            siblings.setdefault(e.key, []).append(to_wire(s).to_json())
            for c in doc.stored(f"{CERT_PREFIX}{s.signer.hex()}"):
                value = c.decoded() or {}
                if isinstance(value.get("der"), str):
                    certs[s.signer.hex()] = value["der"]
    roots = [to_wire(s).to_json() for s in doc.stored_under(f"{TRUST_PREFIX}root/")]
    return {
        "cluster": cluster,
        "node": node,
        "writer": writer,
        "entries": [to_wire(e).to_json() for e in entries],
        "siblings": siblings,
        "certs": certs,
        "roots": roots,
    }


def der_b64(der: bytes) -> str:
    return base64.b64encode(der).decode()
