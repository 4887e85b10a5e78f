"""The proxy's HPACK encoder and decoder and its one-pass header checks, held to what ``hpack``
and ``h2`` themselves do."""

from __future__ import annotations

import pytest
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKError, InvalidTableSizeError, OversizedHeaderListError
from hpack.struct import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.proxy.h2codec import (
    CACHE_FIELDS,
    REQUEST,
    RESPONSE,
    TRAILERS,
    PlainDecoder,
    PlainEncoder,
    check_block,
)

NAMES = [b":method", b":path", b":status", b"content-type", b"x-request-id", b"cookie", b"te",
         b"host", b":authority", b"user-agent", b"x-custom", b"date"]  # fmt: skip
VALUES = st.binary(max_size=40) | st.sampled_from([b"GET", b"/", b"200", b"", b"trailers"])
FIELD = st.tuples(st.sampled_from(NAMES) | st.binary(min_size=1, max_size=12), VALUES)
BLOCK = st.lists(st.tuples(FIELD, st.booleans()), max_size=12)


def kind_of(f: tuple[bytes, bytes]) -> tuple[bytes, bytes, bool]:
    return f[0], f[1], type(f) is NeverIndexedHeaderTuple


# -- encoder -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(BLOCK, min_size=1, max_size=5))
def test_what_the_plain_encoder_sends_hpack_decodes_back(blocks: list) -> None:
    enc, dec = PlainEncoder(), Decoder()
    dec.max_header_list_size = 1 << 20
    for block in blocks:
        headers = [NeverIndexedHeaderTuple(*f) if never else f for f, never in block]
        got = dec.decode(enc.encode(headers), raw=True)
        assert [kind_of(h) for h in got] == [kind_of(h) for h in headers]
    assert dec.header_table.dynamic_entries == type(dec.header_table.dynamic_entries)()


def test_a_static_field_is_one_byte_and_a_new_table_size_is_announced_once() -> None:
    enc = PlainEncoder()
    assert enc.encode([(b":method", b"GET"), (b":path", b"/")]) == b"\x82\x84"
    enc.header_table_size = 0  # the peer's SETTINGS_HEADER_TABLE_SIZE
    assert enc.encode([(b":method", b"GET")]) == b"\x20\x82"
    assert enc.encode([(b":method", b"GET")]) == b"\x82"


def test_the_field_cache_is_bounded() -> None:
    enc = PlainEncoder()
    for i in range(CACHE_FIELDS + 10):
        enc.encode([(b"x-request-id", b"%d" % i)])
    assert len(PlainEncoder._cache) <= CACHE_FIELDS


# -- decoder -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(BLOCK, st.booleans(), st.sampled_from([None, 0, 50, 60, 100, 4096])), min_size=1, max_size=6))  # fmt: skip
def test_the_plain_decoder_reads_what_hpack_encodes_as_hpack_does(blocks: list) -> None:
    enc, ref, ours = Encoder(), Decoder(), PlainDecoder()
    for d in (ref, ours):
        d.max_header_list_size = 1 << 20
    for block, huffman, table_size in blocks:
        if table_size is not None:
            enc.header_table_size = table_size
        headers = [(*f, True) if never else f for f, never in block]
        data = enc.encode(headers, huffman=huffman)
        expected = [kind_of(h) for h in ref.decode(data, raw=True)]
        assert [kind_of(h) for h in ours.decode(data)] == expected
        assert list(ours.dynamic) == list(ref.header_table.dynamic_entries)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60), st.binary(max_size=30))
def test_on_arbitrary_bytes_the_plain_decoder_fails_or_succeeds_as_hpack_does(
    first: bytes, second: bytes
) -> None:
    ref, ours = Decoder(), PlainDecoder()
    for data in (first, second):
        try:
            expected = [kind_of(h) for h in ref.decode(data, raw=True)]
        except HPACKError:
            with pytest.raises(HPACKError):
                ours.decode(data)
            return
        assert [kind_of(h) for h in ours.decode(data)] == expected


def test_an_integer_of_more_than_five_continuation_octets_is_refused() -> None:
    four = b"\x3f\x80\x80\x80\x80\x00"  # a table size update to 31, padded with zeros
    five = b"\x3f\x80\x80\x80\x80\x80\x00"
    assert PlainDecoder().decode(four) == Decoder().decode(four, raw=True) == []
    for decoder in (PlainDecoder(), Decoder()):
        with pytest.raises(HPACKError):
            decoder.decode(five)


def test_the_decoder_limits_the_header_list_and_the_table_size() -> None:
    block = Encoder().encode([(b"x-big", b"v" * 100)], huffman=False)
    dec = PlainDecoder()
    dec.max_header_list_size = 100
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block)
    dec = PlainDecoder()
    dec.max_allowed_table_size = 100
    with pytest.raises(InvalidTableSizeError):
        dec.decode(b"\x3f\xe1\x1f")  # a size update to 4096
    with pytest.raises(InvalidTableSizeError):
        dec.decode(b"\x82")  # the table was never shrunk to the allowed size


# -- checks ------------------------------------------------------------------------------------

CHECK_NAMES = [b":method", b":scheme", b":path", b":authority", b":status", b":protocol", b":x",
               b"host", b"te", b"connection", b"content-type", b"Upper", b"a:b", b"",
               b"sp ace"]  # fmt: skip
CHECK_VALUES = [b"GET", b"CONNECT", b"http", b"/", b"", b"200", b"trailers", b"gzip", b"a",
                b" lead", b"trail\t", b"nul\x00", b"cr\r", b"ok value"]  # fmt: skip
CHECK_FIELD = st.tuples(st.sampled_from(CHECK_NAMES), st.sampled_from(CHECK_VALUES))
REQUEST_START = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                 (b":authority", b"a")]  # fmt: skip


def h2_accepts(headers: list, kind: int) -> bool:
    flags = HeaderValidationFlags(
        is_client=kind != REQUEST,
        is_trailer=kind == TRAILERS,
        is_response_header=kind == RESPONSE,
        is_push_promise=False,
    )
    try:
        list(validate_headers(headers, flags))
    except ProtocolError:
        return False
    return True


def ours_accepts(headers: list, kind: int) -> bool:
    try:
        check_block(headers, kind)
    except ProtocolError:
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from([REQUEST, RESPONSE, TRAILERS]),
    st.sampled_from([[], REQUEST_START, [(b":status", b"200")]]),
    st.lists(CHECK_FIELD, max_size=6),
)
def test_check_block_accepts_exactly_what_h2s_inbound_validation_accepts(
    kind: int, start: list, fields: list
) -> None:
    headers = [*start, *fields]
    assert ours_accepts(headers, kind) == h2_accepts(headers, kind), headers


def test_check_block_on_typical_blocks() -> None:
    assert ours_accepts([*REQUEST_START, (b"te", b"trailers")], REQUEST)
    assert ours_accepts([(b":status", b"200"), (b"content-type", b"text/plain")], RESPONSE)
    assert ours_accepts([(b"grpc-status", b"0")], TRAILERS)
    assert not ours_accepts([*REQUEST_START, (b"connection", b"close")], REQUEST)
    assert not ours_accepts([(b"grpc-status", b"0"), (b":status", b"200")], TRAILERS)
    assert not ours_accepts([(b":method", b"GET"), (b":path", b"/")], REQUEST)  # no :scheme


def test_a_never_indexed_field_crosses_the_proxy_never_indexed() -> None:
    """RFC 7541 §7.1.3: an intermediary passes a never-indexed field on as one."""
    from gossipmesh.proxy.h2heads import forward_headers, request_head, response_headers

    block = Encoder().encode([*REQUEST_START, (b"authorization", b"secret", True)])
    req = request_head(PlainDecoder().decode(block), True)
    assert not isinstance(req, str)
    sent = PlainEncoder().encode(forward_headers(req, b"http", b"a", b"", None))
    got = {h[0]: type(h) for h in Decoder().decode(sent, raw=True)}
    assert got[b"authorization"] is NeverIndexedHeaderTuple
    assert got[b":path"] is not NeverIndexedHeaderTuple
    answer = [(b":status", b"200"), NeverIndexedHeaderTuple(b"set-cookie", b"s=1")]
    assert type(response_headers(answer)[1]) is NeverIndexedHeaderTuple
