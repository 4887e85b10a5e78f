"""Workload certificates (agent/workloads.py) and the agent's judgement of peers
(agent/peer_authority.py), with an in-process CA and a wall clock the test moves."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))

from mtls_helpers import DAY_MS, Pki, Wall  # noqa: E402

from gossipmesh.agent.workloads import Workloads, middle_ms  # noqa: E402
from gossipmesh.identity import NodeCredentials, fingerprint, parse_certificate  # noqa: E402
from gossipmesh.proxy.mtls import MeshCredentials  # noqa: E402

HOSTS = {"n1": {"web"}, "n2": {"api"}}


def workloads(pki: Pki, node: str, services: list[str], lifetime_ms: int = DAY_MS):  # type: ignore[no-untyped-def]
    changes: list[MeshCredentials] = []
    lines: list[dict[str, object]] = []
    w = Workloads(
        lambda: pki.identity(node),
        services,
        lifetime_ms,
        pki.wall,
        changes.append,
        lambda event, **fields: lines.append({"event": event, **fields}),
    )
    return w, changes, lines


def test_each_hosted_service_gets_a_certificate_renewed_at_half_life() -> None:
    wall = Wall()
    pki = Pki(wall)
    w, changes, lines = workloads(pki, "n1", ["web", "admin"], lifetime_ms=60_000)
    creds = w.current.credentials
    assert set(creds.services) == {"web", "admin"} and creds.default_caller == ""
    info = parse_certificate(creds.services["web"].chain[0])
    assert info.spiffe_id.uri == "spiffe://mesh/svc/web"
    assert creds.services["web"].chain[1] == pki.node("n1").cert_der  # carries its issuer
    assert not w.step() and changes == []  # not due yet
    wall.offset_ms = w.current.renew_at_ms - wall() + wall.offset_ms + 1
    assert w.step() and len(changes) == 1 and lines[-1]["reason"] == "renewal"
    assert changes[0].services["web"].chain[0] != creds.services["web"].chain[0]
    assert w.current.renew_at_ms == middle_ms(changes[0].services["web"].chain[0])
    assert not w.step()


def test_a_new_node_certificate_or_new_roots_issue_again() -> None:
    pki = Pki(Wall())
    w, changes, lines = workloads(pki, "n1", ["web"])
    assert w.current.credentials.default_caller == "web"  # the only service speaks for the node
    pki.nodes["n1"] = NodeCredentials.issue(pki.ca, "n1", now_ms=pki.wall())  # a SIGHUP reload
    assert w.step() and lines[-1]["reason"] == "node_certificate"
    other = Pki(Wall())
    pki.trust.add_root(other.ca.cert_der)
    assert w.step() and lines[-1]["reason"] == "roots"
    assert len(changes) == 2


def test_the_authority_binds_a_service_name_to_the_nodes_that_host_it() -> None:
    pki = Pki(Wall())
    auth = pki.authority("n2", HOSTS)
    web = pki.credentials("n1", ["web"]).services["web"].chain[0]
    forged = pki.workload("n1", "api").chain[0]  # n1 signs a name it does not host
    verdict = auth.check_client(web)
    assert not isinstance(verdict, str) and (verdict.service, verdict.node) == ("web", "n1")
    assert auth.check_client(forged) == "not_hosting"
    assert auth.check_server(web, "web", "n2") == "wrong_node"
    node = pki.node("n1").cert_der
    as_node = auth.check_client(node)  # a node's own identity may call
    assert not isinstance(as_node, str) and as_node.service == "" and as_node.node == "n1"
    assert isinstance(auth.check_server(node, "web", "n1"), str)  # ... but is no service
    assert auth.check_client(b"") == "no_certificate"


def test_the_authority_version_moves_with_revocations_hosts_and_reloads() -> None:
    pki = Pki(Wall())
    auth = pki.authority("n2", HOSTS)
    web = pki.credentials("n1", ["web"]).services["web"].chain[0]
    peer = auth.check_client(web)
    assert not isinstance(peer, str)
    v0 = auth.version
    auth.update_hosts({n: frozenset(s) for n, s in HOSTS.items()})  # unchanged: same version
    assert auth.version == v0
    auth.update_hosts({"n2": frozenset({"api"})})
    assert auth.version != v0 and auth.recheck(peer) == "not_hosting"
    auth.update_hosts({n: frozenset(s) for n, s in HOSTS.items()})
    v1 = auth.version
    pki.trust.revoke(fingerprint(pki.node("n1").cert_der))
    assert auth.version != v1 and auth.recheck(peer) == "revoked"
