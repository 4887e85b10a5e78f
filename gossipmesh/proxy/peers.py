"""Who is at the other end of a mesh connection, and for how long we believe it.

Theory of operation
-------------------
The proxy does not judge certificates itself: the agent does (it holds the trust store, the
revocations from the signed document and the catalog of which node hosts which service) and
hands the proxy a ``PeerAuthority``. After a TLS handshake the proxy asks it about the peer's
leaf certificate (``check_client`` on the inbound side, ``check_server`` on the outbound side)
and gets a ``Peer`` or a refusal reason (a counter label).

A ``Peer`` stays attached to its connection (``TlsIO.peer``) and is not taken on trust forever:
``PeerWatch`` holds every live mesh connection and, on every sweep of the watchdog (about a
second), closes those whose peer certificate has expired; whenever the authority's ``version``
changed (a revocation, a root change, a catalog change) it also asks ``recheck`` about each of
them. So a revoked or expired identity loses its connections within a couple of seconds on every
agent, and new handshakes with it are refused by the same checks.

Renewal without dropped requests: every certificate is renewed at the middle of its life, so a
connection is retired (closed instead of reused once idle; ``TlsIO.retire_ns``) when either
end's certificate passes its middle (``retire_ms``): by then both ends present newer ones to new
connections, long before the old ones expire and the sweep would have to cut anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gossipmesh.proxy.clock import NS_PER_MS
from gossipmesh.proxy.metrics import ProxyMetrics

if TYPE_CHECKING:
    from gossipmesh.proxy.tls import TlsIO


@dataclass(frozen=True, slots=True)
class Peer:
    """An identity a TLS handshake proved: a service's workload, or a node itself."""

    spiffe: str  # the SPIFFE id of the certificate
    service: str  # the workload's service; "" for a node's own identity
    node: str  # the node that vouches for it (the issuer of a workload, or the node itself)
    fingerprint: bytes  # the leaf certificate's (identity.fingerprint)
    not_after_ms: int  # wall clock: the end of the chain's validity
    retire_ms: int  # wall clock: the middle of the leaf's life (its holder has renewed by then)
    der: bytes = field(compare=False, repr=False)  # the leaf, judged again on every change


class PeerAuthority(Protocol):
    """The agent's judgement of peer certificates (agent/peer_authority.py)."""

    @property
    def version(self) -> int:
        """Changes whenever a verdict may have changed (trust store, catalog)."""
        ...

    def wall_ms(self) -> int: ...

    def check_client(self, der: bytes) -> Peer | str:
        """A caller's leaf certificate: its identity, or why it is refused."""
        ...

    def check_server(self, der: bytes, service: str, node: str) -> Peer | str:
        """The inbound side we dialled for ``service`` on ``node``: is it that?"""
        ...

    def recheck(self, peer: Peer) -> str | None:
        """Is ``peer`` still trusted now (not revoked, its node still hosts its service)?
        None if so, else the reason to close its connections."""
        ...


class PeerWatch:
    """Every live mesh connection with its peer; closes those no longer trusted."""

    __slots__ = ("authority", "metrics", "live", "seen_version")

    def __init__(self, authority: PeerAuthority, metrics: ProxyMetrics) -> None:
        self.authority = authority
        self.metrics = metrics
        self.live: set[TlsIO] = set()
        self.seen_version = authority.version

    def add(self, io: TlsIO, peer: Peer, now_ns: int, own_retire_ms: int | None = None) -> None:
        """Watch ``io`` from now on; ``own_retire_ms``: when the certificate we presented on it
        passes the middle of its life (the dialling side retires connections then)."""
        io.peer = peer
        io.watch = self
        retire_ms = peer.retire_ms if own_retire_ms is None else min(peer.retire_ms, own_retire_ms)
        io.retire_ns = now_ns + (retire_ms - self.authority.wall_ms()) * NS_PER_MS
        self.live.add(io)

    def forget(self, io: TlsIO) -> None:
        self.live.discard(io)

    def retire_all(self, now_ns: int) -> None:
        """Our own credentials changed: reuse no connection made with the old ones."""
        for io in self.live:
            io.retire_ns = min(io.retire_ns, now_ns)

    def sweep(self) -> int:
        """Close the connections of expired peers and, when the authority changed, of peers it
        no longer trusts; returns how many."""
        authority = self.authority
        wall = authority.wall_ms()
        version = authority.version
        full = version != self.seen_version
        self.seen_version = version
        closed = 0
        for io in list(self.live):
            peer = io.peer
            if peer is None:
                continue
            reason = "expired" if wall > peer.not_after_ms else None
            if reason is None and full:
                reason = authority.recheck(peer)
            if reason is not None:
                m = self.metrics.tls_closed
                m[reason] = m.get(reason, 0) + 1
                self.live.discard(io)
                io.kill()
                closed += 1
        return closed


__all__ = ["Peer", "PeerAuthority", "PeerWatch"]
