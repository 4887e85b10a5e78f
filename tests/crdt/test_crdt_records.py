"""Node-owned records: owner-signed, highest version wins, forgeries and stale copies refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.config.identity import NodeIdentity, TrustedKeys
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

BODY = RecordBody(
    (ServiceInstance("api", "10.0.0.1", 8080, ("v1",), 1, "passing"),), ("10.0.0.1", 4143)
)


@pytest.fixture
def world() -> tuple[NodeIdentity, NodeIdentity, RecordTable]:
    a, mallory = NodeIdentity.generate(), NodeIdentity.generate()
    trusted = TrustedKeys({"a": a.public_bytes()})
    return a, mallory, RecordTable(trusted.verify)


def test_highest_version_wins(world: tuple[NodeIdentity, NodeIdentity, RecordTable]) -> None:
    a, _, table = world
    r1 = make_record("a", 1, BODY, a.sign)
    r2 = make_record("a", 2, RecordBody(), a.sign)
    assert table.offer(r2).outcome == "accepted"
    assert table.offer(r1).outcome == "stale"
    assert table.offer(r2).outcome == "duplicate"
    assert table.get("a") == r2 and table.versions() == {"a": 2}
    assert table.newer_than({"a": 1}) == [r2] and table.newer_than({"a": 2}) == []


def test_forgeries_are_refused(world: tuple[NodeIdentity, NodeIdentity, RecordTable]) -> None:
    a, mallory, table = world
    assert table.offer(make_record("a", 5, BODY, mallory.sign)).outcome == "bad_signature"
    assert table.offer(make_record("mallory", 5, BODY, mallory.sign)).outcome == "unknown_owner"
    good = make_record("a", 5, BODY, a.sign)
    tampered = SignedRecord("a", 6, good.body, good.signature)  # replayed signature, new version
    assert table.offer(tampered).outcome == "bad_signature"
    assert table.get("a") is None
    assert table.stats == {"bad_signature": 2, "unknown_owner": 1}


def test_reaped_owner_stays_gone_until_it_publishes_anew(
    world: tuple[NodeIdentity, NodeIdentity, RecordTable],
) -> None:
    a, _, table = world
    r = make_record("a", 10, BODY, a.sign)
    table.offer(r)
    assert table.reap("a") and table.get("a") is None
    assert table.offer(r).outcome == "reaped"  # a late gossip copy
    assert table.offer(make_record("a", next_version(10, 5), BODY, a.sign)).outcome == "accepted"


def test_record_round_trip_and_body(world: tuple[NodeIdentity, NodeIdentity, RecordTable]) -> None:
    a, _, _ = world
    r = make_record("a", 3, BODY, a.sign)
    assert decode_record(encode_record(r)) == r
    assert r.decoded() == BODY
    assert NodeIdentity.from_private_bytes(a.private_bytes()).public_bytes() == a.public_bytes()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_record_decode_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_record(data)
