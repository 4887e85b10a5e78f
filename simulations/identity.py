"""Identities for a simulated cluster: one in-process CA, a real certificate for every host.

Theory of operation
-------------------
The simulator drives the real SWIM core, signatures included (DESIGN-11 D3): each simulated host
gets a ``MembershipAuthority`` over its own P-256 node certificate, issued by one CA that exists
only in this process. Three things keep a 10,000-host run feasible and a seed replayable:

- *Deterministic certificates.* Keys are derived from the host name and certificates are built
  with a derived serial, a fixed validity (2020-2120) and deterministic ECDSA, so every run sees
  byte-identical certificates: message sizes, and with them the event trace, do not vary between
  runs. (Claim signatures are still randomised ECDSA, but always 64 bytes, and nothing the core
  decides depends on their value.)
- *One memo for the whole process.* Verification is a pure function of the bytes, the roots, the
  revocations and the clock, so all hosts share one ``VerificationMemo``: a claim that 999 hosts
  receive is verified once (DESIGN-11 D2: a memo of a pure function is behaviour-neutral).
- *A shared wall clock.* Certificates are checked against ``EPOCH_MS`` plus the virtual time.

Every simulated host is named with ``credentials(name)``; a host's certificate is issued the
first time it is asked for (about 0.5 ms) and kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gossipmesh.identity import (
    NodeCredentials,
    SpiffeId,
    TrustStore,
    parse_certificate,
)
from gossipmesh.identity.certs import build_certificate
from gossipmesh.identity.membership import MembershipAuthority, VerificationMemo
from gossipmesh.identity.playground import (
    PLAYGROUND_NOT_AFTER_MS,
    PLAYGROUND_NOT_BEFORE_MS,
    derive_signer,
)
from gossipmesh.ids import Address
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim
from gossipmesh.swim.messages import Alive, Dead, Suspect

CLUSTER = "sim"
# 2026-01-01T00:00:00Z: virtual time 0 of every run, for certificate validity.
EPOCH_MS = 1_767_225_600_000
ROOT_LABEL = b"gossipmesh simulator root/"
NODE_LABEL = b"gossipmesh simulator node/"


class SimIdentities:
    """The CA of one simulated cluster, its hosts' credentials, and the shared memo."""

    def __init__(self, cluster: str = CLUSTER, *, memo_entries: int = 200_000) -> None:
        self.cluster = cluster
        self.root_signer = derive_signer(ROOT_LABEL, cluster)
        self.root_der = build_certificate(
            spiffe_id=SpiffeId.root(cluster),
            public_key=self.root_signer.public_key,
            issuer_signer=self.root_signer,
            issuer=None,
            not_before_ms=PLAYGROUND_NOT_BEFORE_MS,
            not_after_ms=PLAYGROUND_NOT_AFTER_MS,
            serial=_serial(b"root", cluster),
            deterministic=True,
        )
        self._root_info = parse_certificate(self.root_der)
        self.trust = TrustStore(cluster, roots=[self.root_der], memo_entries=memo_entries)
        self.memo = VerificationMemo(
            self.trust, cert_entries=memo_entries, signature_entries=memo_entries
        )
        self._credentials: dict[str, NodeCredentials] = {}

    def credentials(self, name: str) -> NodeCredentials:
        """Host ``name``'s key and certificate (the same bytes in every run)."""
        creds = self._credentials.get(name)
        if creds is None:
            signer = derive_signer(NODE_LABEL, f"{self.cluster}/{name}")
            der = build_certificate(
                spiffe_id=SpiffeId.node(self.cluster, name),
                public_key=signer.public_key,
                issuer_signer=self.root_signer,
                issuer=self._root_info,
                not_before_ms=PLAYGROUND_NOT_BEFORE_MS,
                not_after_ms=PLAYGROUND_NOT_AFTER_MS,
                serial=_serial(b"node/" + name.encode(), self.cluster),
                deterministic=True,
            )
            creds = NodeCredentials(name, self.cluster, signer, der, (self.root_der,))
            self._credentials[name] = creds
        return creds

    def authority(self, name: str, wall_ms: Callable[[], int]) -> MembershipAuthority:
        """The authority of host ``name``, checking against ``wall_ms()``."""
        return MembershipAuthority(self.credentials(name), self.memo, wall_ms)

    # Messages as host ``name`` (or accuser ``by``) would sign them: for tests, and for the
    # simulated captured node, which holds its own key and nobody else's.

    def alive(self, name: str, incarnation: int, address: Address, meta: bytes = b"") -> Alive:
        auth = self.authority(name, _epoch)
        sig = auth.sign_alive(AliveClaim(name, incarnation, address, meta))
        return Alive(name, incarnation, address, meta, auth.certificate, sig)

    def suspect(self, name: str, incarnation: int, by: str) -> Suspect:
        claim = Accusation(AccusationKind.SUSPECT, name, incarnation, by)
        return Suspect(name, incarnation, by, self.authority(by, _epoch).sign_accusation(claim))

    def dead(self, name: str, incarnation: int, by: str, left: bool = False) -> Dead:
        kind = AccusationKind.LEFT if left else AccusationKind.DEAD
        claim = Accusation(kind, name, incarnation, by)
        sig = self.authority(by, _epoch).sign_accusation(claim)
        return Dead(name, incarnation, by, left, sig)


def _epoch() -> int:
    return EPOCH_MS


def _serial(kind: bytes, cluster: str) -> int:
    digest = hashlib.sha256(b"gossipmesh simulator serial/" + kind + b"/" + cluster.encode())
    return (int.from_bytes(digest.digest()[:19], "big") >> 1) + 1
