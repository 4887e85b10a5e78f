"""TLS for an admin API reachable from the network: the agent serves its node certificate.

An admin address that is not loopback is served over TLS 1.3 only (a bearer token must never
cross a network in the clear), and ``build_identity`` already refuses such an address unless the
agent has a node certificate (``--tls-dir``) and a gossip key. A loopback admin address stays
plain HTTP: TLS there would protect nothing that the host's own users cannot already see.

The server certificate is the node certificate itself (``NODE_DIR/node.crt`` and ``node.key``),
not a leaf issued from it. Python's ssl accepts it as a server certificate (P-256, CA:TRUE with
path length 0, no DNS name: checked with ``VERIFY_X509_STRICT`` too), and it is exactly the
identity the CLI has to check: ``spiffe://CLUSTER/node/NAME`` chained to the cluster's roots,
verified with ``TrustStore.verify_node`` (``gossipmesh.client_tls``). A revoked or expired node
certificate therefore stops working for the admin API too; a separate leaf would be one more
certificate to rotate with nothing gained.
"""

from __future__ import annotations

import ssl

from gossipmesh.agent.node_identity import is_loopback
from gossipmesh.agent.settings import AgentSettings
from gossipmesh.errors import UsageError
from gossipmesh.identity.files import NODE_CERT_FILE, NODE_KEY_FILE


def admin_ssl_context(settings: AgentSettings) -> ssl.SSLContext | None:
    """The admin API's server context; None on a loopback admin address."""
    if is_loopback(settings.admin):
        return None
    if settings.tls_dir is None:  # build_identity refuses this first; say it again if called alone
        raise UsageError(
            f"--admin {settings.admin} is not loopback: the admin API then needs TLS, from the "
            "node certificate in --tls-dir"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(settings.tls_dir / NODE_CERT_FILE, settings.tls_dir / NODE_KEY_FILE)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot serve the admin API over TLS with the node certificate in {settings.tls_dir}: "
            f"{exc}"
        ) from exc
    return context


__all__ = ["admin_ssl_context"]
