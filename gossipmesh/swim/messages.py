"""SWIM messages: frozen dataclasses and their msgpack array encoding.

Theory of operation
-------------------
Each message is a msgpack array ``[type, field, ...]`` (positional, no map keys: smaller and
faster than dicts, which matters when a simulator pushes millions of them). ``encode`` packs one
message to bytes; ``gossipmesh.wire`` joins several into a compound packet. ``decode`` turns one
raw array from ``wire.decode_packet`` back into a dataclass and validates *every* field's type and
range, because bytes from the network are hostile: anything wrong raises ``DecodeError`` and
nothing else. Trailing array items are ignored so a later minor revision can append fields
without a version bump; a missing field is an error.

Integers that the core does arithmetic on (incarnations, sequence numbers) are capped at
``MAX_COUNTER`` (2**62) so ``incarnation + 1`` can never overflow msgpack's 64-bit encoding.

The messages: ``Ping``/``Ack``/``Nack``/``PingReq`` drive failure detection; ``Alive``,
``Suspect`` and ``Dead`` (``left=True`` for a voluntary leave) are membership rumours that are
piggybacked; ``User`` carries an application payload; ``PushPull`` is the full state sent over
TCP (never inside a UDP packet).

Membership rumours are signed (``authority.py``): an ``Alive`` carries its subject's node
certificate and signature, a ``Suspect``/``Dead`` its accuser's signature (the subject's own for
a leave), and each push-pull member record the subject's latest signed alive claim plus, for a
suspect, dead or left member, the signed accusation (``member.Proof``). Signatures are exactly
``SIGNATURE_BYTES``; certificates at most ``MAX_MEMBER_CERT_BYTES``. Probe traffic (ping, ack,
nack, ping-req) is not signed: it asserts nothing that is kept.

A certificate is ~450 bytes, so only two alive claims carrying one fit a packet. An ``Alive``
therefore carries either the certificate (DER) or, when its sender expects the receiver to hold
that certificate already, a ``CERT_REF_BYTES`` reference to it (``cert_ref``: SHA-256 of the
DER); a receiver that does not hold it drops the claim (push-pull, which always carries the
certificates, fills the gap). See ``rumours.py`` for who sends which.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from gossipmesh.errors import DecodeError
from gossipmesh.ids import MAX_NODE_NAME_BYTES, Address
from gossipmesh.swim.member import (
    MAX_META_BYTES,
    Member,
    MemberState,
    Proof,
    interned_member,
)
from gossipmesh.wire import decode_packet, decode_stream_payload, encode_stream_payload, pack

MAX_COUNTER = 1 << 62
SIGNATURE_BYTES = 64  # raw ECDSA P-256 r || s
# A node certificate is ~450 bytes (633 with a 128-byte name); an alive claim must fit a packet.
MAX_MEMBER_CERT_BYTES = 1024
CERT_REF_BYTES = 32  # a reference to a certificate (no DER certificate is this short)
MAX_HOST_BYTES = 255
MAX_USER_PAYLOAD_BYTES = 65_507
# Bound on entries in one push-pull state; the byte limit bounds it too.
MAX_PUSH_PULL_MEMBERS = 1_000_000


class MsgType(enum.IntEnum):
    PING = 1
    ACK = 2
    NACK = 3
    PING_REQ = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    USER = 8
    PUSH_PULL = 9


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? ``suspect_incarnation`` is set when the sender holds the target suspect
    (Lifeguard's buddy system): the target refutes at once instead of waiting for gossip.
    ``source`` names the sender (memberlist's SourceNode), so a target that holds the *sender*
    suspect can say so in its ack; None from senders that do not say."""

    seq: int
    target: str
    suspect_incarnation: int | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    """An intermediary could not reach the target: proof that *it* is alive and talking to us."""

    seq: int


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` for me and forward its ack (or a nack) with ``seq``."""

    seq: int
    target: str
    target_address: Address
    suspect_incarnation: int | None = None


@dataclass(frozen=True, slots=True)
class Alive:
    """The subject's own claim, with its certificate and its signature over the claim."""

    name: str
    incarnation: int
    address: Address
    meta: bytes
    cert: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    source: str  # who suspects; Lifeguard counts confirmations from distinct sources
    signature: bytes  # the source's, over the accusation


@dataclass(frozen=True, slots=True)
class Dead:
    name: str
    incarnation: int
    source: str
    left: bool  # the member announced its own departure (source == name)
    signature: bytes  # the source's (for a leave: the subject's own), over the accusation


@dataclass(frozen=True, slots=True)
class User:
    """An application payload. ``relay`` payloads are re-gossiped by each first receiver."""

    payload: bytes
    relay: bool = True


# One member's state inside a push-pull exchange is exactly a member snapshot, so a node sends its
# table's own snapshots and a receiver can keep the (interned) ones it decodes.
MemberRecord = Member


@dataclass(frozen=True, slots=True)
class PushPull:
    join: bool
    members: tuple[MemberRecord, ...]


Message = Ping | Ack | Nack | PingReq | Alive | Suspect | Dead | User
AnyMessage = Message | PushPull

_STATE_CODES = {
    MemberState.ALIVE: 0,
    MemberState.SUSPECT: 1,
    MemberState.DEAD: 2,
    MemberState.LEFT: 3,
}
_CODE_STATES = {code: state for state, code in _STATE_CODES.items()}


# --- encoding ------------------------------------------------------------------------------------


def to_list(msg: AnyMessage) -> list[Any]:
    """The positional msgpack form of a message."""
    if type(msg) is Ping:
        if msg.source is None:
            return [MsgType.PING, msg.seq, msg.target, msg.suspect_incarnation]
        return [MsgType.PING, msg.seq, msg.target, msg.suspect_incarnation, msg.source]
    if type(msg) is Ack:
        return [MsgType.ACK, msg.seq]
    if type(msg) is Nack:
        return [MsgType.NACK, msg.seq]
    if type(msg) is PingReq:
        a = msg.target_address
        return [MsgType.PING_REQ, msg.seq, msg.target, a.host, a.port, msg.suspect_incarnation]
    if type(msg) is Alive:
        a = msg.address
        return [
            MsgType.ALIVE, msg.name, msg.incarnation, a.host, a.port, msg.meta, msg.cert,
            msg.signature,
        ]  # fmt: skip
    if type(msg) is Suspect:
        return [MsgType.SUSPECT, msg.name, msg.incarnation, msg.source, msg.signature]
    if type(msg) is Dead:
        return [MsgType.DEAD, msg.name, msg.incarnation, msg.source, msg.left, msg.signature]
    if type(msg) is User:
        return [MsgType.USER, msg.payload, msg.relay]
    if type(msg) is PushPull:
        return [
            MsgType.PUSH_PULL,
            msg.join,
            [_record_list(r) for r in msg.members],
        ]
    raise TypeError(f"not a SWIM message: {msg!r}")


def _record_list(r: MemberRecord) -> list[Any]:
    p = r.proof
    if p is None:
        raise ValueError(f"member {r.name!r} has no proof to send")
    return [
        r.name, r.address.host, r.address.port, r.incarnation, _STATE_CODES[r.state], r.meta,
        p.cert, p.alive_incarnation, p.alive_signature, p.accuser, p.accusation,
    ]  # fmt: skip


def encode(msg: AnyMessage) -> bytes:
    """Pack one message (not a packet: see ``gossipmesh.wire.encode_packet``)."""
    return pack(to_list(msg))


def encode_push_pull(msg: PushPull) -> bytes:
    """A versioned stream payload holding the push-pull state."""
    return encode_stream_payload(to_list(msg))


# --- decoding ------------------------------------------------------------------------------------

# Strings this short (in characters) are within the byte limits whatever their encoding (a code
# point is at most 4 UTF-8 bytes), so the fast paths need not encode them to check.
_FAST_NAME_CHARS = MAX_NODE_NAME_BYTES // 4
_FAST_HOST_CHARS = MAX_HOST_BYTES // 4


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_COUNTER) -> int:
    # bool is a subclass of int; a hostile True must not pass as 1.
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    return v


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _str(v: Any, what: str, max_bytes: int, min_len: int = 1) -> str:
    if type(v) is not str or len(v) < min_len or len(v) > max_bytes:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    # len() counts characters; only long-ish strings can exceed the byte limit when encoded.
    if len(v) * 4 > max_bytes and len(v.encode("utf-8", "surrogatepass")) > max_bytes:
        raise DecodeError("bad_field", f"{what}: too long")
    return v


def _name(v: Any, what: str = "name") -> str:
    return _str(v, what, MAX_NODE_NAME_BYTES)


def _bytes(v: Any, what: str, max_bytes: int) -> bytes:
    if type(v) is not bytes or len(v) > max_bytes:
        raise DecodeError("bad_field", f"{what}: {type(v).__name__}")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    return v


def _address(host: Any, port: Any) -> Address:
    return Address(_str(host, "host", MAX_HOST_BYTES), _int(port, "port", 0, 65535))


def _need(raw: list[Any], n: int) -> None:
    if len(raw) < n:
        raise DecodeError("bad_message", f"type {raw[0]} needs {n} items, got {len(raw)}")


def _d_ping(r: list[Any]) -> Ping:
    _need(r, 4)
    source = _name(r[4], "source") if len(r) > 4 and r[4] is not None else None
    return Ping(
        _int(r[1], "seq"), _name(r[2], "target"), _opt_int(r[3], "suspect_incarnation"), source
    )


def _d_ack(r: list[Any]) -> Ack:
    _need(r, 2)
    return Ack(_int(r[1], "seq"))


def _d_nack(r: list[Any]) -> Nack:
    _need(r, 2)
    return Nack(_int(r[1], "seq"))


def _d_ping_req(r: list[Any]) -> PingReq:
    _need(r, 6)
    return PingReq(
        _int(r[1], "seq"),
        _name(r[2], "target"),
        _address(r[3], r[4]),
        _opt_int(r[5], "suspect_incarnation"),
    )


def _signature(v: Any, what: str) -> bytes:
    if type(v) is not bytes or len(v) != SIGNATURE_BYTES:
        raise DecodeError("bad_field", f"{what}: not a {SIGNATURE_BYTES}-byte signature")
    return v


def _cert(v: Any, refs: bool = False) -> bytes:
    lo = CERT_REF_BYTES if refs else CERT_REF_BYTES + 1
    if type(v) is not bytes or not lo <= len(v) <= MAX_MEMBER_CERT_BYTES:
        raise DecodeError("bad_field", "cert")
    return v


def cert_ref(cert: bytes) -> bytes:
    """The reference an ``Alive`` may carry instead of the certificate ``cert``."""
    return hashlib.sha256(cert).digest()


def is_cert_ref(cert: bytes) -> bool:
    return len(cert) == CERT_REF_BYTES


def alive_ok(r: list[Any]) -> bool:
    """Fast, allocation-free validity check of a raw alive array (all checks inline: alive
    rumours are most of the traffic while a cluster forms). False means "use ``_d_alive`` for
    the exact verdict", which may still accept an unusually long name."""
    if len(r) < 8:
        return False
    cert, sig = r[6], r[7]
    return (
        type(cert) is bytes
        and CERT_REF_BYTES <= len(cert) <= MAX_MEMBER_CERT_BYTES
        and type(sig) is bytes
        and len(sig) == SIGNATURE_BYTES
        and _plainly_valid(r[1], r[2], r[3], r[4], r[5])
    )


def _plainly_valid(name: object, inc: object, host: object, port: object, meta: object) -> bool:
    """The cheap check shared by every member-carrying decoder: a member that passes it is
    certainly valid; one that fails goes through the full, exact validation."""
    return (
        type(name) is str
        and 0 < len(name) <= _FAST_NAME_CHARS
        and type(inc) is int
        and 0 <= inc <= MAX_COUNTER
        and type(host) is str
        and 0 < len(host) <= _FAST_HOST_CHARS
        and type(port) is int
        and 0 <= port <= 65535
        and type(meta) is bytes
        and len(meta) <= MAX_META_BYTES
    )


def alive_from_checked(r: list[Any]) -> Alive:
    """Build an ``Alive`` from a raw array that passed ``alive_ok``."""
    return Alive(r[1], r[2], Address(r[3], r[4]), r[5], r[6], r[7])


def _d_alive(r: list[Any]) -> Alive:
    if alive_ok(r):
        return alive_from_checked(r)
    _need(r, 8)  # slow path: exact checks and a precise error
    return Alive(
        _name(r[1]),
        _int(r[2], "incarnation"),
        _address(r[3], r[4]),
        _bytes(r[5], "meta", MAX_META_BYTES),
        _cert(r[6], refs=True),
        _signature(r[7], "signature"),
    )


def _d_suspect(r: list[Any]) -> Suspect:
    if len(r) >= 5:
        name, inc, src, sig = r[1], r[2], r[3], r[4]
        if (
            type(name) is str
            and 0 < len(name) <= _FAST_NAME_CHARS
            and type(inc) is int
            and 0 <= inc <= MAX_COUNTER
            and type(src) is str
            and 0 < len(src) <= _FAST_NAME_CHARS
            and type(sig) is bytes
            and len(sig) == SIGNATURE_BYTES
        ):
            return Suspect(name, inc, src, sig)
    _need(r, 5)
    return Suspect(
        _name(r[1]), _int(r[2], "incarnation"), _name(r[3], "source"), _signature(r[4], "signature")
    )


def _d_dead(r: list[Any]) -> Dead:
    _need(r, 6)
    return Dead(
        _name(r[1]),
        _int(r[2], "incarnation"),
        _name(r[3], "source"),
        _bool(r[4], "left"),
        _signature(r[5], "signature"),
    )


def _d_user(r: list[Any]) -> User:
    _need(r, 3)
    return User(_bytes(r[1], "payload", MAX_USER_PAYLOAD_BYTES), _bool(r[2], "relay"))


def _d_record(e: Any) -> MemberRecord:
    if type(e) is not list or len(e) < 11:
        raise DecodeError("bad_field", "push-pull member entry")
    name, host, port, inc, code, meta = e[0], e[1], e[2], e[3], e[4], e[5]
    state = _CODE_STATES.get(code) if type(code) is int else None
    if state is None:
        raise DecodeError("bad_field", f"member state {code!r:.20}")
    if not _plainly_valid(name, inc, host, port, meta):
        name = _name(name)
        host, port = _address(host, port).as_tuple()
        inc = _int(inc, "incarnation")
        meta = _bytes(meta, "meta", MAX_META_BYTES)
    return interned_member(
        name, Address(host, port), inc, state, meta, _d_proof(e, name, inc, state)
    )


def _d_proof(e: list[Any], name: str, inc: int, state: MemberState) -> Proof:
    """The record's proof, and the invariants an honest sender keeps (``member.Proof``)."""
    cert, alive_inc = _cert(e[6]), _int(e[7], "alive_incarnation")
    alive_sig, accuser, accusation = _signature(e[8], "alive_signature"), e[9], e[10]
    if state is MemberState.ALIVE:
        if alive_inc != inc or accuser != "" or accusation != b"":
            raise DecodeError("bad_field", "alive record with an accusation")
        return Proof(cert, alive_inc, alive_sig)
    if not alive_inc <= inc <= alive_inc + 1:
        raise DecodeError("bad_field", "accusation beyond the signed incarnation")
    accuser = _name(accuser, "accuser")
    if state is MemberState.LEFT and accuser != name:
        raise DecodeError("bad_field", "a leave not signed by the member")
    return Proof(cert, alive_inc, alive_sig, accuser, _signature(accusation, "accusation"))


def _d_push_pull(r: list[Any]) -> PushPull:
    _need(r, 3)
    join = _bool(r[1], "join")
    entries = r[2]
    if type(entries) is not list or len(entries) > MAX_PUSH_PULL_MEMBERS:
        raise DecodeError("bad_field", "push-pull members")
    return PushPull(join, tuple(_d_record(e) for e in entries))


_PACKET_DECODERS: dict[MsgType, Callable[[list[Any]], Message]] = {
    MsgType.PING: _d_ping,
    MsgType.ACK: _d_ack,
    MsgType.NACK: _d_nack,
    MsgType.PING_REQ: _d_ping_req,
    MsgType.ALIVE: _d_alive,
    MsgType.SUSPECT: _d_suspect,
    MsgType.DEAD: _d_dead,
    MsgType.USER: _d_user,
}
_ALL_DECODERS: dict[MsgType, Callable[[list[Any]], AnyMessage]] = {
    **_PACKET_DECODERS,
    MsgType.PUSH_PULL: _d_push_pull,
}
# Plain-int keys so a lookup with a decoded int never goes through IntEnum hashing.
_ALIVE_CODE = int(MsgType.ALIVE)
_PACKET_BY_CODE: dict[int, Callable[[list[Any]], Message]] = {
    int(k): v for k, v in _PACKET_DECODERS.items()
}
_ALL_BY_CODE: dict[int, Callable[[list[Any]], AnyMessage]] = {
    int(k): v for k, v in _ALL_DECODERS.items()
}


def from_list(raw: Any, *, allow_push_pull: bool = True) -> AnyMessage:
    """Validate one raw message array and build its dataclass; ``DecodeError`` if anything is off."""
    if type(raw) is not list or not raw:
        raise DecodeError("bad_message", "message is not a non-empty array")
    code = raw[0]
    table = _ALL_BY_CODE if allow_push_pull else _PACKET_BY_CODE
    decoder = table.get(code) if type(code) is int else None
    if decoder is None:
        raise DecodeError("unknown_type", f"message type {code!r:.20}")
    return decoder(raw)


def decode(data: bytes) -> AnyMessage:
    """Unpack and validate one message packed by ``encode``."""
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise DecodeError("malformed", f"{type(exc).__name__}") from None
    return from_list(raw)


def decode_packet_messages(data: bytes, max_bytes: int) -> list[Message]:
    """Decode and validate every message of a compound packet, or raise ``DecodeError``.

    All-or-nothing: a packet with one bad message is dropped whole, so a bad packet never
    changes membership halfway.
    """
    decoders = _PACKET_BY_CODE
    out: list[Message] = []
    for raw in decode_packet(data, max_bytes):
        if type(raw) is not list or not raw:
            raise DecodeError("bad_message", "message is not a non-empty array")
        code = raw[0]
        decoder = decoders.get(code) if type(code) is int else None
        if decoder is None:
            raise DecodeError("unknown_type", f"message type {code!r:.20}")
        out.append(decoder(raw))
    return out


def decode_packet_lazy(data: bytes, max_bytes: int) -> list[Message | list[Any]]:
    """Like ``decode_packet_messages`` (validates everything, all-or-nothing), but valid alive
    messages stay raw arrays ``[5, name, incarnation, host, port, meta, cert, signature]``: the
    receiver usually already knows that news and can skip it without building any object (or
    checking any signature). Build the rest with ``alive_from_checked``."""
    decoders = _PACKET_BY_CODE
    out: list[Message | list[Any]] = []
    for raw in decode_packet(data, max_bytes):
        if type(raw) is not list or not raw:
            raise DecodeError("bad_message", "message is not a non-empty array")
        code = raw[0]
        if code == _ALIVE_CODE and type(code) is int and alive_ok(raw):
            out.append(raw)
            continue
        decoder = decoders.get(code) if type(code) is int else None
        if decoder is None:
            raise DecodeError("unknown_type", f"message type {code!r:.20}")
        out.append(decoder(raw))
    return out


def decode_push_pull(data: bytes, max_bytes: int) -> PushPull:
    last = _last_push_pull
    if last is not None and last[1] == max_bytes and last[0] == data:
        return last[2]
    raw = decode_stream_payload(data, max_bytes)
    msg = from_list(raw)
    if type(msg) is not PushPull:
        raise DecodeError("unexpected_type", "stream payload is not a push-pull state")
    _remember_push_pull(data, max_bytes, msg)
    return msg


# The last push-pull decoded, because one payload is often decoded many times in a row: a seed's
# state handed to every host of a simulated cluster (10,000 decodes of 10,000 members each), or
# one host answering a burst of joins. The result is immutable, so sharing it is safe; a
# different payload costs one failed length-or-bytes comparison.
_last_push_pull: tuple[bytes, int, PushPull] | None = None


def _remember_push_pull(data: bytes, max_bytes: int, msg: PushPull) -> None:
    global _last_push_pull
    _last_push_pull = (data, max_bytes, msg)
