"""Node-owned records: each node's service instances, their health and its proxy address.

Theory of operation
-------------------
Unlike the shared document, a record has exactly one writer, its owner, so it never conflicts:
the owner bumps ``version`` on every change and everyone keeps the highest version they have seen
(last writer wins, by version, per owner). What has to be defended is authorship: a record is
signed with the key of the owner's node certificate (the one its SWIM claims are signed with,
DESIGN-11 D3), names that certificate by fingerprint (``signer``), and a receiver keeps it only if
the signature verifies against the certificate SWIM gave it for that owner, valid now for exactly
that node name. Signing and verifying are injected callables (``gossipmesh.config.identity``
provides them) so this core stays free of crypto imports.

``RecordTable.offer`` returns an outcome instead of raising, because each case is counted:
``accepted``, ``duplicate`` (same version, already held), ``stale`` (lower version),
``unknown_owner`` (no certificate for the owner yet, or not the one the record names: the caller
parks it until SWIM brings it), ``untrusted_owner`` (its certificate is revoked or expired),
``bad_signature``, ``reaped`` (the owner was reaped and this is not newer than what we had). When SWIM reaps a member the runtime calls ``reap(owner)``: its record goes, and a
floor remembers its version so a late copy circulating in gossip cannot bring it back. The owner
itself picks versions from the wall clock (``next_version``), so a restarted agent that has lost
its counter still publishes above everything it published before.

Wire format of a record (msgpack)::

    [owner, version, body (bin: msgpack of the body below), signature (bin, 64 bytes),
     signer (bin, 32 bytes: the owner's node certificate fingerprint)]
    body = {"services": [[name, address, port, [tag, ...], weight, health], ...],
            "proxy": [host, port] | nil}

The signature (raw ECDSA P-256 ``r || s``) covers ``canonical(b"gossipmesh/record/v1", cluster,
owner, version, body, signer)`` (``gossipmesh.config.identity.record_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from gossipmesh.errors import DecodeError
from gossipmesh.wire import BAD_BYTES

Health = Literal["passing", "warning", "critical", "unknown"]
HEALTH_STATES = ("passing", "warning", "critical", "unknown")
VerifyOutcome = Literal["ok", "unknown_owner", "untrusted_owner", "bad_signature"]
Outcome = Literal[
    "accepted", "duplicate", "stale", "unknown_owner", "untrusted_owner", "bad_signature", "reaped"
]

MAX_RECORD_BYTES = 64 * 1024
SIGNATURE_BYTES = 64
SIGNER_BYTES = 32  # a certificate fingerprint (SHA-256 of its to-be-signed part)
MAX_SERVICES = 256
MAX_REAPED_FLOORS = 10_000


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    weight: int = 1
    health: Health = "unknown"


@dataclass(frozen=True, slots=True)
class RecordBody:
    services: tuple[ServiceInstance, ...] = ()
    proxy: tuple[str, int] | None = None  # the owner's inbound proxy address


@dataclass(frozen=True, slots=True)
class SignedRecord:
    owner: str
    version: int
    body: bytes  # encoded RecordBody, kept verbatim: the signature covers these bytes
    signature: bytes
    signer: bytes  # fingerprint of the owner's node certificate whose key signed it

    def decoded(self) -> RecordBody:
        return decode_body(self.body)


# (owner, version, body) -> (signer fingerprint, signature), by the owner's node key.
Signer = Callable[[str, int, bytes], tuple[bytes, bytes]]
Verifier = Callable[[SignedRecord], VerifyOutcome]


def encode_body(body: RecordBody) -> bytes:
    return msgpack.packb(
        {
            "services": [
                [s.name, s.address, s.port, list(s.tags), s.weight, s.health] for s in body.services
            ],
            "proxy": None if body.proxy is None else list(body.proxy),
        },
        use_bin_type=True,
    )


def make_record(owner: str, version: int, body: RecordBody, sign: Signer) -> SignedRecord:
    data = encode_body(body)
    signer, signature = sign(owner, version, data)
    return SignedRecord(owner, version, data, signature, signer)


def next_version(previous: int, wall_ms: int) -> int:
    """Versions from the wall clock: above ``previous`` and above anything a pre-restart self
    could have published (assuming the clock did not jump back)."""
    return max(previous + 1, wall_ms)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offered:
    outcome: Outcome
    changed: bool  # the table changed (the catalog must be rebuilt)


class RecordTable:
    """The latest verified record per owner. Single owner task; pure apart from itself."""

    def __init__(self, verify: Verifier) -> None:
        self._verify = verify
        self._records: dict[str, SignedRecord] = {}
        self._reaped: dict[str, int] = {}
        self.stats: dict[str, int] = {}

    def offer(self, record: SignedRecord) -> Offered:
        held = self._records.get(record.owner)
        if held is not None and record.version < held.version:
            return self._done("stale", False)
        if held is not None and record.version == held.version:
            # Equal versions with different bytes would be a forgery or an owner bug: keep ours.
            return self._done("duplicate", False)
        floor = self._reaped.get(record.owner)
        if floor is not None and record.version <= floor:
            return self._done("reaped", False)
        # Verify last: signature checks are the expensive part, and stale copies are common.
        outcome = self._verify(record)
        if outcome != "ok":
            return self._done(outcome, False)
        try:
            decode_body(record.body)
        except DecodeError:
            return self._done("bad_signature", False)  # a valid signature over junk: refuse too
        self._records[record.owner] = record
        self._reaped.pop(record.owner, None)
        return self._done("accepted", True)

    def reap(self, owner: str) -> bool:
        """The member is gone for good: drop its record and remember the version floor."""
        held = self._records.pop(owner, None)
        if held is None:
            return False
        if len(self._reaped) >= MAX_REAPED_FLOORS:
            self._reaped.pop(next(iter(self._reaped)))  # oldest first (insertion order)
        self._reaped[owner] = held.version
        return True

    def get(self, owner: str) -> SignedRecord | None:
        return self._records.get(owner)

    def records(self) -> Iterator[SignedRecord]:
        yield from (self._records[o] for o in sorted(self._records))

    def versions(self) -> dict[str, int]:
        """owner → version: a compact summary for anti-entropy of records."""
        return {o: r.version for o, r in self._records.items()}

    def newer_than(self, remote: dict[str, int]) -> list[SignedRecord]:
        """Records a peer with summary ``remote`` lacks or holds older versions of."""
        return [r for o, r in sorted(self._records.items()) if remote.get(o, -1) < r.version]

    def _done(self, outcome: Outcome, changed: bool) -> Offered:
        self.stats[outcome] = self.stats.get(outcome, 0) + 1
        return Offered(outcome, changed)


# ---------------------------------------------------------------------------------------------
# Decoding: strict, DecodeError only


def encode_record(record: SignedRecord) -> bytes:
    return msgpack.packb(
        [record.owner, record.version, record.body, record.signature, record.signer],
        use_bin_type=True,
    )


def _unpack(data: bytes) -> Any:
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_BYTES:
        raise DecodeError("record_size")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except BAD_BYTES as e:
        raise DecodeError("msgpack", type(e).__name__) from None


def decode_record(data: bytes) -> SignedRecord:
    raw = _unpack(data)
    if not isinstance(raw, list) or len(raw) != 5:
        raise DecodeError("malformed", "record")
    owner, version, body, signature, signer = raw
    if not isinstance(owner, str) or not 1 <= len(owner.encode()) <= 128:
        raise DecodeError("malformed", "record.owner")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**63:
        raise DecodeError("malformed", "record.version")
    if not isinstance(body, bytes):
        raise DecodeError("malformed", "record.body")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise DecodeError("malformed", "record.signature")
    if not isinstance(signer, bytes) or len(signer) != SIGNER_BYTES:
        raise DecodeError("malformed", "record.signer")
    return SignedRecord(owner, version, body, signature, signer)


def decode_body(data: bytes) -> RecordBody:
    raw = _unpack(data)
    if not isinstance(raw, dict) or set(raw) != {"services", "proxy"}:
        raise DecodeError("malformed", "record body")
    services = raw["services"]
    if not isinstance(services, list) or len(services) > MAX_SERVICES:
        raise DecodeError("malformed", "record services")
    out = []
    for s in services:
        if not isinstance(s, list) or len(s) != 6:
            raise DecodeError("malformed", "service")
        name, address, port, tags, weight, health = s
        if not (
            isinstance(name, str)
            and isinstance(address, str)
            and _is_int(port, 0, 65535)
            and isinstance(tags, list)
            and all(isinstance(t, str) for t in tags)
            and _is_int(weight, 0, 10_000)
            and health in HEALTH_STATES
        ):
            raise DecodeError("malformed", "service fields")
        out.append(ServiceInstance(name, address, port, tuple(tags), weight, health))
    proxy = raw["proxy"]
    if proxy is not None:
        if not (
            isinstance(proxy, list)
            and len(proxy) == 2
            and isinstance(proxy[0], str)
            and _is_int(proxy[1], 0, 65535)
        ):
            raise DecodeError("malformed", "proxy")
        proxy = (proxy[0], proxy[1])
    return RecordBody(tuple(out), proxy)


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
