"""A two-proxy mesh with mTLS on the hop, an in-process CA, and a recording relay.

    app -> A outbound (node n1, service web) -> [relay] -> B inbound (node n2, service api)

Each proxy judges peers with the agent's own ``MeshAuthority`` over one ``TrustStore`` and a
hosts map ("n1 hosts web, n2 hosts api"), on a wall clock the test can move (``Wall``).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio
from proxy_helpers import Backend

from gossipmesh.agent.node_identity import AgentIdentity
from gossipmesh.agent.peer_authority import MeshAuthority
from gossipmesh.agent.workloads import issue
from gossipmesh.identity import (
    CaCredentials,
    NodeCredentials,
    Signer,
    TrustStore,
    issue_workload,
)
from gossipmesh.identity.files import private_key_pem
from gossipmesh.proxy.limits import ProxyLimits
from gossipmesh.proxy.mtls import Credential, MeshCredentials, MeshTls, make_context, sni_name
from gossipmesh.proxy.server import Proxy, ProxyAddresses
from gossipmesh.proxy.table import Endpoint, build_route_table

CLUSTER = "mesh"
DAY_MS = 24 * 3600 * 1000


class Wall:
    """A wall clock in ms that a test can move forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset_ms


class Pki:
    def __init__(self, wall: Wall) -> None:
        self.wall = wall
        self.ca = CaCredentials.generate(CLUSTER, now_ms=wall())
        self.trust = TrustStore(CLUSTER, roots=[self.ca.cert_der])
        self.nodes: dict[str, NodeCredentials] = {}

    def node(self, name: str) -> NodeCredentials:
        if name not in self.nodes:
            self.nodes[name] = NodeCredentials.issue(self.ca, name, now_ms=self.wall())
        return self.nodes[name]

    def identity(self, name: str) -> AgentIdentity:
        return AgentIdentity(self.node(name), self.trust, playground=False)

    def credentials(
        self, node: str, services: Sequence[str], lifetime_ms: int = DAY_MS
    ) -> MeshCredentials:
        return issue(self.identity(node), services, lifetime_ms, self.wall()).credentials

    def workload(self, node: str, service: str, lifetime_ms: int = DAY_MS) -> Credential:
        """A workload credential issued by ``node`` (whatever the catalog says it hosts)."""
        signer = Signer.generate()
        n = self.node(node)
        der = issue_workload(n, service, signer.public_key, now_ms=self.wall(),
                             lifetime_ms=lifetime_ms, carry_issuer=True)  # fmt: skip
        return Credential((der, n.cert_der), private_key_pem(signer), 0)

    def authority(self, node: str, hosts: Mapping[str, set[str]]) -> MeshAuthority:
        auth = MeshAuthority(lambda: self.identity(node), self.wall)
        auth.update_hosts({n: frozenset(s) for n, s in hosts.items()})
        return auth


HOSTS = {"n1": {"web"}, "n2": {"api"}}


class Relay:
    """A TCP relay that records every byte it carries (the "capture" of the hop)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.captured = bytearray()
        self.addr: tuple[str, int] = ("127.0.0.1", 0)

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.addr = listeners[0].socket.getsockname()[:2]
        task_status.started(self.addr)
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, down: trio.SocketStream) -> None:
        up = await trio.open_tcp_stream(*self.target)

        async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
            try:
                while data := await src.receive_some(65536):
                    self.captured += data
                    await dst.send_all(data)
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with down, up, trio.open_nursery() as n:
            n.start_soon(pump, down, up)
            n.start_soon(pump, up, down)


@dataclass
class MtlsMesh:
    pki: Pki
    wall: Wall
    a: Proxy
    b: Proxy
    a_addr: ProxyAddresses
    b_addr: ProxyAddresses
    backends: dict[str, list[Backend]]
    relay: Relay | None = None
    hop: tuple[str, int] = ("127.0.0.1", 0)
    services: dict[str, object] = field(default_factory=dict)

    @property
    def outbound(self) -> tuple[str, int]:
        assert self.a_addr.outbound is not None
        return self.a_addr.outbound

    @property
    def inbound(self) -> tuple[str, int]:
        assert self.b_addr.inbound is not None
        return self.b_addr.inbound

    def set_table(self, services: Mapping[str, object] | None = None) -> None:
        eps = {
            svc: [Endpoint("n2", be.host, be.port, inbound=self.hop) for be in bes]
            for svc, bes in self.backends.items()
        }
        table = build_route_table(services or {}, {}, eps)  # type: ignore[arg-type]
        self.a.update_table(table)
        self.b.update_table(table)


async def start_mtls_mesh(
    nursery: trio.Nursery,
    backends: Mapping[str, Sequence[str]] | None = None,
    *,
    relay: bool = False,
    a_services: Sequence[str] = ("web",),
    hosts: Mapping[str, set[str]] = HOSTS,
    b_plaintext: bool = False,
    b_limits: ProxyLimits | None = None,
    **a_kw: object,
) -> MtlsMesh:
    wall = Wall()
    pki = Pki(wall)
    started: dict[str, list[Backend]] = {}
    for svc, names in (backends or {"api": ["be1"]}).items():
        started[svc] = []
        for name in names:
            be = Backend(name)
            await nursery.start(be.run)
            started[svc].append(be)
    b = Proxy(
        outbound=None,
        inbound=("127.0.0.1", 0),
        local_services={svc: [(be.host, be.port) for be in bes] for svc, bes in started.items()},
        mtls=MeshTls(
            pki.credentials("n2", list(started)),
            pki.authority("n2", hosts),
            plaintext_inbound=b_plaintext,
        ),
        limits=b_limits,
    )
    b_addr = await nursery.start(b.serve)
    a = Proxy(
        outbound=("127.0.0.1", 0),
        inbound=None,
        mtls=MeshTls(pki.credentials("n1", a_services), pki.authority("n1", hosts)),
        **a_kw,  # type: ignore[arg-type]
    )
    a_addr = await nursery.start(a.serve)
    assert b_addr.inbound is not None
    mesh = MtlsMesh(pki, wall, a, b, a_addr, b_addr, started, hop=b_addr.inbound)
    if relay:
        mesh.relay = Relay(b_addr.inbound)
        mesh.hop = await nursery.start(mesh.relay.run)
    mesh.set_table()
    return mesh


def tls_exchange(
    addr: tuple[str, int],
    cred: Credential | None,
    roots: Sequence[bytes],
    service: str,
    data: bytes,
    alpn: str = "http/1.1",
) -> bytes:
    """A blocking TLS client (run it in a thread): present ``cred``, send ``data``, read until
    the peer closes or a response head is whole. Raises ssl.SSLError / OSError."""
    if cred is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols([alpn])
    else:
        ctx = make_context(False, cred, tuple(roots), (alpn,))
    with (
        socket.create_connection(addr, timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni_name(service)) as s,
    ):
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
