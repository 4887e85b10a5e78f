"""Header blocks on the wire, made cheap: a stateless HPACK encoder for the blocks the proxy
sends, RFC 9113's checks of a received block in one pass, and a quiet, caching ``hpack``
decoder.

Theory of operation
-------------------
``h2`` with ``hpack`` spends most of a proxied request on header blocks (BENCHMARKS.md, issue
16): the encoder searches its dynamic table linearly for every field and Huffman-codes every
literal, the received block goes through seven generator passes of checks that walk names and
values byte by byte in Python, and ``hpack`` logs several debug lines per field.

``PlainEncoder`` replaces the connection's ``hpack.Encoder``. It never uses the dynamic table and
never Huffman-codes: a field equal to a static-table entry is one index byte, any other is a
literal without indexing (its name indexed when the static table has it), a never-indexed field
(``NeverIndexedHeaderTuple``, as a peer sent it or h2 marks it) stays never-indexed (RFC 7541
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

``quiet_hpack`` makes the decoder (still ``hpack``'s: it keeps the peer's dynamic table) cheaper
without changing what it decodes: its module logger becomes a no-op (it only ever logs at debug
level), and Huffman decoding is memoised (a pure function of its input; a peer's ``date`` or
``server`` field is then decoded once, not per response).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import hpack.hpack
from h2.exceptions import ProtocolError
from hpack.huffman_table import decode_huffman
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

CACHE_FIELDS = 4096  # encoded fields kept (each a few hundred bytes at most)
CACHE_VALUE_BYTES = 256  # longer fields are encoded each time, not cached
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
            key = (h[0], h[1])
            enc = cache.get(key)
            if enc is None:
                enc = encode_field(key[0], key[1], False)
                if len(enc) <= CACHE_VALUE_BYTES:
                    if len(cache) >= CACHE_FIELDS:
                        cache.clear()
                    cache[key] = enc
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


class _Quiet:
    """A logger that drops everything (hpack logs only at debug level, per field)."""

    def debug(self, *args: object, **kwargs: object) -> None:
        pass


def quiet_hpack() -> None:
    """Make ``hpack``'s decoder cheaper, output unchanged (idempotent, process-wide)."""
    module: Any = hpack.hpack
    if isinstance(module.log, _Quiet):
        return
    module.log = _Quiet()
    module.decode_huffman = lru_cache(maxsize=HUFFMAN_CACHE)(decode_huffman)


__all__ = [
    "CACHE_FIELDS",
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "PlainEncoder",
    "check_block",
    "encode_field",
    "quiet_hpack",
]
