"""Wire format of SWIM messages: round-trips, hostile bytes, size limits, stream frames."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmesh.errors import DecodeError
from gossipmesh.ids import MAX_NODE_NAME_BYTES, Address
from gossipmesh.swim.config import SwimConfig
from gossipmesh.swim.fields import (
    CERT_REF_BYTES,
    MAX_COUNTER,
    MAX_MEMBER_CERT_BYTES,
    SIGNATURE_BYTES,
)
from gossipmesh.swim.member import MAX_META_BYTES, MemberState, Proof
from gossipmesh.swim.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    User,
    alive_from_checked,
    decode,
    decode_packet_lazy,
    decode_packet_messages,
    encode,
)
from gossipmesh.swim.node import SwimNode
from gossipmesh.swim.state_codec import MemberRecord, PushPull, decode_push_pull, encode_push_pull
from gossipmesh.wire import (
    PACKET_OVERHEAD_BYTES,
    FrameDecoder,
    PacketBuilder,
    decode_packet,
    encode_frame,
    encode_packet,
    packet_size,
)
from simulations.identity import EPOCH_MS, SimIdentities

IDS = SimIdentities("wire-test")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

counters = st.integers(0, MAX_COUNTER)
# Short names of any characters, and long ASCII ones up to the byte limit (the slow path).
names = st.text(min_size=1, max_size=MAX_NODE_NAME_BYTES // 4) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=33, max_size=MAX_NODE_NAME_BYTES
)
addresses = st.builds(Address, st.text(min_size=1, max_size=40), st.integers(0, 65535))
metas = st.binary(max_size=MAX_META_BYTES)
opt_inc = st.none() | counters
certs = st.binary(min_size=CERT_REF_BYTES + 1, max_size=MAX_MEMBER_CERT_BYTES)
alive_certs = certs | st.binary(min_size=CERT_REF_BYTES, max_size=CERT_REF_BYTES)  # or a ref
sigs = st.binary(min_size=SIGNATURE_BYTES, max_size=SIGNATURE_BYTES)

messages = st.one_of(
    st.builds(Ping, counters, names, opt_inc, st.none() | names),
    st.builds(Ack, counters),
    st.builds(Nack, counters),
    st.builds(PingReq, counters, names, addresses, opt_inc),
    st.builds(Alive, names, counters, addresses, metas, alive_certs, sigs),
    st.builds(Suspect, names, counters, names, sigs),
    st.builds(Dead, names, counters, names, st.booleans(), sigs),
    st.builds(User, st.binary(max_size=1000), st.booleans()),
)


@st.composite
def records(draw: st.DrawFn) -> MemberRecord:
    """A member record whose proof keeps the invariants an honest sender keeps."""
    name, inc = draw(names), draw(counters)
    state = draw(st.sampled_from(list(MemberState)))
    cert, sig = draw(certs), draw(sigs)
    if state is MemberState.ALIVE:
        proof = Proof(cert, inc, sig)
    else:
        alive_inc = draw(st.sampled_from([inc, max(0, inc - 1)]))
        accuser = name if state is MemberState.LEFT else draw(names)
        proof = Proof(cert, alive_inc, sig, accuser, draw(sigs))
    return MemberRecord(name, draw(addresses), inc, state, draw(metas), proof)


push_pulls = st.builds(PushPull, st.booleans(), st.lists(records(), max_size=8).map(tuple))


@FAST
@given(messages)
def test_every_message_round_trips(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@FAST
@given(st.lists(messages, min_size=1, max_size=10))
def test_compound_packets_round_trip(msgs: list[object]) -> None:
    parts = [encode(m) for m in msgs]  # type: ignore[arg-type]
    data = encode_packet(parts)
    assert len(data) == packet_size(parts)
    assert decode_packet_messages(data, 1 << 20) == msgs


@FAST
@given(st.lists(messages, min_size=1, max_size=10))
def test_lazy_decode_agrees_with_full_decode(msgs: list[object]) -> None:
    data = encode_packet([encode(m) for m in msgs])  # type: ignore[arg-type]
    lazy = [
        alive_from_checked(m) if isinstance(m, list) else m
        for m in decode_packet_lazy(data, 1 << 20)
    ]
    assert lazy == decode_packet_messages(data, 1 << 20) == msgs


@FAST
@given(push_pulls)
def test_push_pull_round_trips(pp: PushPull) -> None:
    got = decode_push_pull(encode_push_pull(pp), 1 << 24)
    assert got.join == pp.join and tuple(got.records) == pp.members


def test_packet_builder_stays_within_limit() -> None:
    b = PacketBuilder(1400)
    part = encode(Alive("node-x", 3, Address("10.1.2.3", 7946), b"m" * 100, b"c" * 450, b"s" * 64))
    while b.add(part):
        pass
    data = b.build()
    assert len(data) <= 1400
    assert b.remaining_bytes < len(part)
    assert PACKET_OVERHEAD_BYTES + len(b) * len(part) >= len(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x02\x91\x92\x02\x01", "version"),
        (b"\x01", "truncated"),
        (b"\x01\x92\x92\x02", "truncated"),  # array of 2 promised, 1 incomplete item
        (b"\x01\x91\x92\x02\x01\xc0", "trailing_bytes"),
        (b"\x01\xc1", "malformed"),  # 0xc1 is never used in msgpack
        (b"\x01\x90", "malformed"),  # an empty packet
        (b"\x01\x91\x92\x63\x01", "unknown_type"),
        (b"\x01\x91\x92\x09\x01", "unknown_type"),  # push-pull is not allowed in a datagram
        (b"\x01\x91\x91\x01", "bad_message"),  # ping without its fields
        (b"\x01\x91\x92\x02\xc3", "bad_field"),  # ack with seq=True
        (b"\x01\x91\x92\x02\xff", "bad_field"),  # negative seq
        (b"\x01\x91\x01", "bad_message"),  # a message that is not an array
        (b"\x01" + b"\x91" + b"\xc4\xff" + b"x" * 1500, "oversized"),
    ],
)
def test_bad_packets_raise_decode_error_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_packet_messages(data, 1400)
    assert exc.value.reason == reason


def test_field_validation_rejects_wrong_types_and_ranges() -> None:
    def pk(*msg: object) -> bytes:
        return encode_packet([msgpack.packb(list(msg), use_bin_type=True)])

    bad = [
        pk(1, 1, "", None),  # empty target name
        pk(1, 1, "x" * (MAX_NODE_NAME_BYTES + 1), None),
        pk(1, 1, "t", "inc"),
        pk(5, "n", 0, "h", 70_000, b""),  # port out of range
        pk(5, "n", 0, "h", 1, "meta-as-str"),
        pk(5, "n", 0, "h", 1, b"m" * (MAX_META_BYTES + 1)),
        pk(5, "n", MAX_COUNTER + 1, "h", 1, b""),  # incarnation that could overflow on +1
        pk(7, "n", 0, "src", 1),  # left flag not a bool
        pk(8, "payload-as-str", True),
        pk(6, "n", 0, {"a": 1}),
    ]
    for data in bad:
        with pytest.raises(DecodeError):
            decode_packet_messages(data, 65_000)


def test_decode_only_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"\xc1")
    with pytest.raises(DecodeError):
        decode_push_pull(b"\x01" + msgpack.packb([1, 2, "x"]), 1 << 20)  # not a push-pull
    with pytest.raises(DecodeError):
        decode_push_pull(encode_push_pull(PushPull(True, ())), 3)  # over the limit


def _node() -> SwimNode:
    auth = IDS.authority("me", lambda: EPOCH_MS)
    node = SwimNode(
        "me", Address("10.0.0.1", 7946), SwimConfig.lan(), random.Random(1), 0, authority=auth
    )
    node.start(0)
    for i in range(4):
        alive = IDS.alive(f"p{i}", 0, Address(f"10.0.0.{i + 2}", 7946))
        node.handle_packet(Address("10.0.0.2", 7946), encode_packet([encode(alive)]), 0)
    assert len(node.members()) == 5
    return node


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_give_only_decode_error_and_a_counted_drop(data: bytes) -> None:
    try:
        decode_packet_messages(data, 1400)
        decodes = True
    except DecodeError:
        decodes = False
    node = _node()
    before = node.members()
    drops = node.stats["drop.decode"]
    node.handle_packet(Address("10.9.9.9", 1), data, 5)  # a bug would raise out of here
    if not decodes:
        assert node.members() == before
        assert node.stats["drop.decode"] == drops + 1


def _valid_packet() -> bytes:
    msgs: list[Message] = [
        Ping(12, "me", None),
        IDS.alive("p9", 4, Address("10.0.0.99", 7946), b"meta"),
        IDS.suspect("p1", 0, "p2"),
        IDS.dead("p3", 0, "p3", True),
        User(b"payload", True),
    ]
    return encode_packet([encode(m) for m in msgs])


@FAST
@given(st.data())
def test_bit_flips_give_only_decode_error_or_a_valid_packet(data: st.DataObject) -> None:
    raw = bytearray(_valid_packet())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[i // 8] ^= 1 << (i % 8)
    flipped = bytes(raw)
    try:
        decode_packet_messages(flipped, 1400)
        decodes = True
    except DecodeError:
        decodes = False
    node = _node()
    before = node.members()
    node.handle_packet(Address("10.0.0.2", 7946), flipped, 5)  # a bug would raise out of here
    if not decodes:
        assert node.members() == before
        assert node.stats["drop.decode"] == 1


def test_truncations_of_a_valid_packet_are_all_dropped() -> None:
    good = _valid_packet()
    node = _node()
    before = node.members()
    for cut in range(len(good)):
        node.handle_packet(Address("10.0.0.2", 7946), good[:cut], 5)
    assert node.members() == before
    assert node.stats["drop.decode"] == len(good)


def test_oversized_and_unknown_version_are_counted_by_reason() -> None:
    node = _node()
    node.handle_packet(Address("10.0.0.2", 7946), b"\x01" + b"\x00" * 1500, 0)
    node.handle_packet(Address("10.0.0.2", 7946), b"\x07" + _valid_packet()[1:], 0)
    assert node.stats["drop.decode.oversized"] == 1
    assert node.stats["drop.decode.version"] == 1


# --- stream frames ------------------------------------------------------------------------------


@FAST
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 50))
def test_frames_reassemble_from_any_chunking(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(1000)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got.extend(dec.feed(stream[i : i + chunk]))
    assert got == payloads
    dec.close()


def test_frame_over_limit_is_refused_before_buffering_the_body() -> None:
    dec = FrameDecoder(100)
    with pytest.raises(DecodeError) as exc:
        dec.feed((10**6).to_bytes(4, "big"))
    assert exc.value.reason == "frame_oversized"


def test_unfinished_frame_at_close_is_truncated() -> None:
    dec = FrameDecoder(100)
    assert dec.feed(encode_frame(b"hello")[:6]) == []
    with pytest.raises(DecodeError) as exc:
        dec.close()
    assert exc.value.reason == "truncated"


def test_decode_packet_raw_limits() -> None:
    with pytest.raises(DecodeError):
        decode_packet(b"\x01" + msgpack.packb(list(range(300))), 1400)
