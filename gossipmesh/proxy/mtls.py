"""Mutual TLS for the mesh hop: the credentials each side presents, as OpenSSL contexts.

Theory of operation
-------------------
Every agent-to-agent hop is TLS 1.3 with a certificate on both sides (docs/SECURITY.md, "Data
plane"). The agent gives the proxy ``MeshCredentials``: its node identity, a workload identity
per local service (``spiffe://CLUSTER/svc/NAME``, issued by the node's key, renewed at the middle
of its life), the trusted roots, and which identity the outbound side presents by default.
``MeshTls`` turns them into ``ssl.SSLContext`` objects, once per update:

- **Server side** (inbound listener): one context per local service plus a default with the
  node's identity; the SNI the caller sends (``sni_name(service)``) picks the destination
  service's certificate. Every context requires a client certificate chaining to the roots.
- **Client side** (outbound hop): per presented identity and per ALPN protocol (``http/1.1`` for
  requests, ``h2`` for HTTP/2 and gRPC, ``gossipmesh-tunnel/1`` for TCP services), SNI set to
  the destination service.

OpenSSL checks the chain to the roots during the handshake (so a plaintext or unauthenticated
connection gets a TLS alert and nothing else); the mesh's own rules (the SPIFFE id, revocation,
"this node hosts this service") are the ``PeerAuthority``'s, right after the handshake
(handshakes.py). An update swaps the contexts: new handshakes use the new certificates and open
connections keep theirs (``PeerWatch`` retires them from the pool).

Session tickets are off (``num_tickets = 0``): a resumed session would skip the client
certificate check, and a ticket arriving on an idle pooled connection would look like junk.
Private keys reach OpenSSL through an anonymous in-memory file (``memfd``), never the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from gossipmesh.proxy.peers import PeerAuthority
from gossipmesh.proxy.tls import ALPN_H2, ALPN_HTTP, ALPN_PROTOCOLS, ALPN_TUNNEL, TlsSocket

_SNI_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SNI_RE = re.compile(rf"{_SNI_LABEL}(?:\.{_SNI_LABEL})*")


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate chain (DER, leaf first) and its private key (PEM, PKCS8)."""

    chain: tuple[bytes, ...]
    key_pem: bytes = field(repr=False)
    retire_ms: int  # wall clock: the middle of the leaf's life, when its holder renews it


@dataclass(frozen=True, slots=True)
class MeshCredentials:
    """What this agent presents on the mesh hop and whom it trusts."""

    node: Credential
    services: Mapping[str, Credential]
    roots: tuple[bytes, ...]
    # The identity an outbound request presents when its listener names none: a local service
    # ("" = the node's own identity). See docs/SECURITY.md for how the agent chooses it.
    default_caller: str = ""


def sni_name(service: str) -> str:
    """The TLS server name that asks an inbound listener for ``service``'s certificate: the name
    itself when it is a valid lower-case host name, else a hash of it."""
    if len(service) <= 253 and _SNI_RE.fullmatch(service):
        return service
    return "h-" + hashlib.sha256(service.encode()).hexdigest()[:48]


def _load_chain(ctx: ssl.SSLContext, cred: Credential) -> None:
    pem = "".join(ssl.DER_cert_to_PEM_cert(der) for der in cred.chain).encode() + cred.key_pem
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("gossipmesh-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="gossipmesh-tls-") as f:  # 0600, removed at once
        f.write(pem)
        f.flush()
        ctx.load_cert_chain(f.name)


def make_context(
    server: bool, cred: Credential, roots: tuple[bytes, ...], alpn: tuple[str, ...]
) -> ssl.SSLContext:
    """A TLS 1.3-only context presenting ``cred`` and requiring a peer chained to ``roots``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identities are SPIFFE URIs, checked by the PeerAuthority
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=b"".join(roots))
    _load_chain(ctx, cred)
    ctx.set_alpn_protocols(list(alpn))
    if server:
        ctx.num_tickets = 0
    return ctx


class MeshTls:
    """The contexts of the mesh hop, rebuilt on every credentials update."""

    __slots__ = (
        "authority",
        "plaintext_inbound",
        "credentials",
        "generation",
        "server_ctx",
        "by_sni",
        "client_ctx",
        "plaintext_peers",
    )

    def __init__(
        self,
        credentials: MeshCredentials,
        authority: PeerAuthority,
        *,
        plaintext_inbound: bool = False,
    ) -> None:
        self.authority = authority
        # Migration only: the inbound also takes plaintext, and the outbound falls back to
        # plaintext for a peer whose inbound answers a ClientHello in plaintext.
        self.plaintext_inbound = plaintext_inbound
        self.plaintext_peers: dict[tuple[str, int], int] = {}  # (host, port) -> until (ns)
        self.generation = 0
        self.update(credentials)

    def update(self, credentials: MeshCredentials) -> None:
        """New credentials (renewal, reload, roots): new handshakes use them from now on."""
        roots = credentials.roots
        server = make_context(True, credentials.node, roots, ALPN_PROTOCOLS)
        by_sni = {
            sni_name(name): make_context(True, cred, roots, ALPN_PROTOCOLS)
            for name, cred in credentials.services.items()
        }

        def pick(sobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            ctx = by_sni.get(server_name or "")
            if ctx is not None:
                sobj.context = ctx
            # else: the node's own identity answers (the caller will not accept it for a service)

        server.sni_callback = pick
        self.credentials = credentials
        self.server_ctx = server
        self.by_sni = by_sni
        self.client_ctx: dict[tuple[str, str], ssl.SSLContext] = {}
        self.generation += 1

    def identity_for(self, caller: str) -> str:
        """The local service whose identity a request from ``caller``'s listener presents
        ("" = the node's)."""
        name = caller or self.credentials.default_caller
        return name if name in self.credentials.services else ""

    def own_retire_ms(self, caller: str) -> int:
        name = self.identity_for(caller)
        creds = self.credentials
        return (creds.services[name] if name else creds.node).retire_ms

    def server_socket(self, sock: socket.socket) -> TlsSocket:
        return TlsSocket(self.server_ctx, sock, True, None)

    def client_socket(
        self, sock: socket.socket, service: str, caller: str, tunnel: bool, h2: bool = False
    ) -> TlsSocket:
        """``sock`` (connected) wrapped to reach ``service``'s inbound presenting ``caller``'s
        identity, ALPN ``gossipmesh-tunnel/1`` for a TCP ``tunnel``, ``h2`` (beside
        ``http/1.1``) for HTTP/2, else ``http/1.1``."""
        name = self.identity_for(caller)
        kind = "tunnel" if tunnel else "h2" if h2 else "http"
        key = (name, kind)
        ctx = self.client_ctx.get(key)
        if ctx is None:
            creds = self.credentials
            cred = creds.services[name] if name else creds.node
            alpn = {"tunnel": (ALPN_TUNNEL,), "h2": (ALPN_H2, ALPN_HTTP), "http": (ALPN_HTTP,)}[
                kind
            ]
            ctx = self.client_ctx[key] = make_context(False, cred, creds.roots, alpn)
        return TlsSocket(ctx, sock, False, sni_name(service))

    def is_plaintext_peer(self, host: str, port: int, now_ns: int) -> bool:
        until = self.plaintext_peers.get((host, port))
        if until is None:
            return False
        if until <= now_ns:
            with contextlib.suppress(KeyError):
                del self.plaintext_peers[(host, port)]
            return False
        return True


__all__ = ["Credential", "MeshCredentials", "MeshTls", "make_context", "sni_name"]
