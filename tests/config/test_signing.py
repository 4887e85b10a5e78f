"""ProposalSigner: the operator's side of a two-phase write signs only what it asked for.

The agent may be a captured node, so every way a proposal can differ from the request is refused
before anything is signed: another writer, an inflated context, a changed value, an extra entry,
a timestamp far from the operator's clock, a sibling that is not really signed.
"""

from __future__ import annotations

import base64
import copy
import time
from typing import Any

import pytest

from gossipmesh.agent.config_json import from_wire, proposal_json
from gossipmesh.config.authority import ConfigAuthority
from gossipmesh.config.schema import check_entry
from gossipmesh.config.signing import OP_SKEW_MS, ProposalRefused, ProposalSigner, WireEntry
from gossipmesh.crdt.document import Document
from gossipmesh.errors import UsageError
from gossipmesh.identity import CaCredentials, OperatorCredentials

NOW = int(time.time() * 1000)
ROUTE = {"destinations": [{"service": "api"}]}


@pytest.fixture(scope="module")
def pki() -> tuple[CaCredentials, OperatorCredentials]:
    ca = CaCredentials.generate("prod", now_ms=NOW - 3_600_000)
    return ca, OperatorCredentials.issue(ca, "alice", now_ms=NOW - 3_600_000)


def agent_doc(ca: CaCredentials) -> Document:
    return Document(ConfigAuthority("prod", [ca.cert_der]), validator=check_entry)


def prepare(doc: Document, signer: ProposalSigner, items: dict[str, Any]) -> dict[str, Any]:
    """What the agent named ``n1`` answers to ``POST /v1/config/prepare``."""
    req = signer.prepare_request(items)
    pairs = list(req["items"].items())
    if "certificate" in req:
        from gossipmesh.config.trust import cert_key

        key = cert_key(signer.fingerprint)
        if not doc.stored(key):
            pairs.append((key, {"der": req["certificate"]}))
    return proposal_json(doc, "prod", "n1", "n1@00000001", doc.prepare(pairs, "n1@00000001", NOW))


def commit(doc: Document, body: dict[str, Any]) -> None:
    entries = [from_wire(WireEntry.from_json(e, "e")) for e in body["entries"]]
    doc.commit(entries, "n1@00000001", NOW)


def test_sign_then_commit_and_a_second_write_sees_the_first(pki: Any) -> None:
    ca, op = pki
    doc, signer = agent_doc(ca), ProposalSigner.for_operator(op)
    first = prepare(doc, signer, {"route/web": ROUTE})
    assert [e["key"].split("/")[0] for e in first["entries"]] == ["route", "cert"]
    commit(doc, signer.sign(first, {"route/web": ROUTE}, "n1", NOW))
    assert doc.get("route/web") == ROUTE
    second = prepare(doc, signer, {"route/web": None})
    assert len(second["siblings"]["route/web"]) == 1 and second["certs"]
    commit(doc, signer.sign(second, {"route/web": None}, "n1", NOW))
    assert doc.get("route/web") is None


def refused(pki: Any, change: Any, match: str, node: str = "n1", now: int = NOW) -> None:
    ca, op = pki
    doc, signer = agent_doc(ca), ProposalSigner.for_operator(op)
    commit(doc, signer.sign(prepare(doc, signer, {"route/web": ROUTE}), {"route/web": ROUTE},
                            "n1", NOW))  # fmt: skip
    items = {"route/web": {"destinations": [{"service": "v2"}]}}
    proposal = copy.deepcopy(prepare(doc, signer, items))
    change(proposal)
    with pytest.raises(ProposalRefused, match=match):
        signer.sign(proposal, items, node, now)


def test_another_nodes_writer_is_refused(pki: Any) -> None:
    refused(pki, lambda p: None, "only write under its own name", node="n2")


def test_an_inflated_context_is_refused(pki: Any) -> None:
    def inflate(p: dict[str, Any]) -> None:
        p["entries"][0]["context"] = [["n1@00000001", 9], ["victim@00000002", 2**40]]

    refused(pki, inflate, "context does not match")


def test_a_changed_value_or_an_extra_entry_is_refused(pki: Any) -> None:
    def swap(p: dict[str, Any]) -> None:
        p["entries"][0]["value"] = p["siblings"]["route/web"][0]["value"]

    refused(pki, swap, "not the one asked for")

    def extra(p: dict[str, Any]) -> None:
        p["entries"].append(dict(p["entries"][0], key="route/other", counter=99))

    refused(pki, extra, "not asked for")
    refused(pki, lambda p: p["entries"].clear(), "asked for but not proposed")


def test_a_timestamp_far_from_the_operators_clock_is_refused(pki: Any) -> None:
    refused(pki, lambda p: None, "from this machine's clock", now=NOW + OP_SKEW_MS + 1)


def test_a_sibling_that_is_not_really_signed_is_refused(pki: Any) -> None:
    def tamper(p: dict[str, Any]) -> None:
        sibling = p["siblings"]["route/web"][0]
        raw = bytearray(base64.b64decode(sibling["signature"]))
        raw[40] ^= 1
        sibling["signature"] = base64.b64encode(bytes(raw)).decode()

    refused(pki, tamper, "bad signature")
    refused(pki, lambda p: p["certs"].clear(), "does not chain to your roots")


def test_the_cluster_must_be_the_operators(pki: Any) -> None:
    refused(pki, lambda p: p.update(cluster="other"), "cluster")


def test_malformed_entries_name_the_field() -> None:
    with pytest.raises(UsageError, match=r"e.hlc.logical: must be an integer"):
        WireEntry.from_json({"key": "k", "writer": "w", "counter": 1, "context": [], "value": None,
                             "hlc": {"wall_ms": 1, "logical": 2**40}}, "e")  # fmt: skip
    with pytest.raises(UsageError, match=r"e.counter"):
        WireEntry.from_json({"key": "k", "writer": "w", "counter": 2**53, "context": [],
                             "hlc": {"wall_ms": 1, "logical": 0}}, "e")  # fmt: skip
    with pytest.raises(UsageError, match=r"e.context: writers must be unique and ascending"):
        WireEntry.from_json({"key": "k", "writer": "w", "counter": 1, "context": [["b", 1],
                             ["a", 1]], "hlc": {"wall_ms": 1, "logical": 0}}, "e")  # fmt: skip
