"""What ``GET /v1/self`` adds to the member record for operators and ``gossipmesh doctor``.

Facts only the agent's own process can tell, cheap to read at each request:

- ``version``, ``python``: the installed package (``gossipmesh.version``), so a rolling upgrade can
  be followed node by node; ``build``: ``mypyc`` or ``pure`` (``gossipmesh.buildinfo``).
- ``wall_ms``: the agent's wall clock when it answered. A client compares it with its own clock
  (its error is the request's round trip); skew between members is measured over the gossip port
  by ``GET /v1/keys`` (agent/keyops.py).
- ``pid`` and ``limits``: the descriptor limit (``RLIMIT_NOFILE``) and how many are open now
  (``/proc/self/fd``; ``None`` where there is no /proc). Every proxied request holds two
  descriptors, so a default limit of 1024 is the first wall a busy sidecar hits.
- ``node_cert``: the node certificate's SPIFFE id and validity (``not_after_ms``) and whether it is
  the loopback playground's self-issued one.
- ``listeners``: every address this agent listens on (gossip UDP+TCP, admin, the proxy's outbound,
  inbound and TCP listeners), as configured (a wildcard host listens on every interface).
"""

from __future__ import annotations

import os
import resource
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gossipmesh.buildinfo import current_build
from gossipmesh.identity import parse_certificate
from gossipmesh.version import package_version, python_version

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent


def self_facts(agent: Agent, wall_ms: int) -> dict[str, Any]:
    return {
        "version": package_version(),
        "python": python_version(),
        "build": current_build().kind,
        "wall_ms": wall_ms,
        "pid": os.getpid(),
        "limits": descriptor_limits(),
        "node_cert": _cert_facts(agent.identity.credentials.cert_der, agent.identity.playground),
        "listeners": listeners(agent),
    }


def descriptor_limits() -> dict[str, int | None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = None
    unlimited = resource.RLIM_INFINITY
    return {
        "nofile_soft": None if soft == unlimited else soft,
        "nofile_hard": None if hard == unlimited else hard,
        "open_fds": open_fds,
    }


@lru_cache(maxsize=4)  # parsing costs ~100 µs; the certificate changes only on reload
def _cert_facts(cert_der: bytes, playground: bool) -> dict[str, Any]:
    info = parse_certificate(cert_der)
    return {
        "spiffe_id": info.spiffe_id.uri,
        "fingerprint": info.fingerprint.hex(),
        "not_before_ms": info.not_before_ms,
        "not_after_ms": info.not_after_ms,
        "playground": playground,
    }


def listeners(agent: Agent) -> dict[str, Any]:
    s = agent.settings
    sidecar = s.sidecar
    out: dict[str, Any] = {
        "gossip": str(s.bind),  # UDP and TCP; peers use the member record's advertised address
        "admin": str(agent.admin_address if agent.admin_address is not None else s.admin),
        "outbound": None,
        "inbound": None,
        "tcp": [],
    }
    if sidecar.enabled:
        out["outbound"] = str(sidecar.outbound)
        out["inbound"] = str(sidecar.inbound_for(s.bind.host))
        out["tcp"] = [f"{t.address}:{t.port} ({t.service})" for t in sidecar.listeners]
    return out


__all__ = ["descriptor_limits", "listeners", "self_facts"]
