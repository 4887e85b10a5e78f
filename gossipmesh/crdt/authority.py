"""Who may sign what: the boundary between the config document and cryptography (sans-IO).

Theory of operation
-------------------
The document stores an entry only when an injected ``EntryAuthority`` admits it: the signature
verifies against the certificate the entry names, that certificate chains to a root this replica
knows, and the signer may write that key (DESIGN-11 D4, D5). The core never touches a key or a
certificate: the authority (``gossipmesh.config.authority``, built on ``gossipmesh.identity``)
does, and answers with a ``SignerInfo`` (plain data: kind, name, root, validity window) or a
refusal slug. Certificates travel in the document itself, as ``cert/FINGERPRINT`` entries, and
roots as ``trust/root/FINGERPRINT`` statements; ``DocumentView`` is how the authority reads them.

Whether a stored entry *counts* (wins, is read, drives the data plane) is a second question,
answered by a ``Policy`` the authority derives from the document's trust statements and
revocations: the signer's certificate was valid at the entry's HLC time, its root was trusted
then, and no revocation applies. The policy is a pure function of the stored entries (and of the
roots each replica was configured with), so every replica that holds the same entries shows the
same values. The document recomputes it whenever an authority key changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gossipmesh.crdt.entries import AUTHORITY_PREFIXES, Entry, authority_rank

OPERATOR = "operator"
ROOT = "root"


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """A verified signer: an operator certificate chained to ``root``, or a root itself."""

    fingerprint: bytes
    kind: str  # OPERATOR or ROOT
    name: str
    root: bytes  # the fingerprint of the root it chains to (its own for a root)
    not_before_ms: int
    not_after_ms: int


class DocumentView(Protocol):
    """The document as the authority reads it: stored entries and the signers already admitted."""

    def stored(self, key: str) -> tuple[Entry, ...]: ...

    def stored_under(self, prefix: str) -> Iterable[Entry]: ...

    def signer(self, fingerprint: bytes) -> SignerInfo | None: ...


class Policy(Protocol):
    """Which stored entries count. Pure and deterministic: the same document, the same answers."""

    def void_reason(self, entry: Entry, signer: SignerInfo) -> str | None: ...


class EntryAuthority(Protocol):
    """Admits entries (signature, chain, right to sign that key) and derives the policy."""

    @property
    def version(self) -> int:
        """Bumped when the authority's own anchors (configured roots) change."""
        ...

    def admit(self, entry: Entry, view: DocumentView) -> SignerInfo | str: ...

    def policy(self, view: DocumentView) -> Policy: ...


class Overlay:
    """A ``DocumentView`` of a document plus a batch being admitted: a certificate or a root
    statement in the batch vouches for the batch's other entries, as it will once stored."""

    def __init__(self, base: DocumentView, batch: Sequence[Entry]) -> None:
        self.base = base
        self.batch = list(batch)
        self._extra: dict[str, list[Entry]] = {}
        self._signers: dict[bytes, SignerInfo] = {}

    @property
    def touches_authority(self) -> bool:
        return any(authority_rank(e.key) < len(AUTHORITY_PREFIXES) for e in self.batch)

    def admitted(self, entry: Entry, signer: SignerInfo) -> None:
        self._extra.setdefault(entry.key, []).append(entry)
        self._signers[signer.fingerprint] = signer

    def stored(self, key: str) -> tuple[Entry, ...]:
        return (*self.base.stored(key), *self._extra.get(key, ()))

    def stored_under(self, prefix: str) -> Iterator[Entry]:
        yield from self.base.stored_under(prefix)
        for key, extra in self._extra.items():
            if key.startswith(prefix):
                yield from extra

    def signer(self, fingerprint: bytes) -> SignerInfo | None:
        return self._signers.get(fingerprint) or self.base.signer(fingerprint)


__all__ = [
    "OPERATOR",
    "ROOT",
    "DocumentView",
    "EntryAuthority",
    "Overlay",
    "Policy",
    "SignerInfo",
]
