"""The client's side of a TLS admin API: trust the cluster's roots, accept only one of its nodes.

An agent whose admin address is not loopback serves TLS 1.3 with its node certificate
(agent/admin_tls.py). The client verifies the chain against the cluster roots it was given
(``--ca-file``: a roots PEM such as ``NODE_DIR/roots.pem``, or an operator file from
``gossipmesh ca issue-operator``, whose root certificates are used) and then, with the same
verifier the agents use (``TrustStore.verify_node``), that the certificate is a node
certificate (``spiffe://CLUSTER/node/NAME``) of the roots' cluster, valid now. There is no host
name to check: node certificates name a node, not a DNS name, and any node of the cluster is
entitled to serve its own admin API. Only then does the client send its bearer token.
"""

from __future__ import annotations

import http.client
import ssl
import time
from pathlib import Path

from gossipmesh.errors import UsageError
from gossipmesh.identity import (
    IdKind,
    Rejected,
    TrustStore,
    load_certificates,
    parse_certificate,
)
from gossipmesh.identity.files import certificate_pem

__all__ = ["AdminTLS"]


class AdminTLS:
    """The roots of one cluster, and connections that check the agent against them."""

    def __init__(self, cluster: str, roots: tuple[bytes, ...]) -> None:
        self.cluster = cluster
        self.roots = roots
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_3
        self._context.check_hostname = False  # the SPIFFE id is checked instead (verify_peer)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.load_verify_locations(
            cadata="".join(certificate_pem(der).decode() for der in roots)
        )

    @classmethod
    def load(cls, path: Path) -> AdminTLS:
        """The root certificates in ``path`` (other certificates in it are skipped, so an
        operator file works too); ``UsageError`` (one line) if there are none or they are of
        several clusters."""
        roots = []
        for der in load_certificates(path, "CA file"):
            info = parse_certificate(der)
            if info.kind is IdKind.ROOT:
                roots.append((info.spiffe_id.trust_domain, der))
        if not roots:
            raise UsageError(f"CA file {path} holds no root certificate of a gossipmesh cluster")
        clusters = sorted({cluster for cluster, _ in roots})
        if len(clusters) > 1:
            raise UsageError(f"CA file {path} mixes roots of clusters {', '.join(clusters)}")
        return cls(clusters[0], tuple(der for _, der in roots))

    def verify_peer(self, der: bytes | None) -> None:
        """Raise ``ssl.SSLCertVerificationError`` unless ``der`` is a valid node certificate of
        our cluster."""
        if der is None:
            raise ssl.SSLCertVerificationError("the agent presented no certificate")
        trust = TrustStore(self.cluster, roots=self.roots)
        verdict = trust.verify_node(der, int(time.time() * 1000))
        if isinstance(verdict, Rejected):
            raise ssl.SSLCertVerificationError(
                f"the agent's certificate is not a node of cluster {self.cluster!r}: {verdict}"
            )

    def connection(self, host: str, port: int, timeout_s: float | None) -> _NodeConnection:
        return _NodeConnection(self, host, port, timeout_s, self._context)


class _NodeConnection(http.client.HTTPSConnection):
    def __init__(
        self, tls: AdminTLS, host: str, port: int, timeout_s: float | None, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout_s, context=context)
        self._tls = tls

    def connect(self) -> None:
        super().connect()
        try:
            self._tls.verify_peer(self.sock.getpeercert(binary_form=True))
        except ssl.SSLError:
            self.sock.close()
            raise
