"""Local writes in two phases: what ``prepare`` proposes and what ``commit`` checks (sans-IO).

Theory of operation
-------------------
An agent cannot sign config: operators do (DESIGN-11 D4). So a local write is a *proposal*, made
here from the document (``propose``: the exact unsigned entries under this replica's writer, with
fresh counters, an HLC reading and each key's context derived from its current siblings), signed
by an operator elsewhere, and brought back to ``commit``, which applies it only if
``check_commit`` finds every entry

- in range, signed, under this replica's writer, with counters nobody used meanwhile;
- still current: the key's context is still exactly what its siblings derive, and the HLC is
  within ``max_skew_ms`` of our wall clock (older: ``StaleWriteError``, prepare again);
- of an acceptable value (size, encoding, the injected validator);
- admitted by the authority (signature, chain, right to write that key; a certificate or root
  statement of the same batch vouches for the others), and counting under the current policy
  (a revoked or expired signer's write is refused, not stored as void).

Every refusal names the key and carries a slug (``RefusedWriteError.reason``) that the runtime
counts as ``config.refused.REASON``. Nothing is changed until every check passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gossipmesh.crdt.authority import Overlay, SignerInfo
from gossipmesh.crdt.entries import (
    MAX_BATCH_ENTRIES,
    MAX_COUNTER,
    Dot,
    Entry,
    authority_rank,
    bounds_problem,
    check_key,
    check_writer,
    derived_context,
    pack,
)
from gossipmesh.errors import LimitExceededError, UsageError

if TYPE_CHECKING:
    from gossipmesh.crdt.document import Document

DEFAULT_COMMIT_SKEW_MS = 60_000  # a proposal older than this (or as far ahead) is stale


class StaleWriteError(UsageError):
    """A signed proposal no longer matches the document (or is too old): prepare it again."""


class RefusedWriteError(UsageError):
    """A signed write was refused; ``reason`` is the counter slug (``config.refused.REASON``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class WriterExhaustedError(UsageError):
    """The writer's counter would pass ``MAX_COUNTER``: the replica must start a new writer id."""


def propose(
    doc: Document, items: Sequence[tuple[str, Mapping[str, Any] | None]], writer: str, wall_ms: int
) -> tuple[Entry, ...]:
    check_writer(writer)
    if len(items) > MAX_BATCH_ENTRIES:
        raise LimitExceededError(f"items: {len(items)} is over the limit of "
                                 f"{MAX_BATCH_ENTRIES} per batch")  # fmt: skip
    prepared: list[tuple[str, bytes | None]] = []
    size_after = doc.size_bytes
    for key, value in items:
        check_key(key)
        if any(k == key for k, _ in prepared):
            raise UsageError(f"{key}: appears twice in one batch")
        if value is None:
            if not doc.absent(key):
                prepared.append((key, None))
            continue
        if doc.validator is not None:
            doc.validator(key, value)
        try:
            data = pack(dict(value))
        except (TypeError, ValueError, OverflowError) as e:
            raise UsageError(f"{key}: value is not msgpack-able: {e}") from None
        if len(data) > doc.max_entity_bytes:
            raise LimitExceededError(
                f"{key}: entity is {len(data)} bytes encoded, over the entity limit of "
                f"{doc.max_entity_bytes} bytes (max_entity_bytes)")  # fmt: skip
        prepared.append((key, data))
        size_after += len(data) - doc.held_bytes(key)
    if size_after > doc.max_document_bytes:
        raise LimitExceededError(
            f"document would be {size_after} bytes, over the document limit of "
            f"{doc.max_document_bytes} bytes (max_document_bytes)")  # fmt: skip
    top = doc.top(writer)
    if top + len(prepared) > MAX_COUNTER:
        raise WriterExhaustedError(f"writer {writer} has used every counter")
    return tuple(Entry(key, writer, top + i, doc.clock.now(wall_ms),
                       derived_context(doc.stored(key)), payload)
                 for i, (key, payload) in enumerate(prepared, start=1))  # fmt: skip


def check_commit(
    doc: Document, entries: Sequence[Entry], writer: str, wall_ms: int, max_skew_ms: int
) -> tuple[list[Entry], dict[Dot, SignerInfo]]:
    """The batch in the order to apply it and each entry's signer, or an error (see above)."""
    if len(entries) > MAX_BATCH_ENTRIES:
        raise LimitExceededError(f"entries: {len(entries)} is over the limit of "
                                 f"{MAX_BATCH_ENTRIES} per batch")  # fmt: skip
    if len({e.key for e in entries}) != len(entries):
        raise UsageError("entries: a key appears twice in one batch")
    if len({e.counter for e in entries}) != len(entries):
        raise UsageError("entries: a counter appears twice in one batch")
    size_after = doc.size_bytes
    for e in entries:
        problem = bounds_problem(e)
        if problem is not None:
            raise RefusedWriteError("bounds", f"{e.key}: {problem}")
        if e.writer != writer:
            raise RefusedWriteError("writer", f"{e.key}: writer {e.writer!r} is not this "
                                    f"agent's writer {writer!r}")  # fmt: skip
        if not e.is_signed or e.suspect:
            raise RefusedWriteError("unsigned", f"{e.key}: not signed")
        if e.counter <= doc.top(writer):
            raise StaleWriteError(f"{e.key}: counter {e.counter} was used meanwhile")
        if e.context != derived_context(doc.stored(e.key)):
            raise StaleWriteError(f"{e.key}: the key changed since it was prepared")
        if wall_ms - e.hlc.wall_ms > max_skew_ms:
            raise StaleWriteError(f"{e.key}: prepared more than {max_skew_ms} ms ago")
        if e.hlc.wall_ms - wall_ms > max_skew_ms:
            raise RefusedWriteError("clock", f"{e.key}: timestamp is in the future")
        reason = doc.content_refusal(e, size_after)
        if reason is not None:
            raise RefusedWriteError(reason, f"{e.key}: {reason.replace('_', ' ')}")
        size_after += e.size_bytes - doc.held_bytes(e.key)
    view = Overlay(doc, sorted(entries, key=lambda x: authority_rank(x.key)))
    signers: dict[Dot, SignerInfo] = {}
    for e in view.batch:
        admitted = doc.authority.admit(e, view)
        if isinstance(admitted, str):
            raise RefusedWriteError(admitted, f"{e.key}: {admitted.replace('_', ' ')}")
        view.admitted(e, admitted)
        signers[e.dot] = admitted
        void = doc.policy.void_reason(e, admitted)
        if void is not None:
            raise RefusedWriteError(f"void_{void}", f"{e.key}: the signer may not write it "
                                    f"now ({void.replace('_', ' ')})")  # fmt: skip
    return view.batch, signers


__all__ = [
    "DEFAULT_COMMIT_SKEW_MS",
    "RefusedWriteError",
    "StaleWriteError",
    "WriterExhaustedError",
    "check_commit",
    "propose",
]
