"""Node-owned records signed with node certificates: the signer and the verifier the record core takes.

The record core (``gossipmesh.crdt.records``) takes ``sign``/``verify`` callables so it never
imports cryptography; this module is where they come from. A node signs its record with the key
of its node certificate (the key its SWIM claims are signed with, DESIGN-11 D3); a receiver
checks it against the certificate SWIM gave it for that owner (``RecordKeys.learn``, fed by
member events), which must be valid now for exactly that node name. There is no other key to
trust: the Ed25519 key that used to travel in SWIM metadata, and ``DATA_DIR/node.key``, are gone.
Pure: credentials, a verification memo and a wall clock in; callables out.
"""

from __future__ import annotations

from collections.abc import Callable

from gossipmesh.crdt.records import SignedRecord, VerifyOutcome
from gossipmesh.identity import NodeCredentials, Rejected, canonical, fingerprint
from gossipmesh.identity.membership import VerificationMemo

RECORD_DOMAIN = b"gossipmesh/record/v1"
MAX_OWNERS = 65_536  # certificates held, one per member (SWIM bounds the members)


def record_bytes(cluster: str, owner: str, version: int, body: bytes, signer: bytes) -> bytes:
    """The exact bytes a record's signature covers."""
    return canonical(RECORD_DOMAIN, cluster, owner, version, body, signer)


class RecordSigner:
    """Signs this node's own record with its node key (a ``records.Signer``)."""

    def __init__(self, credentials: NodeCredentials) -> None:
        self.credentials = credentials
        self.fingerprint = fingerprint(credentials.cert_der)

    def __call__(self, owner: str, version: int, body: bytes) -> tuple[bytes, bytes]:
        if owner != self.credentials.name:
            raise ValueError(f"{self.credentials.name} cannot sign a record of {owner!r}")
        data = record_bytes(self.credentials.cluster, owner, version, body, self.fingerprint)
        return self.fingerprint, self.credentials.signer.sign(data)


class RecordKeys:
    """owner name -> its node certificate, as SWIM gave it; ``verify`` is a ``records.Verifier``."""

    def __init__(self, cluster: str, memo: VerificationMemo, wall_ms: Callable[[], int]) -> None:
        self.cluster = cluster
        self.memo = memo
        self.wall_ms = wall_ms
        self._certs: dict[str, bytes] = {}

    def learn(self, owner: str, cert: bytes) -> bool:
        """Hold ``cert`` for ``owner`` (the member's certificate, from SWIM); True if new."""
        if self._certs.get(owner) == cert:
            return False
        if owner not in self._certs and len(self._certs) >= MAX_OWNERS:
            self._certs.pop(next(iter(self._certs)))
        self._certs[owner] = cert
        return True

    def forget(self, owner: str) -> None:
        self._certs.pop(owner, None)

    def __contains__(self, owner: object) -> bool:
        return owner in self._certs

    def verify(self, record: SignedRecord) -> VerifyOutcome:
        cert = self._certs.get(record.owner)
        if cert is None:
            return "unknown_owner"
        verdict = self.memo.certificate(cert, record.owner, self.wall_ms())
        if isinstance(verdict, Rejected):
            return "untrusted_owner"
        if verdict.fingerprint != record.signer:
            return "unknown_owner"  # signed under a certificate SWIM has not shown us (yet)
        fields = (RECORD_DOMAIN, record.owner, record.version, record.body)
        ok = self.memo.signature(
            verdict,
            record.signature,
            fields,
            lambda: record_bytes(
                self.cluster, record.owner, record.version, record.body, record.signer
            ),
        )
        return "ok" if ok else "bad_signature"
