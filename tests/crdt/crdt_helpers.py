"""Shared helpers for the CRDT tests: an observable snapshot of a replica."""

from __future__ import annotations

from typing import Any

from gossipmesh.crdt.document import Document


def snapshot(doc: Document) -> tuple[Any, ...]:
    """Everything replicas must agree on: entries (with suspect marks), context, root hash."""
    entries = tuple(sorted((e.key, e.writer, e.counter, e.hlc, e.context, e.value, e.suspect)
                           for e in doc.entries()))  # fmt: skip
    return (entries, doc.context(), doc.root_hash)


def merged(*docs: Document, wall_ms: int = 1_800_000_000_000) -> Document:
    out = Document()
    for d in docs:
        out.merge(d.full_state(), wall_ms)
    return out
