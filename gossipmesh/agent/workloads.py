"""Workload identities: a certificate for each service this agent hosts, issued and renewed here.

Theory of operation
-------------------
The node certificate is a CA limited to path length 0 (DESIGN-11 D2): it can sign end-entity
certificates and nothing below them. For every service in its ``[[service]]`` tables the agent
makes a fresh P-256 key and a certificate ``spiffe://CLUSTER/svc/NAME`` signed by its node key,
valid ``workload_lifetime_ms`` (24 h by default), which carries the node certificate (so a peer
can verify the chain from the leaf it is shown; identity/certs.py). Keys never leave memory.

They are renewed at the middle of their life (``renew_at``), and whenever the node credentials
change (``SIGHUP`` reload) or the trusted roots do (a root added or distrusted through the
document): ``Workloads.run`` looks every ``CHECK_S`` and hands the proxy new ``MeshCredentials``
(``Proxy.update_credentials``). New handshakes use them at once; connections made with the old
ones keep working and are retired from the pool as they pass the middle of their certificates'
life (proxy/peers.py), so a renewal fails no request.

Which identity does an outbound request present? The listener it came in on decides: a service's
own outbound listener (``[[service]] outbound = "HOST:PORT"``) presents that service; the agent's
shared outbound listener presents the only local service when there is exactly one, else the
node's own identity (``default_caller``), which policies can name as ``spiffe://CLUSTER/node/N``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from gossipmesh.identity import CLOCK_SKEW_MS, Signer, issue_workload, parse_certificate
from gossipmesh.identity.files import private_key_pem
from gossipmesh.proxy.mtls import Credential, MeshCredentials

if TYPE_CHECKING:
    from gossipmesh.agent.node_identity import AgentIdentity

CHECK_S = 1.0  # how often the task looks for a renewal, a reload or new roots


@dataclass(frozen=True, slots=True)
class Issued:
    credentials: MeshCredentials
    renew_at_ms: int  # the earliest middle of life among the workload certificates
    node_cert: bytes  # the node certificate they were issued under
    roots: frozenset[bytes]


def middle_ms(der: bytes) -> int:
    """The middle of a certificate's life, from its issue (not_before + the backdated skew)."""
    info = parse_certificate(der)
    issued = min(info.not_before_ms + CLOCK_SKEW_MS, info.not_after_ms)
    return issued + (info.not_after_ms - issued) // 2


def issue(
    identity: AgentIdentity, services: Sequence[str], lifetime_ms: int, now_ms: int
) -> Issued:
    """Fresh workload certificates for ``services`` under ``identity``'s node key."""
    node = identity.credentials
    roots = identity.trust.roots
    node_cred = Credential((node.cert_der,), private_key_pem(node.signer), middle_ms(node.cert_der))
    creds: dict[str, Credential] = {}
    for name in sorted(set(services)):
        signer = Signer.generate()
        der = issue_workload(
            node, name, signer.public_key, now_ms=now_ms, lifetime_ms=lifetime_ms,
            carry_issuer=True,
        )  # fmt: skip
        creds[name] = Credential((der, node.cert_der), private_key_pem(signer), middle_ms(der))
    default = next(iter(creds)) if len(creds) == 1 else ""
    renew_at = min((c.retire_ms for c in creds.values()), default=node_cred.retire_ms)
    return Issued(
        MeshCredentials(node_cred, creds, roots, default),
        renew_at,
        node.cert_der,
        frozenset(roots),
    )


class Workloads:
    """Issues the workload certificates and keeps them (and the roots) current."""

    def __init__(
        self,
        identity: Callable[[], AgentIdentity],
        services: Sequence[str],
        lifetime_ms: int,
        clock: Callable[[], int],
        on_change: Callable[[MeshCredentials], None],
        log: Callable[..., None],
    ) -> None:
        self.identity = identity
        self.services = tuple(services)
        self.lifetime_ms = lifetime_ms
        self.clock = clock
        self.on_change = on_change
        self.log = log
        self.renewals = 0
        self.current = issue(identity(), self.services, lifetime_ms, clock())

    def due(self) -> str | None:
        """Why the credentials must be issued again now, or None."""
        ident = self.identity()
        cur = self.current
        if ident.credentials.cert_der != cur.node_cert:
            return "node_certificate"
        if frozenset(ident.trust.roots) != cur.roots:
            return "roots"
        if self.clock() >= cur.renew_at_ms:
            return "renewal"
        return None

    def step(self) -> bool:
        """Issue again if due; True if the credentials changed."""
        reason = self.due()
        if reason is None:
            return False
        self.current = issue(self.identity(), self.services, self.lifetime_ms, self.clock())
        self.renewals += 1
        self.log("workload_certificates", reason=reason, services=list(self.services),
                 renew_at_ms=self.current.renew_at_ms)  # fmt: skip
        self.on_change(self.current.credentials)
        return True

    async def run(self) -> None:
        while True:
            await trio.sleep(CHECK_S)
            self.step()


__all__ = ["CHECK_S", "Issued", "Workloads", "issue", "middle_ms"]
