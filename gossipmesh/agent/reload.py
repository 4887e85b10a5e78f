"""``SIGHUP``: re-read the keyring file and the node credentials without a restart.

What a reload re-reads, and why only these:

- **The keyring file** (``--keyring FILE``, else ``DATA_DIR/keyring.json``): the ring on disk is
  the agent's rotated truth (agent/key_sources.py), so a ring changed by configuration management
  is taken as it is: missing keys installed, its primary used, keys it lacks removed. Key options
  (``--encrypt-file``, ``$GOSSIPMESH_ENCRYPT``) only ever create a ring and are not read again.
- **The node credentials** (``--tls-dir``): a renewed certificate (``gossipmesh ca issue-node
  --force``) must name this node and cluster and verify against its roots, exactly as at start
  (``build_identity``). It becomes ``agent.identity`` and the admin API's TLS certificate for new
  connections (``SSLContext.load_cert_chain`` replaces it in place).

Everything else (addresses, services, the proxy's listeners, timing) needs a restart; a restart
is cheap (the data dir keeps the incarnation and the peers, so the node rejoins in a round trip).
A reload that fails changes nothing: the old ring and credentials stay, and one warning line
(``reload_failed``) says why. Under systemd, ``LoadCredential=`` copies credentials only at start,
so there a renewed certificate needs ``systemctl restart`` (deploy/systemd).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gossipmesh.agent.node_identity import AgentIdentity, build_identity
from gossipmesh.crypto import Keyring, load_keyring_file
from gossipmesh.errors import UsageError
from gossipmesh.identity.files import NODE_CERT_FILE, NODE_KEY_FILE

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent


def reload_agent(agent: Agent) -> bool:
    """Re-read the keyring file and the node credentials; False (logged) if either failed."""
    ok = True
    if agent.keyring_path is not None and agent.keyring_path.exists():
        try:
            take_ring(agent.keyring, load_keyring_file(agent.keyring_path))
        except UsageError as exc:
            agent.log.warn("reload_failed", what="keyring", reason=str(exc))
            ok = False
    tls_dir = agent.settings.tls_dir
    if tls_dir is not None:
        try:
            fresh = build_identity(agent.settings, has_key=True, now_ms=int(time.time() * 1000))
            if agent.admin_tls is not None:
                agent.admin_tls.load_cert_chain(tls_dir / NODE_CERT_FILE, tls_dir / NODE_KEY_FILE)
            # The trust store is shared (signed config keeps its revocations and document roots in
            # step; membership and the proxy consult it): keep the object, re-anchor its roots.
            agent.identity = AgentIdentity(
                fresh.credentials, agent.identity.trust, playground=False
            )
            reload_roots = getattr(agent.config, "reload_roots", None)
            if reload_roots is not None:
                reload_roots(fresh.credentials.roots)
        except (UsageError, OSError) as exc:
            agent.log.warn("reload_failed", what="tls_dir", reason=str(exc))
            ok = False
    agent.log.info("reloaded", keys=agent.keyring.key_ids(), ok=ok)
    return ok


def take_ring(ring: Keyring, new: Keyring) -> None:
    """Make ``ring`` hold exactly ``new``'s keys with its primary, in place (the transport and
    streams hold ``ring``). Unwanted keys go first, so a full ring always has room."""
    wanted = new.keys()
    for key in ring.keys()[1:]:
        if key not in wanted:
            ring.remove(key)
    old_primary = ring.primary
    if old_primary not in wanted:  # the primary cannot be removed: hand the role on first
        kept = ring.keys()[1:]  # every secondary left is wanted
        if not kept:
            ring.install(new.primary)  # the ring holds only the old primary: there is room
        ring.use(kept[0] if kept else new.primary)
        ring.remove(old_primary)
    for key in wanted:
        ring.install(key)
    ring.use(new.primary)


__all__ = ["reload_agent", "take_ring"]
