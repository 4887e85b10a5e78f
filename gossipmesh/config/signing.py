"""Signing config entries: the canonical bytes, their JSON form, and the operator's checks (D4).

Theory of operation
-------------------
A config write has two phases through the admin API. ``POST /v1/config/prepare`` returns the exact
unsigned entries the agent would write (writer, counter, HLC, per-key context, value bytes) and the
current signed siblings of those keys. The operator's side (``ProposalSigner``: the CLI, or any
script) checks the proposal before signing it, because the agent may be a captured node:

- the cluster is the operator's; the writer is ``<the agent's node name>@...``: an agent can only
  propose entries under its own writer id;
- every sibling is signed, by a certificate that chains to a root the operator trusts (its own
  roots, and roots vouched for by trust statements those roots signed);
- each entry's context is exactly what the presented siblings derive, so a write replaces what
  the operator was shown and nothing else (an inflated context would silently swallow someone's
  future writes);
- counters are in range, the HLC is within ``OP_SKEW_MS`` of the operator's own clock, and the
  value bytes decode to exactly the body asked for; the only extra entry allowed is the signer's
  own ``cert/FP``.

It then signs each entry over ``entry_bytes`` (``canonical`` of the config-entry domain, the
cluster, and the entry's fields, signer fingerprint last) and ``POST /v1/config/commit`` sends
them back. Nothing here performs I/O (``gossipmesh.client`` does); it imports no agent code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from gossipmesh.config.trust import ROOT_PREFIX, cert_key
from gossipmesh.errors import UsageError
from gossipmesh.identity import (
    CaCredentials,
    IdKind,
    OperatorCredentials,
    Rejected,
    Signer,
    TrustStore,
    canonical,
    fingerprint,
    load_public_key,
    verify_signature,
)
from gossipmesh.identity.signing import public_key_bytes
from gossipmesh.wire import BAD_BYTES

ENTRY_DOMAIN = b"gossipmesh/config-entry/v1"
OP_SKEW_MS = 60_000  # a proposal's HLC must be this close to the operator's clock
MAX_COUNTER = 2**53 - 1
MAX_LOGICAL = 2**32 - 1
FP_BYTES = 32
SIG_BYTES = 64

Pairs = tuple[tuple[str, int], ...]


class ProposalRefused(UsageError):
    """The agent proposed something the operator must not sign; the message says what."""


def entry_bytes(cluster: str, key: str, writer: str, counter: int, wall_ms: int, logical: int,
                context: Iterable[Sequence[Any]], value: bytes | None, signer: bytes) -> bytes:  # fmt: skip
    """The exact bytes an operator signs for one entry."""
    return canonical(ENTRY_DOMAIN, cluster, key, writer, counter, wall_ms, logical,
                     [[w, c] for w, c in context], value, signer)  # fmt: skip


@dataclass(frozen=True, slots=True)
class WireEntry:
    """An entry as the admin API carries it (JSON), signed or not."""

    key: str
    writer: str
    counter: int
    wall_ms: int
    logical: int
    context: Pairs
    value: bytes | None
    signer: bytes = b""
    signature: bytes = b""
    suspect: bool = False

    def signing_bytes(self, cluster: str) -> bytes:
        return entry_bytes(cluster, self.key, self.writer, self.counter, self.wall_ms,
                           self.logical, self.context, self.value, self.signer)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "writer": self.writer,
            "counter": self.counter,
            "hlc": {"wall_ms": self.wall_ms, "logical": self.logical},
            "context": [[w, c] for w, c in self.context],
            "value": None if self.value is None else _b64(self.value),
        }
        if self.signer:
            out["signer"] = self.signer.hex()
            out["signature"] = _b64(self.signature)
        if self.suspect:
            out["suspect"] = True
        return out

    @classmethod
    def from_json(cls, data: object, where: str) -> WireEntry:
        """Parse strictly; UsageError names the field (``entries[2].hlc.wall_ms: ...``)."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: must be an object")
        allowed = {"key", "writer", "counter", "hlc", "context", "value", "signer", "signature",
                   "suspect", "decoded", "signer_name", "void"}  # fmt: skip
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UsageError(f"{where}.{unknown[0]}: unknown field")
        hlc = data.get("hlc")
        if not isinstance(hlc, dict):
            raise UsageError(f"{where}.hlc: must be an object with wall_ms and logical")
        context = data.get("context")
        if not isinstance(context, list) or len(context) > 4096:
            raise UsageError(f"{where}.context: must be a list of [writer, counter] pairs")
        pairs: list[tuple[str, int]] = []
        for i, pair in enumerate(context):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise UsageError(f"{where}.context[{i}]: must be [writer, counter]")
            pairs.append((pair[0], _int(pair[1], 1, MAX_COUNTER, f"{where}.context[{i}]")))
        if [w for w, _ in pairs] != sorted({w for w, _ in pairs}):
            raise UsageError(f"{where}.context: writers must be unique and ascending")
        value = data.get("value")
        signer = data.get("signer", "")
        suspect = data.get("suspect", False)
        if not isinstance(suspect, bool):
            raise UsageError(f"{where}.suspect: must be true or false")
        return cls(
            key=_str(data.get("key"), f"{where}.key", 256),
            writer=_str(data.get("writer"), f"{where}.writer", 128),
            counter=_int(data.get("counter"), 1, MAX_COUNTER, f"{where}.counter"),
            wall_ms=_int(hlc.get("wall_ms"), 0, MAX_COUNTER, f"{where}.hlc.wall_ms"),
            logical=_int(hlc.get("logical"), 0, MAX_LOGICAL, f"{where}.hlc.logical"),
            context=tuple(pairs),
            value=None if value is None else _unb64(value, f"{where}.value"),
            signer=b"" if signer == "" else _hex(signer, FP_BYTES, f"{where}.signer"),
            signature=_unb64(data.get("signature", ""), f"{where}.signature", SIG_BYTES)
            if signer != ""
            else b"",
            suspect=suspect,
        )


def derived_context(siblings: Iterable[WireEntry]) -> Pairs:
    """The context a write replacing ``siblings`` must carry (the core's rule, restated here
    because the operator's side must not trust the agent's arithmetic)."""
    seen: dict[str, int] = {}
    for s in siblings:
        for w, c in (*s.context, (s.writer, s.counter)):
            if c > seen.get(w, 0):
                seen[w] = c
    return tuple(sorted(seen.items()))


class ProposalSigner:
    """Checks an agent's proposal and signs it: with an operator key (``for_operator``), or with
    a root key for trust statements and operator revocations (``for_root``)."""

    def __init__(self, cluster: str, signer: Signer, cert_der: bytes, roots: Iterable[bytes],
                 cert_entry: bool) -> None:  # fmt: skip
        self.cluster = cluster
        self.signer = signer
        self.cert_der = cert_der
        self.fingerprint = fingerprint(cert_der)
        self.roots = tuple(roots)
        self.cert_entry = cert_entry  # an operator's own cert/FP may join the batch

    @classmethod
    def for_operator(cls, op: OperatorCredentials) -> ProposalSigner:
        return cls(op.cluster, op.signer, op.cert_der, op.roots, cert_entry=True)

    @classmethod
    def for_root(cls, ca: CaCredentials) -> ProposalSigner:
        return cls(ca.trust_domain, ca.signer, ca.cert_der, (ca.cert_der,), cert_entry=False)

    def prepare_request(self, items: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
        body: dict[str, Any] = {"items": {k: None if v is None else dict(v)
                                          for k, v in items.items()}}  # fmt: skip
        if self.cert_entry:
            body["certificate"] = _b64(self.cert_der)
        return body

    def sign(
        self,
        proposal: Mapping[str, Any],
        items: Mapping[str, Mapping[str, Any] | None],
        node: str,
        wall_ms: int,
    ) -> dict[str, Any]:
        """The commit body for ``proposal`` (a prepare answer) of ``items``, asked of the agent
        named ``node``; ProposalRefused if anything is not what the operator asked for."""
        if proposal.get("cluster") != self.cluster:
            raise ProposalRefused(f"the agent is in cluster {proposal.get('cluster')!r}, the "
                                  f"signing key in {self.cluster!r}")  # fmt: skip
        writer = proposal.get("writer")
        if not isinstance(writer, str) or not writer.startswith(f"{node}@"):
            raise ProposalRefused(f"the agent {node!r} proposed writer {writer!r}: an agent may "
                                  "only write under its own name")  # fmt: skip
        entries = _entries(proposal.get("entries"), "entries")
        siblings = self._verified_siblings(proposal)
        expected = dict(items)
        if self.cert_entry:
            extra_key = cert_key(self.fingerprint)
        out = []
        counters: set[int] = set()
        for e in entries:
            where = f"entry {e.key}"
            if e.key in expected:
                want = expected.pop(e.key)
            elif self.cert_entry and e.key == extra_key:
                want = {"der": _b64(self.cert_der)}
            else:
                raise ProposalRefused(f"{where}: not asked for")
            if e.signer or e.suspect:
                raise ProposalRefused(f"{where}: a proposal must be unsigned")
            if e.writer != writer or e.counter in counters:
                raise ProposalRefused(f"{where}: writer or counter is not the proposal's own")
            counters.add(e.counter)
            if abs(e.wall_ms - wall_ms) > OP_SKEW_MS:
                raise ProposalRefused(f"{where}: timestamp {e.wall_ms} is more than "
                                      f"{OP_SKEW_MS} ms from this machine's clock")  # fmt: skip
            if _value(e.value, where) != want:
                raise ProposalRefused(f"{where}: the value is not the one asked for")
            if e.context != derived_context(siblings.get(e.key, ())):
                raise ProposalRefused(f"{where}: the context does not match the current "
                                      "versions the agent showed")  # fmt: skip
            signed = replace(e, signer=self.fingerprint)
            out.append(
                replace(signed, signature=self.signer.sign(signed.signing_bytes(self.cluster)))
            )
        for key, want in expected.items():
            if want is not None or siblings.get(key):
                raise ProposalRefused(f"entry {key}: asked for but not proposed")
        return {"entries": [e.to_json() for e in out]}

    def _verified_siblings(self, proposal: Mapping[str, Any]) -> dict[str, list[WireEntry]]:
        """The presented siblings, each verified, by key."""
        store = TrustStore(self.cluster, roots=self.roots)
        certs = proposal.get("certs") or {}
        if not isinstance(certs, dict):
            raise ProposalRefused("certs: must be an object")
        statements = _entries(proposal.get("roots") or [], "roots")
        # Roots vouched for by statements our roots signed (a rotation in progress).
        progress = True
        while progress:
            progress = False
            for s in statements:
                known = {fingerprint(d): d for d in store.roots}
                root = known.get(s.signer)
                der = _statement_der(s)
                if root is None or der is None or fingerprint(der) in known:
                    continue
                pub = load_public_key(_root_key(root))
                if pub is not None and verify_signature(pub, s.signing_bytes(self.cluster),
                                                        s.signature):  # fmt: skip
                    try:
                        store.add_root(der)
                    except UsageError:
                        continue
                    progress = True
        roots = {fingerprint(d): d for d in store.roots}
        raw = proposal.get("siblings") or {}
        if not isinstance(raw, dict):
            raise ProposalRefused("siblings: must be an object")
        out: dict[str, list[WireEntry]] = {}
        for key, items in raw.items():
            for s in _entries(items, f"siblings.{key}"):
                if s.key != key or not s.signer:
                    raise ProposalRefused(f"sibling of {key}: not signed, or of another key")
                if s.signer in roots:
                    pub = load_public_key(_root_key(roots[s.signer]))
                else:
                    der = _unb64(certs.get(s.signer.hex(), ""), f"certs.{s.signer.hex()}")
                    verdict = store.verify_chain(der, IdKind.OPERATOR)
                    if isinstance(verdict, Rejected) or verdict.fingerprint != s.signer:
                        raise ProposalRefused(f"sibling of {key}: its signer {s.signer.hex()[:16]}"
                                              f" does not chain to your roots ({verdict})")  # fmt: skip
                    pub = load_public_key(public_key_bytes(verdict.public_key))
                if pub is None or not verify_signature(pub, s.signing_bytes(self.cluster),
                                                       s.signature):  # fmt: skip
                    raise ProposalRefused(f"sibling of {key}: bad signature")
                out.setdefault(key, []).append(s)
        return out


def _root_key(der: bytes) -> bytes:
    from gossipmesh.identity import parse_certificate

    return public_key_bytes(parse_certificate(der).public_key)


STATEMENT_ERRORS: tuple[type[Exception], ...] = (*BAD_BYTES, KeyError)


def _statement_der(s: WireEntry) -> bytes | None:
    if not s.key.startswith(f"trust/{ROOT_PREFIX}") or s.value is None:
        return None
    try:
        value = msgpack.unpackb(s.value, raw=False)
        return base64.b64decode(value["der"], validate=True)
    except STATEMENT_ERRORS:  # not msgpack, not a mapping with "der", not base64
        return None


def _entries(raw: object, where: str) -> list[WireEntry]:
    if not isinstance(raw, list):
        raise ProposalRefused(f"{where}: must be a list")
    try:
        return [WireEntry.from_json(item, f"{where}[{i}]") for i, item in enumerate(raw)]
    except UsageError as exc:
        raise ProposalRefused(str(exc)) from None


def _value(data: bytes | None, where: str) -> Any:
    if data is None:
        return None
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except BAD_BYTES:
        raise ProposalRefused(f"{where}: the value does not decode") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, where: str, size: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"{where}: must be base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where}: not base64") from None
    if size is not None and len(data) != size:
        raise UsageError(f"{where}: must be {size} bytes")
    return data


def _hex(text: object, size: int, where: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * size:
        raise UsageError(f"{where}: must be {2 * size} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{where}: must be {2 * size} hex digits") from None


def _int(value: object, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{where}: must be an integer in {low}..{high}")
    return value


def _str(value: object, where: str, max_bytes: int) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > max_bytes:
        raise UsageError(f"{where}: must be a string of 1-{max_bytes} bytes")
    return value


__all__ = [
    "ENTRY_DOMAIN",
    "OP_SKEW_MS",
    "ProposalRefused",
    "ProposalSigner",
    "WireEntry",
    "derived_context",
    "entry_bytes",
]
