"""Node-owned records: signed with the owner's node key, highest version wins, forgeries and
stale copies refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.identity import RecordKeys, RecordSigner
from gossipmesh.crdt.records import (
    RecordBody,
    RecordTable,
    ServiceInstance,
    SignedRecord,
    decode_record,
    encode_record,
    make_record,
    next_version,
)
from gossipmesh.errors import DecodeError
from gossipmesh.identity import fingerprint
from simulations.identity import EPOCH_MS, SimIdentities

IDS = SimIdentities("records-test")

BODY = RecordBody(
    (ServiceInstance("api", "10.0.0.1", 8080, ("v1",), 1, "passing"),), ("10.0.0.1", 4143)
)


World = tuple[RecordSigner, RecordSigner, RecordTable]


@pytest.fixture
def world() -> World:
    a, mallory = RecordSigner(IDS.credentials("a")), RecordSigner(IDS.credentials("mallory"))
    keys = RecordKeys(IDS.cluster, IDS.memo, lambda: EPOCH_MS)
    keys.learn("a", IDS.credentials("a").cert_der)
    return a, mallory, RecordTable(keys.verify)


def test_highest_version_wins(world: World) -> None:
    a, _, table = world
    r1 = make_record("a", 1, BODY, a)
    r2 = make_record("a", 2, RecordBody(), a)
    assert table.offer(r2).outcome == "accepted"
    assert table.offer(r1).outcome == "stale"
    assert table.offer(r2).outcome == "duplicate"
    assert table.get("a") == r2 and table.versions() == {"a": 2}
    assert table.newer_than({"a": 1}) == [r2] and table.newer_than({"a": 2}) == []


def test_forgeries_are_refused(world: World) -> None:
    a, mallory, table = world
    good = make_record("a", 5, BODY, a)
    # Mallory signs a record for "a" with her own key, naming her own certificate...
    by_mallory = make_record("mallory", 5, BODY, mallory)
    forged = SignedRecord("a", 5, by_mallory.body, by_mallory.signature, by_mallory.signer)
    assert table.offer(forged).outcome == "unknown_owner"  # not a's certificate: never trusted
    # ... or naming a's certificate: the signature is not a's.
    forged = SignedRecord("a", 5, by_mallory.body, by_mallory.signature, good.signer)
    assert table.offer(forged).outcome == "bad_signature"
    assert table.offer(make_record("mallory", 5, BODY, mallory)).outcome == "unknown_owner"
    tampered = SignedRecord("a", 6, good.body, good.signature, good.signer)  # replayed, new version
    assert table.offer(tampered).outcome == "bad_signature"
    assert table.get("a") is None
    assert table.stats == {"bad_signature": 2, "unknown_owner": 2}
    with pytest.raises(ValueError):
        make_record("a", 7, BODY, mallory)  # a signer signs only its own record


def test_a_record_under_a_revoked_certificate_is_refused() -> None:
    ids = SimIdentities("records-revoke")
    keys = RecordKeys(ids.cluster, ids.memo, lambda: EPOCH_MS)
    creds = ids.credentials("a")
    keys.learn("a", creds.cert_der)
    table = RecordTable(keys.verify)
    ids.trust.revoke(fingerprint(creds.cert_der))
    assert table.offer(make_record("a", 1, BODY, RecordSigner(creds))).outcome == "untrusted_owner"


def test_reaped_owner_stays_gone_until_it_publishes_anew(world: World) -> None:
    a, _, table = world
    r = make_record("a", 10, BODY, a)
    table.offer(r)
    assert table.reap("a") and table.get("a") is None
    assert table.offer(r).outcome == "reaped"  # a late gossip copy
    assert table.offer(make_record("a", next_version(10, 5), BODY, a)).outcome == "accepted"


def test_record_round_trip_and_body(world: World) -> None:
    a, _, _ = world
    r = make_record("a", 3, BODY, a)
    assert decode_record(encode_record(r)) == r
    assert r.decoded() == BODY
    assert r.signer == fingerprint(IDS.credentials("a").cert_der) and len(r.signature) == 64


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_record_decode_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_record(data)
