"""Sealed, length-prefixed frames over a TCP stream, and the first-frame "kind" dispatch.

A frame on the wire is ``length (4 bytes, big-endian) | sealed bytes``; the sealed bytes open with
the keyring under the stream associated data (cluster name + "stream"). Lengths are bounded
(``max_frame_bytes``, the agent's ``stream_limits.FRAME_MAX_BYTES``), so a peer cannot make us
buffer without limit; an inbound stream also takes each frame's bytes from the port's shared
``ByteBudget`` before reading them, and every read runs under the caller's timeout.

The first frame of every stream opens with its kind: ``len (1 byte) | kind (ascii) | body``. The
agent's listener looks the kind up in its handler registry ("pushpull", "keyop", and whatever later
subsystems register, such as the config replica's anti-entropy), so one TCP port carries them all.
"""

from __future__ import annotations

import struct

import trio

from gossipmesh.agent.stream_limits import ByteBudget
from gossipmesh.crypto import Keyring
from gossipmesh.errors import DecodeError

MAX_FRAME_BYTES = 16 * 1024 * 1024  # default; the agent passes StreamLimits.frame_max_bytes
MAX_KIND_BYTES = 32
_LEN = struct.Struct(">I")


def encode_first(kind: str, body: bytes) -> bytes:
    raw = kind.encode("ascii")
    if not 0 < len(raw) <= MAX_KIND_BYTES:
        raise ValueError(f"stream kind must be 1-{MAX_KIND_BYTES} ascii bytes")
    return bytes((len(raw),)) + raw + body


def decode_first(data: bytes) -> tuple[str, bytes]:
    if not data:
        raise DecodeError("stream_kind", "empty first frame")
    n = data[0]
    if n == 0 or n > MAX_KIND_BYTES or len(data) < 1 + n:
        raise DecodeError("stream_kind", "bad kind length")
    try:
        kind = data[1 : 1 + n].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError("stream_kind", "kind is not ascii") from exc
    return kind, data[1 + n :]


class SealedStream:
    """One TCP connection speaking sealed frames. Not safe for concurrent senders (one owner)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        keyring: Keyring,
        aad: bytes,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        budget: ByteBudget | None = None,
    ) -> None:
        self._stream = stream
        self._budget = budget
        self._max = max_frame_bytes
        self._keyring = keyring
        self._aad = aad
        self._buf = bytearray()

    async def send(self, plaintext: bytes) -> None:
        sealed = self._keyring.seal(plaintext, self._aad)
        if len(sealed) > self._max:
            raise DecodeError("oversize", f"frame of {len(sealed)} bytes")
        await self._stream.send_all(_LEN.pack(len(sealed)) + sealed)

    async def receive(self) -> bytes:
        """The next frame, opened. ``DecodeError`` for a bad frame, ``EOFError`` on a clean close."""
        header = await self._read_exactly(_LEN.size)
        (length,) = _LEN.unpack(header)
        if length > self._max:
            raise DecodeError("oversize", f"frame header says {length} bytes")
        budget = self._budget
        if budget is None:
            return self._keyring.open(await self._read_exactly(length), self._aad)
        if not budget.take(length):
            raise DecodeError("buffer_full", f"no room to buffer a frame of {length} bytes")
        try:
            return self._keyring.open(await self._read_exactly(length), self._aad)
        finally:
            budget.give(length)

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._stream.receive_some(min(1 << 20, max(65536, n - len(self._buf))))
            if not chunk:
                if self._buf:
                    raise DecodeError("truncated", "stream closed mid-frame")
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def aclose(self) -> None:
        await self._stream.aclose()
