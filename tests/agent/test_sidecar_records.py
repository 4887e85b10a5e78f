"""Node records as the sidecar spreads them: signing with node certificates, forgeries, parked
records, metadata and the sidecar's settings. No sockets: ``RecordSync`` runs against a stand-in
for the agent that records what it was handed."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from gossipmesh.agent.records_sync import (
    MAX_PENDING,
    RECORD_TAG,
    NodeMeta,
    RecordSync,
    decode_meta,
    encode_meta,
)
from gossipmesh.agent.runtime import MemberEvent
from gossipmesh.agent.settings import load_settings
from gossipmesh.config.identity import RecordSigner
from gossipmesh.crdt.records import (
    RecordBody,
    ServiceInstance,
    SignedRecord,
    encode_record,
    make_record,
)
from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address
from gossipmesh.swim.member import MAX_META_BYTES
from simulations.identity import SimIdentities

IDS = SimIdentities("sidecar-records-test")


def cert(name: str) -> bytes:
    return IDS.credentials(name).cert_der


def signer(name: str) -> RecordSigner:
    return RecordSigner(IDS.credentials(name))


class FakeAgent:
    """Just the extension points ``RecordSync`` registers with."""

    def __init__(self, name: str) -> None:
        self.settings = type("S", (), {"name": name})()
        self.identity = SimpleNamespace(credentials=IDS.credentials(name), trust=IDS.trust)
        self.counters: Counter[str] = Counter()
        self.rng = random.Random(1)
        self.member_listeners: list[Any] = []
        self.user_handlers: list[Any] = []
        self.streams: dict[str, Any] = {}

    def add_member_listener(self, fn: Any) -> None:
        self.member_listeners.append(fn)

    def add_user_message_handler(self, fn: Any) -> None:
        self.user_handlers.append(fn)

    def register_stream_handler(self, kind: str, fn: Any) -> None:
        self.streams[kind] = fn

    def deliver(self, payload: bytes) -> None:
        for fn in self.user_handlers:
            fn(Address("127.0.0.9", 1), payload)

    def member(self, name: str, meta: bytes, kind: str = "join", cert: bytes = b"") -> None:
        """A member event as the runtime reports it: with the member's certificate from SWIM."""
        event = MemberEvent(kind, name, Address("127.0.0.9", 1), "alive", None, 1, meta, 0, cert)
        for fn in self.member_listeners:
            fn(event)


BODY = RecordBody((ServiceInstance("web", "127.0.0.1", 8080, ("v1",), 1, "passing"),), ("h", 1))


def sync_for(name: str = "me") -> tuple[FakeAgent, RecordSync, list[int]]:
    agent = FakeAgent(name)
    changes: list[int] = []
    rs = RecordSync(agent, lambda: changes.append(1))  # type: ignore[arg-type]
    return agent, rs, changes


def test_signed_record_from_a_known_owner_is_accepted_and_forgeries_are_counted() -> None:
    agent, rs, changes = sync_for()
    agent.member("peer", encode_meta(NodeMeta()), cert=cert("peer"))
    good = make_record("peer", 10, BODY, signer("peer"))
    agent.deliver(RECORD_TAG + encode_record(good))
    assert rs.table.get("peer") == good
    assert changes

    # Signed by someone else (mallory, a member too), claiming to be "peer", with a higher
    # version and another proxy address: refused whichever certificate it names.
    by_mallory = make_record("mallory", 11, RecordBody((), ("6.6.6.6", 4143)), signer("mallory"))
    forged = SignedRecord("peer", 11, by_mallory.body, by_mallory.signature, good.signer)
    agent.deliver(RECORD_TAG + encode_record(forged))
    # The right key, but the body was swapped after signing.
    tampered = SignedRecord(
        "peer", 12, make_record("x", 0, RecordBody(), signer("x")).body, good.signature, good.signer
    )
    agent.deliver(RECORD_TAG + encode_record(tampered))
    assert rs.table.get("peer") == good
    assert agent.counters["records.bad_signature"] == 2

    agent.deliver(RECORD_TAG + encode_record(good))  # a duplicate is not a change
    agent.deliver(RECORD_TAG + b"\xc1garbage")
    agent.deliver(b"C" + b"config delta, not ours")  # the replica's tag: ignored, not counted
    assert agent.counters["records.duplicate"] == 1
    assert agent.counters["records.decode_error.msgpack"] == 1
    assert sum(v for k, v in agent.counters.items() if "decode" in k) == 1


def test_a_record_before_its_owners_meta_is_parked_then_accepted() -> None:
    agent, rs, _ = sync_for()
    older = make_record("peer", 5, BODY, signer("peer"))
    newer = make_record("peer", 6, BODY, signer("peer"))
    agent.deliver(RECORD_TAG + encode_record(newer))
    agent.deliver(RECORD_TAG + encode_record(older))  # the parked copy stays the newest one
    assert rs.table.get("peer") is None
    assert agent.counters["records.unknown_owner"] == 2
    agent.member("peer", encode_meta(NodeMeta(record_version=6)), cert=cert("peer"))
    assert rs.table.get("peer") == newer


def test_pending_set_is_bounded() -> None:
    agent, rs, _ = sync_for()
    key = signer("k")
    for i in range(MAX_PENDING + 10):
        rec = make_record("k", 1, BODY, key)
        agent.deliver(RECORD_TAG + encode_record(SignedRecord(f"n{i}", 1, rec.body, rec.signature,
                                                              rec.signer)))  # fmt: skip
    assert len(rs._pending) == MAX_PENDING
    assert agent.counters["records.pending_evicted"] == 10


def test_reap_drops_the_record_and_a_late_copy_cannot_return() -> None:
    agent, rs, _ = sync_for()
    agent.member("peer", encode_meta(NodeMeta()), cert=cert("peer"))
    rec = make_record("peer", 7, BODY, signer("peer"))
    agent.deliver(RECORD_TAG + encode_record(rec))
    agent.member("peer", b"", kind="reap")
    assert rs.table.get("peer") is None
    agent.member("peer", encode_meta(NodeMeta()), cert=cert("peer"))
    agent.deliver(RECORD_TAG + encode_record(rec))
    assert rs.table.get("peer") is None
    assert agent.counters["records.reaped"] == 1


def test_meta_round_trip_fits_swim_and_junk_is_refused() -> None:
    meta = NodeMeta(("127.0.0.2", 4143), ("127.0.0.1", 4140), 2**62)
    data = encode_meta(meta)
    assert len(data) <= MAX_META_BYTES // 2
    assert b"pk" not in data  # no key in metadata: it is in the certificate
    assert decode_meta(data) == meta
    assert decode_meta(msgpack.packb({"pk": b"k" * 32, "rv": 3})) == NodeMeta(record_version=3)
    for bad in (
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"in": ["h", 70000]}),
        msgpack.packb({"rv": True}),
    ):
        with pytest.raises(DecodeError):
            decode_meta(bad)
    agent, rs, _ = sync_for()
    agent.member("peer", b"not our meta")
    assert "peer" not in rs.keys
    assert agent.counters["records.meta_invalid.meta_msgpack"] == 1


def test_sidecar_settings_from_flags_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        'outbound = "127.0.0.5:9000"\n'
        "[[service]]\n"
        'name = "web"\nport = 8080\ncheck = { http = "/health", interval = "200ms", timeout = "100ms" }\n'
        "[[listener]]\n"
        'service = "db"\nport = 15432\n'
    )
    s = load_settings({"bind": "127.0.0.3:7000", "inbound": None}, toml)
    sc = s.sidecar
    assert sc.enabled and sc.outbound == Address("127.0.0.5", 9000)
    assert sc.inbound_for(s.bind.host) == Address("127.0.0.3", 4143)
    assert [x.name for x in sc.services] == ["web"]
    assert sc.services[0].check is not None and sc.services[0].check.interval_ms == 200
    assert [(x.service, x.address, x.port) for x in sc.listeners] == [("db", "127.0.0.1", 15432)]
    flags = load_settings({"no_proxy": True, "inbound": "127.0.0.3"}).sidecar
    assert not flags.enabled and flags.inbound == Address("127.0.0.3", 4143)

    for text, match in (
        ("[[service]]\nname = 'web'\n", "service\\[0\\].port"),
        ("[[listener]]\nservice = 'db'\nport = 'x'\n", "listener\\[0\\].port"),
        ("[[listener]]\nservice = 'db'\nport = 1\nbogus = 1\n", "listener\\[0\\].bogus"),
        ("[[listener]]\nservice='a'\nport=1\n[[listener]]\nservice='a'\nport=2\n", "already"),
    ):
        toml.write_text(text)
        with pytest.raises(UsageError, match=match):
            load_settings({}, toml)


def test_dataplane_setting(tmp_path: Path) -> None:
    assert load_settings({}).sidecar.dataplane == "native"
    toml = tmp_path / "agent.toml"
    # HAProxy and nginx carry the mesh hop in plaintext: only with the migration switch.
    toml.write_text('dataplane = "nginx"\n')
    with pytest.raises(UsageError, match="plaintext.*--inbound-plaintext"):
        load_settings({}, toml)
    toml.write_text('dataplane = "nginx"\ninbound_plaintext = true\n')
    assert load_settings({}, toml).sidecar.dataplane == "nginx"
    assert load_settings({"dataplane": "haproxy"}, toml).sidecar.dataplane == "haproxy"  # flag wins
    with pytest.raises(UsageError, match="dataplane must be one of native, haproxy, nginx"):
        load_settings({"dataplane": "envoy"})
    toml.write_text("[[listener]]\nservice = 'db'\nport = 15432\n")
    with pytest.raises(UsageError, match="TCP listeners need --dataplane native"):
        load_settings({"dataplane": "haproxy", "inbound_plaintext": True}, toml)
