"""Signed config writes for in-process agent tests: the two phases the CLI runs, over raw HTTP
(``admin_http.http``) or straight into a replica. Agents in tests are playgrounds, so the
playground operator of their cluster signs (exactly as the CLI does against a playground)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from admin_http import http

from gossipmesh.agent.replica import ConfigReplica
from gossipmesh.agent.runtime import Agent
from gossipmesh.config.signing import ProposalSigner, entry_bytes
from gossipmesh.crdt.document import Entry, MergeResult
from gossipmesh.identity import OperatorCredentials, fingerprint, playground_operator


def signer(cluster: str = "t", op: OperatorCredentials | None = None) -> ProposalSigner:
    return ProposalSigner.for_operator(op or playground_operator(cluster))


async def write(
    agent: Agent,
    items: Mapping[str, Any],
    op: OperatorCredentials | None = None,
    attempts: int = 5,
) -> tuple[int, Any]:
    """Prepare, check, sign and commit through the admin API; (status, body) of the commit (or
    of the prepare, if that failed)."""
    s = signer(agent.settings.cluster, op)
    items = dict(items)
    for _ in range(attempts):
        status, proposal = await http(agent, "POST", "/v1/config/prepare", s.prepare_request(items))
        if status != 200:
            return status, proposal
        body = s.sign(proposal, items, agent.settings.name, int(time.time() * 1000))
        if not body["entries"]:
            return 200, {"written": {}, "durable": True, "voided": []}
        status, answer = await http(agent, "POST", "/v1/config/commit", body)
        if status != 409:
            return status, answer
    return status, answer


def sign_entries(
    entries: Sequence[Entry], cluster: str = "t", op: OperatorCredentials | None = None
) -> list[Entry]:
    creds = op or playground_operator(cluster)
    fp = fingerprint(creds.cert_der)
    out = []
    for e in entries:
        unsigned = replace(e, signer=fp)
        sig = creds.signer.sign(entry_bytes(cluster, *unsigned.signed_fields()))
        out.append(unsigned.signed(fp, sig))
    return out


def local_write(replica: ConfigReplica, items: Sequence[tuple[str, Any]]) -> MergeResult:
    """Straight into a replica (no HTTP), the operator's cert entry included when missing."""
    import base64

    from gossipmesh.config.trust import cert_key

    creds = playground_operator(replica.agent.settings.cluster)
    key = cert_key(fingerprint(creds.cert_der))
    items = list(items)
    if not replica.doc.stored(key):
        items.append((key, {"der": base64.b64encode(creds.cert_der).decode()}))
    return replica.commit(sign_entries(replica.prepare(items), replica.agent.settings.cluster))
