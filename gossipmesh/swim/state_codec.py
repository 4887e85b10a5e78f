"""The push-pull state: one node's whole member table, with every member's proof, over a stream.

Theory of operation
-------------------
A push-pull payload is a versioned stream payload (``wire.encode_stream_payload``) holding
``[PUSH_PULL, join, [record, ...]]``, each record positional::

    [name, host, port, incarnation, state, meta,
     cert, alive_incarnation, alive_signature, accuser, accusation]

which is a ``Member`` and its ``Proof`` (``member.py``): the subject's certificate and its signed
alive claim, and for a suspect, dead or left member the signed accusation. A sender keeps the
invariants of ``Proof``; a record that breaks them is bad input.

Decoding is lazy (``RecordList``). Unpacking the payload is one C call (~20 ms for a 20,000-member
state of 11 MB), but validating and building every record took ten times that, in one go, before
the merge could even start spreading its work over turns of the owner task. So
``decode_push_pull`` checks only the envelope, and each record is validated and built when the
merge reaches it: a state that is abandoned after a few forged records costs only those, and a
bad record is one rejection, not the loss of the whole exchange (every record is checked on its
own merits anyway, signatures included).

The last decoded payload is remembered, because one payload is often decoded many times in a row:
a seed's state handed to every host of a simulated cluster (10,000 decodes of 10,000 members
each), or one host answering a burst of joins. Its records are built once and shared (they are
immutable, interned snapshots).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address
from gossipmesh.swim.fields import (
    address_field,
    bool_field,
    bytes_field,
    cert_field,
    int_field,
    name_field,
    plainly_valid,
    signature_field,
)
from gossipmesh.swim.member import MAX_META_BYTES, Member, MemberState, Proof, interned_member
from gossipmesh.swim.messages import MsgType
from gossipmesh.wire import decode_stream_payload, encode_stream_payload

# Bound on entries in one push-pull state; the byte limit bounds it too.
MAX_PUSH_PULL_MEMBERS = 1_000_000

# One member's state inside a push-pull exchange is exactly a member snapshot, so a node sends its
# table's own snapshots and a receiver can keep the (interned) ones it decodes.
MemberRecord = Member

_STATE_CODES = {
    MemberState.ALIVE: 0,
    MemberState.SUSPECT: 1,
    MemberState.DEAD: 2,
    MemberState.LEFT: 3,
}
_CODE_STATES = {code: state for state, code in _STATE_CODES.items()}
_PUSH_PULL = int(MsgType.PUSH_PULL)


@dataclass(frozen=True, slots=True)
class PushPull:
    """A state to send: whether it answers a join, and the member records."""

    join: bool
    members: tuple[MemberRecord, ...]


class RecordList:
    """A received state's records, each validated and built the first time it is asked for."""

    __slots__ = ("_built", "_raw")

    def __init__(self, raw: list[Any]) -> None:
        self._raw = raw
        self._built: list[MemberRecord | DecodeError | None] = [None] * len(raw)

    def __len__(self) -> int:
        return len(self._raw)

    def get(self, i: int) -> MemberRecord:
        """Record ``i``; ``DecodeError`` if that entry is bad (and again on every later ask)."""
        r = self._built[i]
        if r is None:
            try:
                r = record_from_list(self._raw[i])
            except DecodeError as exc:
                r = exc
            self._built[i] = r
        if isinstance(r, DecodeError):
            raise r
        return r

    def index_of(self, name: str) -> int | None:
        """Where the record named ``name`` is, without building any (first match)."""
        for i, e in enumerate(self._raw):
            if type(e) is list and e and e[0] == name:
                return i
        return None

    def __iter__(self) -> Iterator[MemberRecord]:
        """Every record, in order; ``DecodeError`` at the first bad one."""
        for i in range(len(self._raw)):
            yield self.get(i)


@dataclass(frozen=True, slots=True)
class ReceivedState:
    """A decoded push-pull payload: its envelope checked, its records built on demand."""

    join: bool
    records: RecordList


def record_to_list(r: MemberRecord) -> list[Any]:
    p = r.proof
    if p is None:
        raise ValueError(f"member {r.name!r} has no proof to send")
    return [
        r.name, r.address.host, r.address.port, r.incarnation, _STATE_CODES[r.state], r.meta,
        p.cert, p.alive_incarnation, p.alive_signature, p.accuser, p.accusation,
    ]  # fmt: skip


def encode_push_pull(msg: PushPull) -> bytes:
    """A versioned stream payload holding the push-pull state."""
    return encode_stream_payload(
        [MsgType.PUSH_PULL, msg.join, [record_to_list(r) for r in msg.members]]
    )


def record_from_list(e: Any) -> MemberRecord:
    """Validate one raw record and build its (interned) snapshot, or raise ``DecodeError``."""
    if type(e) is not list or len(e) < 11:
        raise DecodeError("bad_field", "push-pull member entry")
    name, host, port, inc, code, meta = e[0], e[1], e[2], e[3], e[4], e[5]
    state = _CODE_STATES.get(code) if type(code) is int else None
    if state is None:
        raise DecodeError("bad_field", f"member state {code!r:.20}")
    if not plainly_valid(name, inc, host, port, meta):
        name = name_field(name)
        host, port = address_field(host, port).as_tuple()
        inc = int_field(inc, "incarnation")
        meta = bytes_field(meta, "meta", MAX_META_BYTES)
    proof = _proof(e, name, inc, state)
    return interned_member(name, Address(host, port), inc, state, meta, proof)


def _proof(e: list[Any], name: str, inc: int, state: MemberState) -> Proof:
    """The record's proof, and the invariants an honest sender keeps (``member.Proof``)."""
    cert, alive_inc = cert_field(e[6]), int_field(e[7], "alive_incarnation")
    alive_sig, accuser, accusation = signature_field(e[8], "alive_signature"), e[9], e[10]
    if state is MemberState.ALIVE:
        if alive_inc != inc or accuser != "" or accusation != b"":
            raise DecodeError("bad_field", "alive record with an accusation")
        return Proof(cert, alive_inc, alive_sig)
    if not alive_inc <= inc <= alive_inc + 1:
        raise DecodeError("bad_field", "accusation beyond the signed incarnation")
    accuser = name_field(accuser, "accuser")
    if state is MemberState.LEFT and accuser != name:
        raise DecodeError("bad_field", "a leave not signed by the member")
    return Proof(cert, alive_inc, alive_sig, accuser, signature_field(accusation, "accusation"))


def decode_push_pull(data: bytes, max_bytes: int) -> ReceivedState:
    """The envelope of a push-pull payload, checked; records are checked as they are read."""
    last = _last_push_pull
    if last is not None and last[1] == max_bytes and last[0] == data:
        return last[2]
    raw = decode_stream_payload(data, max_bytes)
    if type(raw) is not list or len(raw) < 3 or raw[0] != _PUSH_PULL or type(raw[0]) is not int:
        raise DecodeError("unexpected_type", "stream payload is not a push-pull state")
    join = bool_field(raw[1], "join")
    entries = raw[2]
    if type(entries) is not list or len(entries) > MAX_PUSH_PULL_MEMBERS:
        raise DecodeError("bad_field", "push-pull members")
    state = ReceivedState(join, RecordList(entries))
    _remember_push_pull(data, max_bytes, state)
    return state


_last_push_pull: tuple[bytes, int, ReceivedState] | None = None


def _remember_push_pull(data: bytes, max_bytes: int, state: ReceivedState) -> None:
    global _last_push_pull
    _last_push_pull = (data, max_bytes, state)
