"""HTTP/2 frames on the wire (RFC 9113 §4, §6): the nine-octet frame header, the checks of each
frame type's payload, and the frames the proxy sends, built with ``struct``.

Theory of operation
-------------------
This is the framing half of the proxy's own HTTP/2 core (h2core.py is the connection half; the
``h2`` library stays only as the tests' oracle). Parsing is one pass: ``unpack_head`` unpacks a
frame header (its 24-bit length as 16 + 8 bits) at an offset of the received buffer, the
connection checks the length against our SETTINGS_MAX_FRAME_SIZE (the default 16,384: we never
announce more) before it waits for the payload, and ``strip_padding``, ``priority_of``,
``settings_of`` and the fixed-size checks turn a payload into values or raise ``ConnError``
with the RFC's error code. Nothing here keeps
state: whether a frame is allowed on its stream at all is the connection's question.

Every check is the RFC's own: a frame that must be on stream 0 (SETTINGS, PING, GOAWAY) or must
not (DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION) is a PROTOCOL_ERROR; a fixed-size
frame of another size (PRIORITY 5, RST_STREAM 4, PING 8, WINDOW_UPDATE 4, SETTINGS a multiple
of 6, its ACK 0, GOAWAY at least 8) a FRAME_SIZE_ERROR; padding as long as the payload or more a
PROTOCOL_ERROR; SETTINGS values outside their range the error §6.5.2 names. Unknown frame types
and unknown settings are ignored (§4.1, §6.5.2), which the connection does.

Frames sent are byte strings the connection appends to its output buffer. A header block longer
than the peer's SETTINGS_MAX_FRAME_SIZE is split into HEADERS and CONTINUATION frames
(``header_frames``).
"""

from __future__ import annotations

import struct
from enum import IntEnum

# Frame types (§6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings (§6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384  # SETTINGS_MAX_FRAME_SIZE's initial value, and ours
MAX_WINDOW = 2**31 - 1  # §6.9.1: a window larger than this is a FLOW_CONTROL_ERROR
MAX_FRAME_SIZE_LIMIT = 2**24 - 1


class ErrorCodes(IntEnum):
    """§7: the error codes of RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class ConnError(Exception):
    """The peer broke the protocol: the connection ends with a GOAWAY carrying ``code``."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


# -- parsing -----------------------------------------------------------------------------------

_HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, R + stream id
_U32 = struct.Struct(">L")
_PRIORITY = struct.Struct(">LB")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")
unpack_head = _HEAD.unpack_from


def strip_padding(payload: bytes, flags: int) -> tuple[int, int]:
    """(start, end) of a PADDED frame's content (§6.1, §6.2): PROTOCOL_ERROR if the pad length
    is not less than what follows it."""
    if not flags & PADDED:
        return 0, len(payload)
    if not payload:
        raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnError(ErrorCodes.PROTOCOL_ERROR, "padding as long as the frame")
    return 1, len(payload) - pad


def priority_of(payload: bytes, start: int, sid: int) -> tuple[int, bool, int]:
    """A PRIORITY frame's or a HEADERS frame's priority fields at ``start``: (depends on,
    exclusive, weight). A stream that depends on itself is a PROTOCOL_ERROR (§5.3.1)."""
    if len(payload) - start < 5:
        raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "priority fields cut short")
    dep, weight = _PRIORITY.unpack_from(payload, start)
    depends_on = dep & 0x7FFFFFFF
    if depends_on == sid:
        raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"stream {sid} depends on itself")
    return depends_on, bool(dep >> 31), weight + 1


def settings_of(payload: bytes) -> list[tuple[int, int]]:
    """A SETTINGS frame's (identifier, value) pairs in order, each value checked (§6.5.2)."""
    if len(payload) % 6:
        raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    out = []
    for pos in range(0, len(payload), 6):
        ident, value = _SETTING.unpack_from(payload, pos)
        if ident == ENABLE_PUSH and value > 1:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
        if ident == INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise ConnError(ErrorCodes.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
        if ident == MAX_FRAME_SIZE and not DEFAULT_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
        out.append((ident, value))
    return out


def u32_of(payload: bytes, kind: str) -> int:
    """The one 32-bit field of a RST_STREAM (its error code) or a WINDOW_UPDATE (its increment,
    reserved bit dropped)."""
    if len(payload) != 4:
        raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, f"{kind} of {len(payload)} bytes")
    value: int = _U32.unpack(payload)[0]
    return value & 0x7FFFFFFF if kind == "WINDOW_UPDATE" else value


def goaway_of(payload: bytes) -> tuple[int, int]:
    """A GOAWAY's (last stream id, error code); what follows is debug data, ignored."""
    if len(payload) < 8:
        raise ConnError(ErrorCodes.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
    last, code = _GOAWAY.unpack_from(payload, 0)
    return last & 0x7FFFFFFF, code


def check_stream_zero(kind: int, sid: int) -> None:
    """§6: which frame types belong to the connection (stream 0) and which to a stream."""
    if kind in (SETTINGS, PING, GOAWAY):
        if sid:
            raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"frame type {kind} on stream {sid}")
    elif sid == 0 and kind in (DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION):
        raise ConnError(ErrorCodes.PROTOCOL_ERROR, f"frame type {kind} on stream 0")


# -- building ----------------------------------------------------------------------------------

pack_head = _HEAD.pack


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return pack_head(n >> 8, n & 0xFF, kind, flags, sid) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    payload = b"".join(_SETTING.pack(k, v) for k, v in values.items())
    return frame(SETTINGS, 0, 0, payload)


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update(sid: int, increment: int) -> bytes:
    return pack_head(0, 4, WINDOW_UPDATE, 0, sid) + _U32.pack(increment)


def rst_stream(sid: int, code: int) -> bytes:
    return pack_head(0, 4, RST_STREAM, 0, sid) + _U32.pack(code)


def goaway(last_sid: int, code: int) -> bytes:
    return pack_head(0, 8, GOAWAY, 0, 0) + _GOAWAY.pack(last_sid, code)


def header_frames(sid: int, block: bytes, end: bool, max_size: int) -> bytes:
    """One header block as HEADERS (+ CONTINUATION) frames of at most ``max_size`` bytes."""
    flags = END_STREAM if end else 0
    n = len(block)
    if n <= max_size:
        return pack_head(n >> 8, n & 0xFF, HEADERS, flags | END_HEADERS, sid) + block
    parts = [frame(HEADERS, flags, sid, block[:max_size])]
    pos = max_size
    while pos < n:
        chunk = block[pos : pos + max_size]
        pos += max_size
        parts.append(frame(CONTINUATION, END_HEADERS if pos >= n else 0, sid, chunk))
    return b"".join(parts)


__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "ENABLE_PUSH",
    "GOAWAY",
    "HEADERS",
    "HEADER_TABLE_SIZE",
    "INITIAL_WINDOW_SIZE",
    "MAX_CONCURRENT_STREAMS",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_LIST_SIZE",
    "MAX_WINDOW",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "SETTINGS_ACK",
    "WINDOW_UPDATE",
    "ConnError",
    "ErrorCodes",
    "check_stream_zero",
    "frame",
    "goaway",
    "goaway_of",
    "header_frames",
    "pack_head",
    "priority_of",
    "rst_stream",
    "settings_frame",
    "settings_of",
    "strip_padding",
    "u32_of",
    "unpack_head",
    "window_update",
]
