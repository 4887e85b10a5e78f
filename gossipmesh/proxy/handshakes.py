"""The mesh hop's handshakes: an inbound connection accepted, an outbound one opened.

Theory of operation
-------------------
Both run on a task (a handshake is a few round trips; nothing on the event engine waits for
it), bounded by the watchdog through the socket's deadline, and both end the same way: the
peer's leaf certificate is judged by the agent's ``PeerAuthority`` and the connection is watched
(``PeerWatch``) for as long as it lives.

- ``accept``: TLS 1.3 with a required client certificate (OpenSSL sends an alert to anything
  else: plaintext, no certificate, a chain to another root), then the authority's verdict on the
  caller and the ALPN protocol (``h2``: the connection is served as HTTP/2 on this task,
  h2serve.py). Only a connection that passed all of it becomes a
  ``Downstream`` served by the engine (or the task path); a refused one is closed without a byte
  of application data. With ``plaintext_inbound`` (migration only) a first byte that is not a TLS
  handshake record lets the connection through as an anonymous plaintext caller, counted.
- ``connect``: TCP, then TLS presenting the calling service's identity with SNI naming the
  destination service, then the authority's verdict that the other end is that service on the
  node the catalog says hosts the endpoint. Any failure is a ``ConnectFailed`` (the pipeline
  retries elsewhere and marks the endpoint down, as for a refused TCP connect). With
  ``plaintext_inbound`` a peer whose inbound answered in plaintext (an agent not yet upgraded)
  is reached in plaintext for a minute, counted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

import trio

from gossipmesh.proxy.audit import Audit
from gossipmesh.proxy.clock import NEVER_NS, NS_PER_MS, NS_PER_S
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.descriptors import DescriptorBudget
from gossipmesh.proxy.downstream import Downstream, Downstreams
from gossipmesh.proxy.limits import INBOUND, OUTBOUND
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.mtls import MeshTls
from gossipmesh.proxy.peers import Peer, PeerWatch
from gossipmesh.proxy.sockio import IO, ConnectFailed, SockIO, connect_raw, wait_readable
from gossipmesh.proxy.tls import (
    ALPN_H2,
    ALPN_PROTOCOLS,
    ALPN_TUNNEL,
    HandshakeFailed,
    TlsIO,
    handshake,
)

TLS_HANDSHAKE_RECORD = 0x16
PLAINTEXT_PEER_NS = 60 * NS_PER_S  # an un-upgraded peer is dialled in plaintext this long


class Handshakes:
    __slots__ = (
        "mtls",
        "watch",
        "downstreams",
        "deadlines",
        "metrics",
        "serve",
        "audit",
        "serve_h2",
    )

    def __init__(
        self,
        mtls: MeshTls,
        watch: PeerWatch,
        downstreams: Downstreams,
        deadlines: Deadlines,
        metrics: ProxyMetrics,
        serve: Callable[[Downstream], Awaitable[None]],
        audit: Audit,
    ) -> None:
        self.mtls = mtls
        self.watch = watch
        self.downstreams = downstreams
        self.deadlines = deadlines
        self.metrics = metrics
        self.serve = serve  # the engine's adopt, or the task path, for an accepted connection
        self.audit = audit
        # Serves an accepted connection whose ALPN is h2 (h2serve.py; the Proxy sets it).
        self.serve_h2: Callable[[Downstream], Awaitable[object]] | None = None

    # -- inbound -------------------------------------------------------------------------

    async def accept(self, sock: socket.socket, addr: object) -> None:
        """Serve an accepted inbound connection (non-blocking, admitted) on this task: the task
        path's way in. The event engine counts the connection itself and waits for its first
        byte without a task (engine.py: ``Greeting``), then calls ``greet``."""
        await self.greet(self.downstreams.open(sock, addr, INBOUND))

    async def greet(self, conn: Downstream) -> None:
        """Handshake and judge ``conn`` (counted, its head deadline armed), then serve it.

        OpenSSL's state for a connection (tens of KiB: the SSL object and its record buffers)
        is only made once the client has sent a byte: 5,000 bare connections to the inbound
        listener (a port scan, slow clients) took an agent from 68 to 309 MiB when every accept
        wrapped the socket at once, and glibc kept a third of it after they closed (issue 13's
        storm benchmark)."""
        mtls = self.mtls
        addr = conn.addr
        sock = conn.io.sock
        first = await first_byte(conn.io)
        if not first:
            self.downstreams.close(conn)  # gone, or silent until its deadline
            return
        if mtls.plaintext_inbound and first[0] != TLS_HANDSHAKE_RECORD:
            self.metrics.plaintext["inbound_accepted"] = (
                self.metrics.plaintext.get("inbound_accepted", 0) + 1
            )
            await self.serve(conn)
            return
        try:
            tsock = mtls.server_socket(sock)
        except (OSError, ValueError):
            self.downstreams.close(conn)
            return
        io = self.downstreams.to_tls(conn, tsock)
        try:
            await handshake(io)
        except HandshakeFailed as e:
            self.metrics.count(self.metrics.tls_handshakes, INBOUND, e.reason)
            self.downstreams.close(conn)
            return
        alpn = tsock.selected_alpn_protocol()
        verdict = (
            mtls.authority.check_client(tsock.getpeercert(True) or b"")
            if alpn in ALPN_PROTOCOLS
            else "no_alpn"
        )
        if isinstance(verdict, str):
            self.refused(INBOUND, verdict, addr)
            self.downstreams.close(conn)
            return
        self.metrics.count(self.metrics.tls_handshakes, INBOUND, "ok")
        self.watch.add(io, verdict, self.deadlines.clock.now_ns())
        conn.peer = verdict
        conn.tunnel = alpn == ALPN_TUNNEL
        if alpn == ALPN_H2:
            if self.serve_h2 is None:
                self.downstreams.close(conn)
                return
            try:
                await self.serve_h2(conn)
            finally:
                self.downstreams.close(conn)
            return
        await self.serve(conn)

    def refused(self, direction: str, reason: str, addr: object) -> None:
        self.metrics.count(self.metrics.tls_handshakes, direction, "rejected")
        self.metrics.count(self.metrics.tls_rejected, direction, reason)
        self.audit("mesh_peer_refused", direction=direction, peer=str(addr), reason=reason)

    # -- outbound ------------------------------------------------------------------------

    async def connect(
        self,
        host: str,
        port: int,
        connect_ms: int,
        budget: DescriptorBudget | None,
        service: str,
        node: str,
        caller: str,
        tunnel: bool,
        h2: bool = False,
    ) -> IO:
        """A verified mesh connection to ``service`` on ``node`` at its inbound ``host:port``
        (``h2``: one that ALPN agreed will carry HTTP/2). Raises ``ConnectFailed``."""
        mtls = self.mtls
        clock = self.deadlines.clock
        sock = await connect_raw(host, port, connect_ms, self.deadlines)
        if mtls.plaintext_inbound and mtls.is_plaintext_peer(host, port, clock.now_ns()):
            return self.plain(sock, budget)
        try:
            tsock = mtls.client_socket(sock, service, caller, tunnel, h2)
        except (OSError, ValueError, ssl.SSLError) as e:
            sock.close()
            raise ConnectFailed(f"{host}:{port}: {e}") from None
        io = TlsIO(tsock, budget)
        io.deadline_ns = clock.now_ns() + connect_ms * NS_PER_MS
        self.deadlines.add(io)
        try:
            await handshake(io)
        except HandshakeFailed as e:
            self.metrics.count(self.metrics.tls_handshakes, OUTBOUND, e.reason)
            self.drop(io)
            if mtls.plaintext_inbound and not_tls(e):
                # The peer answered a ClientHello in plaintext, or hung up on it: an agent not
                # yet upgraded, or an external data plane (migration only: an on-path attacker
                # can force this downgrade, which is why the switch is loud).
                mtls.plaintext_peers[(host, port)] = clock.now_ns() + PLAINTEXT_PEER_NS
                return self.plain(await connect_raw(host, port, connect_ms, self.deadlines), budget)
            raise ConnectFailed(f"{host}:{port}: TLS handshake failed: {e}") from None
        verdict: Peer | str = mtls.authority.check_server(
            tsock.getpeercert(True) or b"", service, node
        )
        if isinstance(verdict, str):
            self.refused(OUTBOUND, verdict, (host, port))
            self.drop(io)
            raise ConnectFailed(f"{host}:{port}: not {service} on {node}: {verdict}")
        if h2 and tsock.selected_alpn_protocol() != ALPN_H2:
            self.drop(io)  # an agent that does not speak HTTP/2 on its inbound yet
            raise ConnectFailed(f"{host}:{port}: the peer's inbound does not offer h2")
        self.metrics.count(self.metrics.tls_handshakes, OUTBOUND, "ok")
        io.deadline_ns = NEVER_NS
        self.watch.add(io, verdict, clock.now_ns(), mtls.own_retire_ms(caller))
        return io

    def plain(self, sock: socket.socket, budget: DescriptorBudget | None) -> SockIO:
        self.metrics.plaintext["outbound_fallback"] = (
            self.metrics.plaintext.get("outbound_fallback", 0) + 1
        )
        io = SockIO(sock, budget)
        self.deadlines.add(io)
        return io

    def drop(self, io: TlsIO) -> None:
        self.deadlines.discard(io)
        with contextlib.suppress(OSError):
            io.close()


async def first_byte(io: SockIO) -> bytes | None:
    """Wait for the client's first byte and peek at it (left in the socket for TLS or HTTP to
    read): ``b""`` when the client closed first, None when the socket was closed under us (the
    watchdog, at the connection's deadline)."""
    sock = io.sock
    try:
        while True:
            try:
                return sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                await wait_readable(sock)
    except (OSError, trio.ClosedResourceError, ValueError):
        return None


def not_tls(e: HandshakeFailed) -> bool:
    """The handshake failed because the peer does not speak TLS (not because a certificate was
    refused): a plaintext answer, or the connection ended."""
    text = str(e)
    return (
        "CERTIFICATE" not in text.upper()
        and ("WRONG_VERSION_NUMBER" in text or "EOF" in text.upper() or e.reason != "tls_error")
        and e.reason != "timeout"
    )


__all__ = ["Handshakes"]
