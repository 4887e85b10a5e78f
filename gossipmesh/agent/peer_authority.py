"""The agent's judgement of the certificates mesh peers present (the proxy's ``PeerAuthority``).

Theory of operation
-------------------
A peer on the mesh hop presents either a workload certificate (``spiffe://CLUSTER/svc/NAME``,
issued by its node's key and carrying that node's certificate) or its node certificate itself.
It is accepted when, at this agent's wall clock:

1. the chain reaches a root this agent trusts and every certificate in it is within its validity
   window and not revoked (``agent.identity.trust``: the one ``TrustStore`` that ``TrustSync``
   keeps in step with the signed document's revocations and roots; read on every call, never
   copied);
2. for a workload, the catalog says the issuing node hosts that service: a node can issue a
   certificate for any name (X.509 name constraints cannot restrict a URI path), so the signed
   node records, filtered by the services' ``nodes``, are what ties a name to a node;
3. on the dialling side, it is the service asked for, on the node the endpoint belongs to.

``version`` changes with the trust store's version and with every catalog change that alters
"who hosts what", which makes the proxy's ``PeerWatch`` ``recheck`` every live connection (each
judgement is memoised by the store, so a recheck of a thousand connections from a handful of
certificates costs a handful of verifications). Refusals are reason slugs: the store's
(``revoked``, ``expired``, ``unknown_root``, ``wrong_kind`` ...) or ``not_hosting``,
``wrong_node``, ``no_certificate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from gossipmesh.identity import CLOCK_SKEW_MS, IdKind, Reason, Rejected, VerifiedIdentity
from gossipmesh.proxy.peers import Peer

if TYPE_CHECKING:
    from gossipmesh.identity.truststore import TrustStore


def wall_ms() -> int:
    return int(time.time() * 1000)


class Trusting(Protocol):
    """What the authority reads of its holder: the agent's ``AgentIdentity``, or a proxy
    worker's copy of the trust store (agent/proxy_worker.py)."""

    @property
    def trust(self) -> TrustStore: ...


class MeshAuthority:
    def __init__(
        self, identity: Callable[[], Trusting], clock: Callable[[], int] = wall_ms
    ) -> None:
        self.identity = identity  # the agent's current identity (a reload replaces it)
        self.clock = clock
        self.hosts: Mapping[str, frozenset[str]] = {}  # node -> services it may serve
        self.hosts_generation = 0
        self.trust_seen = identity().trust
        self.stores = 0

    @property
    def version(self) -> int:
        trust = self.identity().trust
        if trust is not self.trust_seen:
            # A reload made a new store, whose own counter may equal the old one's.
            self.trust_seen = trust
            self.stores += 1
        return trust.version + (self.hosts_generation << 32) + (self.stores << 48)

    def wall_ms(self) -> int:
        return self.clock()

    def update_hosts(self, hosts: Mapping[str, frozenset[str]]) -> None:
        """The catalog's "node N hosts service S" facts (instances the config allows)."""
        if hosts != self.hosts:
            self.hosts = dict(hosts)
            self.hosts_generation += 1

    # -- PeerAuthority ---------------------------------------------------------------------

    def check_client(self, der: bytes) -> Peer | str:
        return self.judge(der, None, None)

    def check_server(self, der: bytes, service: str, node: str) -> Peer | str:
        return self.judge(der, service, node)

    def recheck(self, peer: Peer) -> str | None:
        verdict = self.judge(peer.der, peer.service or None, peer.node)
        return verdict if isinstance(verdict, str) else None

    # -- the checks ------------------------------------------------------------------------

    def judge(self, der: bytes, service: str | None, node: str | None) -> Peer | str:
        """``der`` as a caller (``service`` None: a workload of a service its node hosts, or a
        node itself) or as ``service`` on ``node``."""
        if not der:
            return "no_certificate"
        trust = self.identity().trust
        now = self.clock()
        verdict = trust.verify_carried_workload(der, now, service=service)
        if isinstance(verdict, Rejected):
            if verdict.reason is not Reason.WRONG_KIND or service is not None:
                return str(verdict.reason)
            verdict = trust.verify_node(der, now, name=node)  # a node's own identity
            if isinstance(verdict, Rejected):
                return str(verdict.reason)
            return _peer(verdict, "", verdict.name, der)
        issuer = verdict.node
        assert issuer is not None  # a verified workload always names its node
        if node is not None and issuer.name != node:
            return "wrong_node"
        if verdict.name not in self.hosts.get(issuer.name, ()):
            return "not_hosting"
        return _peer(verdict, verdict.name, issuer.name, der)


def _peer(v: VerifiedIdentity, service: str, node: str, der: bytes) -> Peer:
    # The certificate was issued CLOCK_SKEW_MS after its not_before (certs.py backdates it);
    # its holder renews it at the middle of its life.
    issued_ms = min(v.not_before_ms + CLOCK_SKEW_MS, v.not_after_ms)
    retire_ms = issued_ms + (v.not_after_ms - issued_ms) // 2
    assert v.kind in (IdKind.WORKLOAD, IdKind.NODE)
    return Peer(v.spiffe_id.uri, service, node, v.fingerprint, v.not_after_ms, retire_ms, der)


__all__ = ["MeshAuthority", "Trusting", "wall_ms"]
