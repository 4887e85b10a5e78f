"""Bytes on the wire: a versioned msgpack envelope, compound packets and stream frames.

Theory of operation
-------------------
A UDP packet is one version byte followed by one msgpack array whose items are the messages
(each itself a msgpack array ``[type, field, ...]`` built by ``gossipmesh.swim.messages``).
Several messages share one datagram (a *compound packet*): a ping plus as many piggybacked
broadcasts as fit. Each message is packed once, on its own, so its size is known exactly and a
``PacketBuilder`` can add messages while the total stays within the packet limit (1400 bytes by
default, so the encrypted datagram stays under a 1500-byte MTU). The array header is 1 byte for
up to 15 items and 3 bytes up to 65535; we cap a packet at ``MAX_PACKET_PARTS`` items and always
reserve the larger header, so sizes never need recomputing.

TCP streams (push-pull state exchange) carry frames: a 4-byte big-endian length, then that many
bytes. ``FrameDecoder`` reassembles frames from arbitrary chunks and refuses a length above its
limit *before* buffering the body, so a hostile peer cannot make us allocate. A stream payload is
the same version byte followed by one msgpack object.

Everything that reads bytes from the network raises only ``DecodeError(reason)``, with ``reason``
one of a few stable slugs used as counter labels: ``empty``, ``oversized``, ``version``,
``truncated``, ``trailing_bytes``, ``malformed`` (and ``frame_oversized`` for frames). Encryption
is not done here; the runtime seals what this module produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from gossipmesh.errors import DecodeError

WIRE_VERSION = 1
_VERSION_BYTE = bytes([WIRE_VERSION])

# Most messages in one compound packet. Far above what fits in 1400 bytes with real messages,
# low enough that the array header is at most 3 bytes (array16).
MAX_PACKET_PARTS = 255
# Version byte + the largest array header we ever emit (array16: 0xdc + 2 bytes).
PACKET_OVERHEAD_BYTES = 1 + 3
FRAME_HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


# One packer for every ``pack``: ``msgpack.packb`` builds a new ``Packer`` (and allocates its
# buffer) on each call, four times the cost of packing a ping. Sharing it is safe: ``pack`` runs
# in C under the GIL and calls no Python code for the types we pack (there is no ``default``
# hook), and it resets its buffer after every call, an exception included. Its buffer keeps the
# size of the largest message packed so far, so stream payloads have their own (below).
_PACKER = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (bytes stay bin, str stays str)."""
    data: bytes = _PACKER.pack(obj)
    return data


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    return b"\xdc" + count.to_bytes(2, "big")


def encode_packet(parts: Sequence[bytes]) -> bytes:
    """Join already-packed messages into one versioned compound packet."""
    if not 0 < len(parts) <= MAX_PACKET_PARTS:
        raise ValueError(f"a packet holds 1..{MAX_PACKET_PARTS} messages, got {len(parts)}")
    return _VERSION_BYTE + _array_header(len(parts)) + b"".join(parts)


def packet_size(parts: Sequence[bytes]) -> int:
    """Exact encoded size of ``encode_packet(parts)``."""
    return 1 + len(_array_header(len(parts))) + sum(len(p) for p in parts)


class PacketBuilder:
    """Collects packed messages while the compound packet stays within ``limit_bytes``."""

    __slots__ = ("_parts", "_size", "limit_bytes")

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._parts: list[bytes] = []
        self._size = PACKET_OVERHEAD_BYTES

    @property
    def remaining_bytes(self) -> int:
        if len(self._parts) >= MAX_PACKET_PARTS:
            return 0
        return self.limit_bytes - self._size

    def add(self, part: bytes) -> bool:
        """Add one packed message; False (and nothing added) if it would not fit."""
        if len(self._parts) >= MAX_PACKET_PARTS or self._size + len(part) > self.limit_bytes:
            return False
        self._parts.append(part)
        self._size += len(part)
        return True

    def __len__(self) -> int:
        return len(self._parts)

    def build(self) -> bytes:
        return encode_packet(self._parts)


# What msgpack's unpacker raises on bytes it cannot read (truncated, trailing, malformed, over a
# limit, a map key of the wrong type, too deep): every decoder of untrusted bytes catches exactly
# these, so anything else (a bug of ours) surfaces instead of being counted as bad input.
BAD_BYTES: tuple[type[Exception], ...] = (ValueError, TypeError, msgpack.UnpackException)


def _unpack(view: memoryview) -> Any:
    try:
        return msgpack.unpackb(view, raw=False, use_list=True, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing_bytes", str(exc)[:80]) from None
    except ValueError as exc:
        text = str(exc)
        if "incomplete" in text:
            raise DecodeError("truncated", text[:80]) from None
        raise DecodeError("malformed", text[:80]) from None
    except BAD_BYTES as exc:
        raise DecodeError("malformed", f"{type(exc).__name__}: {str(exc)[:80]}") from None


def _check_envelope(data: bytes, max_bytes: int) -> memoryview:
    if not data:
        raise DecodeError("empty")
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes} bytes")
    if data[0] != WIRE_VERSION:
        raise DecodeError("version", f"version {data[0]}, we speak {WIRE_VERSION}")
    if len(data) < 2:
        raise DecodeError("truncated", "no body after the version byte")
    return memoryview(data)[1:]


def decode_packet(data: bytes, max_bytes: int) -> list[Any]:
    """Split a compound packet into its raw (still unvalidated) message arrays."""
    body = _unpack(_check_envelope(data, max_bytes))
    if type(body) is not list:
        raise DecodeError("malformed", "packet body is not an array")
    if not 0 < len(body) <= MAX_PACKET_PARTS:
        raise DecodeError("malformed", f"{len(body)} messages in one packet")
    return body


def encode_stream_payload(obj: Any) -> bytes:
    """Version byte + one msgpack object (the body of a push-pull frame)."""
    # A full state can be megabytes: a packer of its own (``packb``), so the shared one, whose
    # buffer keeps the size of the largest message it packed, stays the size of a packet.
    return _VERSION_BYTE + msgpack.packb(obj, use_bin_type=True)


def decode_stream_payload(data: bytes, max_bytes: int) -> Any:
    return _unpack(_check_envelope(data, max_bytes))


def encode_frame(payload: bytes) -> bytes:
    """Length-prefix ``payload`` for a stream (4-byte big-endian length)."""
    if len(payload) >= 1 << 32:
        raise ValueError("frame too large")
    return len(payload).to_bytes(FRAME_HEADER_BYTES, "big") + payload


class FrameDecoder:
    """Reassemble length-prefixed frames from a byte stream, refusing frames over a limit.

    ``feed(chunk)`` returns every frame completed so far (possibly none). A declared length over
    ``max_frame_bytes`` raises ``DecodeError("frame_oversized")`` as soon as the 4 header bytes
    arrive; the stream is then unusable and the caller should close it. ``close()`` raises
    ``DecodeError("truncated")`` if a partial frame is left over.
    """

    __slots__ = ("_buf", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        while len(buf) >= FRAME_HEADER_BYTES:
            length = int.from_bytes(buf[:FRAME_HEADER_BYTES], "big")
            if length > self.max_frame_bytes:
                raise DecodeError("frame_oversized", f"{length} > {self.max_frame_bytes} bytes")
            end = FRAME_HEADER_BYTES + length
            if len(buf) < end:
                break
            frames.append(bytes(buf[FRAME_HEADER_BYTES:end]))
            del buf[:end]
        return frames

    def close(self) -> None:
        if self._buf:
            raise DecodeError("truncated", f"{len(self._buf)} bytes of an unfinished frame")
