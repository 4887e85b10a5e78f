"""Header blocks on the wire, made cheap: a stateless HPACK encoder for the blocks the proxy
sends, an HPACK decoder without per-field overhead, and RFC 9113's checks of a received block in
one pass.

Theory of operation
-------------------
``h2`` with ``hpack`` spends most of a proxied request on header blocks (BENCHMARKS.md, issue
16): the encoder searches its dynamic table linearly for every field and Huffman-codes every
literal, the received block goes through seven generator passes of checks that walk names and
values byte by byte in Python, and ``hpack`` logs several debug lines per field.

``PlainEncoder`` replaces the connection's ``hpack.Encoder``. It never uses the dynamic table and
never Huffman-codes: a field equal to a static-table entry is one index byte, any other is a
literal without indexing (its name indexed when the static table has it), a never-indexed field
(``NeverIndexedHeaderTuple``, as a peer sent it) stays never-indexed (RFC 7541
§7.1.3). The encoding of a field is then a pure function of the field, so it is cached (bounded:
``CACHE_FIELDS``). The price is bytes: a block is sent whole each time (a few hundred bytes for a
request instead of tens once the peer's table is warm), acceptable on loopback and the LAN, where
CPU and not bandwidth limits a sidecar. With an empty dynamic table the only duty left is RFC 7541
§4.2: after the peer changes SETTINGS_HEADER_TABLE_SIZE (h2 sets ``header_table_size``) the next
block opens with a dynamic table size update, here to 0, which fits any limit.

``check_block`` is what h2's ``validate_inbound_headers`` checks (RFC 9113 §8.2, §8.3: field
characters, connection-specific fields, ``te``, pseudo-header order, presence and kind,
``:authority`` against Host, an empty ``:path``), in one loop with a precompiled pattern per name
and value; it raises h2's ``ProtocolError`` as h2 would, and the link ends the connection as
before. It runs on every block a peer sends (h2link.py turns h2's own pass off).

``PlainDecoder`` replaces the connection's ``hpack.Decoder``: the same representations, dynamic
table, limits and errors, in one loop over the block without ``hpack``'s per-field debug logging,
``HeaderTuple`` objects and slices; Huffman decoding (``hpack``'s) is memoised, being a pure
function of its input (a peer's ``date`` or ``server`` field is then decoded once, not per
response). A property test holds it to ``hpack``'s output on what ``hpack`` encodes and on
arbitrary bytes (tests/proxy/test_h2_codec.py).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from h2.exceptions import ProtocolError
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

CACHE_FIELDS = 4096  # encoded fields kept (each a few hundred bytes at most)
CACHE_FIELD_BYTES = 256  # a field encoded longer is encoded each time, not cached
HUFFMAN_CACHE = 4096  # distinct Huffman-coded strings remembered by the decoder

# -- encoding ----------------------------------------------------------------------------------

_STATIC = HeaderTable.STATIC_TABLE_MAPPING  # name -> (first index, {value: index}), 1-based
_SIZE_UPDATE_ZERO = b"\x20"  # dynamic table size update (001xxxxx) to 0


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1: ``value`` on a ``prefix_bits`` prefix, ``first``'s high bits kept."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data  # H bit clear: raw octets


def encode_field(name: bytes, value: bytes, never: bool) -> bytes:
    """One field as a stateless HPACK representation (no dynamic table, no Huffman)."""
    first = 0x10 if never else 0x00  # literal never indexed / without indexing
    static = _STATIC.get(name)
    if static is not None:
        if not never:
            index = static[1].get(value)
            if index is not None:
                return _integer(index, 7, 0x80)  # indexed field
        return _integer(static[0], 4, first) + _string(value)
    return bytes((first,)) + _string(name) + _string(value)


class PlainEncoder:
    """Drop-in for ``hpack.Encoder`` on an ``H2Connection`` (``conn.encoder``)."""

    __slots__ = ("_table_size", "resized")

    _cache: dict[tuple[bytes, bytes], bytes] = {}  # shared: an encoding depends on the field only

    def __init__(self) -> None:
        self._table_size = 4096
        self.resized = False

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self.resized = True  # the next block says the (empty) table is now size 0

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        cache = self._cache
        out = []
        if self.resized:
            self.resized = False
            out.append(_SIZE_UPDATE_ZERO)
        for h in headers:
            if type(h) is NeverIndexedHeaderTuple:
                out.append(encode_field(h[0], h[1], True))
                continue
            enc = cache.get(h)  # a (name, value) tuple or HeaderTuple: both hash as the pair
            if enc is None:
                enc = encode_field(h[0], h[1], False)
                if len(enc) <= CACHE_FIELD_BYTES:
                    if len(cache) >= CACHE_FIELDS:
                        cache.clear()
                    cache[(h[0], h[1])] = enc
            out.append(enc)
        return b"".join(out)


# -- checking what a peer sent -----------------------------------------------------------------

REQUEST, RESPONSE, TRAILERS = 0, 1, 2

# RFC 9113 §8.2.1: a name is lowercase visible ASCII without a colon, bar a pseudo-header's
# leading one; a value has no NUL, CR or LF and no leading or trailing space or tab.
_NAME = re.compile(rb":?[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00\n\r]")
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_REQUEST_ONLY = frozenset({b":scheme", b":path", b":authority", b":method", b":protocol"})


def check_block(headers: Iterable[tuple[bytes, bytes]], kind: int) -> None:
    """Raise ``ProtocolError`` unless the received block ``headers`` (a request's, a
    response's or trailers, ``kind``) is one h2's inbound validation would accept."""
    pseudo: set[bytes] = set()
    regular = False
    method = None
    authority = host = None
    for name, value in headers:
        if _NAME.fullmatch(name) is None:
            raise ProtocolError(f"Illegal header name {name!r}")
        if value and (
            value[0] in (0x20, 0x09) or value[-1] in (0x20, 0x09) or _BAD_VALUE.search(value)
        ):
            raise ProtocolError(f"Illegal header value {value!r}")
        if name[0] == 0x3A:
            if name in pseudo:
                raise ProtocolError(f"Received duplicate pseudo-header field {name!r}")
            if regular:
                raise ProtocolError(f"Received pseudo-header field out of sequence: {name!r}")
            if name not in _PSEUDO:
                raise ProtocolError(f"Received custom pseudo-header field {name!r}")
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value and kind == REQUEST:
                raise ProtocolError("An empty :path header is forbidden")
            continue
        regular = True
        if name in _CONNECTION_SPECIFIC:
            raise ProtocolError(f"Connection-specific header field present: {name!r}.")
        if name == b"te" and value.lower() != b"trailers":
            raise ProtocolError(f"Invalid value for TE header: {value!r}")
        if name == b"host" and kind == REQUEST:
            if host is not None:
                raise ProtocolError("Request header block has multiple Host headers.")
            host = value
    if kind == TRAILERS:
        if pseudo:
            raise ProtocolError(f"Received pseudo-header in trailer {pseudo}")
        return
    if kind == RESPONSE:
        if b":status" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':status' header")
        if pseudo & _REQUEST_ONLY:
            raise ProtocolError(f"Encountered request-only headers {pseudo & _REQUEST_ONLY}")
        return
    _check_request_pseudo(pseudo, method)
    if authority is None and host is None:
        raise ProtocolError("Request header block does not have an :authority or Host header.")
    if authority is not None and host is not None and authority != host:
        raise ProtocolError("Request header block has mismatched :authority and Host headers")


def _check_request_pseudo(pseudo: set[bytes], method: bytes | None) -> None:
    if method is None:
        raise ProtocolError("Header block missing mandatory b':method' header")
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise ProtocolError("Ordinary CONNECT MUST NOT include :scheme or :path")
    elif b":scheme" not in pseudo or b":path" not in pseudo:
        raise ProtocolError("Header block missing mandatory :scheme or :path header")
    if b":status" in pseudo:
        raise ProtocolError("Encountered response-only headers {b':status'}")
    if not connect and b":protocol" in pseudo:
        raise ProtocolError("Encountered connect-request-only headers {b':protocol'}")


# -- decoding ----------------------------------------------------------------------------------

_STATIC_ENTRIES = HeaderTable.STATIC_TABLE  # index i is entry i - 1
_STATIC_COUNT = len(_STATIC_ENTRIES)
_huffman = lru_cache(maxsize=HUFFMAN_CACHE)(decode_huffman)  # pure: memoised, same output


def _integer_at(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """RFC 7541 §5.1: the integer whose prefix is ``data[pos] & mask``; (value, next pos). At
    most five continuation octets, as ``hpack`` allows."""
    try:
        value = data[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            octet = data[pos]
            pos += 1
            value += (octet & 0x7F) << shift
            if octet < 0x80:
                return value, pos
            shift += 7
            if shift > 28:
                raise HPACKDecodingError("Variable integer representation is too long")
    except IndexError:
        raise HPACKDecodingError("Unable to decode HPACK integer representation") from None


def _string_at(data: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 §5.2: a string literal at ``pos`` (Huffman-decoded if its H bit says so)."""
    huffman = pos < len(data) and data[pos] & 0x80
    length, pos = _integer_at(data, pos, 0x7F)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    text = data[pos:end]
    return (_huffman(text) if huffman else text), end


class PlainDecoder:
    """Drop-in for ``hpack.Decoder`` on an ``H2Connection`` (``conn.decoder``): the same
    representations, dynamic table, limits and errors (``hpack.exceptions``), without its
    per-field logging, ``HeaderTuple`` wrapping and slicing, and with Huffman decoding memoised.
    A never-indexed field comes back as ``NeverIndexedHeaderTuple`` (RFC 7541 §7.1.3: passed
    on as such), any other as a plain tuple."""

    __slots__ = (
        "dynamic",
        "used",
        "table_max",
        "max_header_list_size",
        "max_allowed_table_size",
    )

    def __init__(self) -> None:
        self.dynamic: deque[tuple[bytes, bytes]] = deque()  # newest first
        self.used = 0  # RFC 7541 §4.1 size of the dynamic table
        self.table_max = 4096  # the size the peer's encoder set (§6.3)
        self.max_header_list_size = 65536  # h2 sets SETTINGS_MAX_HEADER_LIST_SIZE's value
        self.max_allowed_table_size = 4096  # h2 sets our acknowledged SETTINGS_HEADER_TABLE_SIZE

    @property
    def header_table_size(self) -> int:
        return self.table_max

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self.table_max = value
        self.shrink()

    def shrink(self) -> None:
        dynamic = self.dynamic
        while self.used > self.table_max:
            name, value = dynamic.pop()
            self.used -= 32 + len(name) + len(value)

    def lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC_ENTRIES[index - 1]
        i = index - _STATIC_COUNT - 1
        if 0 <= i < len(self.dynamic):
            return self.dynamic[i]
        raise InvalidTableIndexError(f"Invalid table index {index}")

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        """The header list of one block (``raw`` must be True: names and values stay bytes)."""
        if not raw:
            raise ValueError("PlainDecoder decodes to bytes only")
        data = bytes(data)
        end = len(data)
        headers: list[tuple[bytes, bytes]] = []
        inflated = 0
        limit = self.max_header_list_size
        pos = 0
        while pos < end:
            first = data[pos]
            never = False
            if first & 0x80:  # indexed field
                index, pos = _integer_at(data, pos, 0x7F)
                name, value = self.lookup(index)
            elif first & 0x40:  # literal with incremental indexing
                index, pos = _integer_at(data, pos, 0x3F)
                if index:
                    name = self.lookup(index)[0]
                else:
                    name, pos = _string_at(data, pos)
                value, pos = _string_at(data, pos)
                self.add(name, value)
            elif first & 0x20:  # dynamic table size update: only before the first field
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size, pos = _integer_at(data, pos, 0x1F)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = size
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                never = bool(first & 0x10)
                index, pos = _integer_at(data, pos, 0x0F)
                if index:
                    name = self.lookup(index)[0]
                else:
                    name, pos = _string_at(data, pos)
                value, pos = _string_at(data, pos)
            inflated += 32 + len(name) + len(value)
            if inflated > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
            headers.append(NeverIndexedHeaderTuple(name, value) if never else (name, value))
        if self.table_max > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers

    def add(self, name: bytes, value: bytes) -> None:
        size = 32 + len(name) + len(value)
        if size > self.table_max:
            self.dynamic.clear()  # RFC 7541 §4.4: an entry larger than the table empties it
            self.used = 0
            return
        self.dynamic.appendleft((name, value))
        self.used += size
        self.shrink()


__all__ = [
    "CACHE_FIELDS",
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "PlainDecoder",
    "PlainEncoder",
    "check_block",
    "encode_field",
]
