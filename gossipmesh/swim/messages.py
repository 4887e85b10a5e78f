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


The messages: ``Ping``/``Ack``/``Nack``/``PingReq`` drive failure detection; ``Alive``,
``Suspect`` and ``Dead`` (``left=True`` for a voluntary leave) are membership rumours that are
piggybacked; ``User`` carries an application payload. The full state sent over TCP (push-pull)
has its own codec, ``state_codec.py``; field validators are in ``fields.py``.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address
from gossipmesh.swim.fields import (
    CERT_REF_BYTES,
    FAST_NAME_CHARS,
    MAX_COUNTER,
    MAX_MEMBER_CERT_BYTES,
    SIGNATURE_BYTES,
    address_field,
    bool_field,
    bytes_field,
    cert_field,
    int_field,
    name_field,
    opt_int_field,
    plainly_valid,
    signature_field,
)
from gossipmesh.swim.member import MAX_META_BYTES
from gossipmesh.wire import BAD_BYTES, decode_packet, pack

MAX_USER_PAYLOAD_BYTES = 65_507


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
    WANT = 10


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
class Want:
    """Please send me ``name``'s own signed alive claim, if yours is newer than ``incarnation``
    (with its certificate when ``cert``): asked of a sender whose news about ``name`` we could not
    check -- a certificate reference we cannot resolve, or an accusation above the incarnation
    bound because we missed the subject's refutations (``rumours.py``)."""

    name: str
    incarnation: int
    cert: bool


@dataclass(frozen=True, slots=True)
class User:
    """An application payload. ``relay`` payloads are re-gossiped by each first receiver."""

    payload: bytes
    relay: bool = True


Message = Ping | Ack | Nack | PingReq | Alive | Suspect | Dead | User | Want

# --- encoding ------------------------------------------------------------------------------------


def to_list(msg: Message) -> list[Any]:
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
    if type(msg) is Want:
        return [MsgType.WANT, msg.name, msg.incarnation, msg.cert]
    raise TypeError(f"not a SWIM message: {msg!r}")


def encode(msg: Message) -> bytes:
    """Pack one message (not a packet: see ``gossipmesh.wire.encode_packet``)."""
    return pack(to_list(msg))


# --- decoding ------------------------------------------------------------------------------------


def _need(raw: list[Any], n: int) -> None:
    if len(raw) < n:
        raise DecodeError("bad_message", f"type {raw[0]} needs {n} items, got {len(raw)}")


def _d_ping(r: list[Any]) -> Ping:
    _need(r, 4)
    source = name_field(r[4], "source") if len(r) > 4 and r[4] is not None else None
    return Ping(
        int_field(r[1], "seq"),
        name_field(r[2], "target"),
        opt_int_field(r[3], "suspect_incarnation"),
        source,
    )


def _d_ack(r: list[Any]) -> Ack:
    _need(r, 2)
    return Ack(int_field(r[1], "seq"))


def _d_nack(r: list[Any]) -> Nack:
    _need(r, 2)
    return Nack(int_field(r[1], "seq"))


def _d_ping_req(r: list[Any]) -> PingReq:
    _need(r, 6)
    return PingReq(
        int_field(r[1], "seq"),
        name_field(r[2], "target"),
        address_field(r[3], r[4]),
        opt_int_field(r[5], "suspect_incarnation"),
    )


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
        and plainly_valid(r[1], r[2], r[3], r[4], r[5])
    )


def alive_from_checked(r: list[Any]) -> Alive:
    """Build an ``Alive`` from a raw array that passed ``alive_ok``."""
    return Alive(r[1], r[2], Address(r[3], r[4]), r[5], r[6], r[7])


def _d_alive(r: list[Any]) -> Alive:
    if alive_ok(r):
        return alive_from_checked(r)
    _need(r, 8)  # slow path: exact checks and a precise error
    return Alive(
        name_field(r[1]),
        int_field(r[2], "incarnation"),
        address_field(r[3], r[4]),
        bytes_field(r[5], "meta", MAX_META_BYTES),
        cert_field(r[6], refs=True),
        signature_field(r[7], "signature"),
    )


def _d_suspect(r: list[Any]) -> Suspect:
    if len(r) >= 5:
        name, inc, src, sig = r[1], r[2], r[3], r[4]
        if (
            type(name) is str
            and 0 < len(name) <= FAST_NAME_CHARS
            and type(inc) is int
            and 0 <= inc <= MAX_COUNTER
            and type(src) is str
            and 0 < len(src) <= FAST_NAME_CHARS
            and type(sig) is bytes
            and len(sig) == SIGNATURE_BYTES
        ):
            return Suspect(name, inc, src, sig)
    _need(r, 5)
    return Suspect(
        name_field(r[1]),
        int_field(r[2], "incarnation"),
        name_field(r[3], "source"),
        signature_field(r[4], "signature"),
    )


def _d_dead(r: list[Any]) -> Dead:
    _need(r, 6)
    return Dead(
        name_field(r[1]),
        int_field(r[2], "incarnation"),
        name_field(r[3], "source"),
        bool_field(r[4], "left"),
        signature_field(r[5], "signature"),
    )


def _d_user(r: list[Any]) -> User:
    _need(r, 3)
    return User(bytes_field(r[1], "payload", MAX_USER_PAYLOAD_BYTES), bool_field(r[2], "relay"))


def _d_want(r: list[Any]) -> Want:
    _need(r, 4)
    return Want(name_field(r[1]), int_field(r[2], "incarnation"), bool_field(r[3], "cert"))


_PACKET_DECODERS: dict[MsgType, Callable[[list[Any]], Message]] = {
    MsgType.PING: _d_ping,
    MsgType.ACK: _d_ack,
    MsgType.NACK: _d_nack,
    MsgType.PING_REQ: _d_ping_req,
    MsgType.ALIVE: _d_alive,
    MsgType.SUSPECT: _d_suspect,
    MsgType.DEAD: _d_dead,
    MsgType.USER: _d_user,
    MsgType.WANT: _d_want,
}
# Plain-int keys so a lookup with a decoded int never goes through IntEnum hashing.
_ALIVE_CODE = int(MsgType.ALIVE)
_PACKET_BY_CODE: dict[int, Callable[[list[Any]], Message]] = {
    int(k): v for k, v in _PACKET_DECODERS.items()
}


def from_list(raw: Any) -> Message:
    """Validate one raw message array and build its dataclass; ``DecodeError`` if anything is off."""
    if type(raw) is not list or not raw:
        raise DecodeError("bad_message", "message is not a non-empty array")
    code = raw[0]
    decoder = _PACKET_BY_CODE.get(code) if type(code) is int else None
    if decoder is None:
        raise DecodeError("unknown_type", f"message type {code!r:.20}")
    return decoder(raw)


def decode(data: bytes) -> Message:
    """Unpack and validate one message packed by ``encode``."""
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except BAD_BYTES as exc:
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
