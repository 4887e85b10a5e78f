"""The proxy's HTTP/2 core against hostile peers: each flood bound (h2flood.py) trips with
GOAWAY ENHANCE_YOUR_CALM and is named, and honest traffic of the same kind does not; each
protocol error of RFC 9113 ends the connection (or the stream) with the code the RFC names,
including where the core departs from ``h2`` (test_h2_core.py holds it to ``h2`` elsewhere)."""

from __future__ import annotations

import struct

import pytest
import trio

from gossipmesh.proxy import h2flood
from gossipmesh.proxy.h2codec import PlainEncoder
from gossipmesh.proxy.h2core import H2Core
from gossipmesh.proxy.h2events import INFORMATIONAL, DataIn, HeadersIn, ResetIn, StreamGone
from gossipmesh.proxy.h2frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ConnError,
    ErrorCodes,
    frame,
    goaway,
    rst_stream,
    settings_frame,
    window_update,
)
from gossipmesh.proxy.h2state import H2Settings
from gossipmesh.proxy.server import Proxy

LIMITS = H2Settings(max_streams=8, stream_window=65_535, max_header_list=4096,
                    connection_window=65_535)  # fmt: skip
REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a"), (b":authority", b"x")]
BLOCK = PlainEncoder().encode(REQUEST)
RESPONSE = PlainEncoder().encode([(b":status", b"200")])


def server() -> H2Core:
    core = H2Core(False, LIMITS)
    core.receive(PREFACE + settings_frame({}))
    core.out.clear()
    return core


def client() -> H2Core:
    core = H2Core(True, LIMITS)
    core.receive(settings_frame({}))
    core.out.clear()
    return core


def request(sid: int, end: bool = False) -> bytes:
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, BLOCK)


def fails(core: H2Core, data: bytes, code: int) -> ConnError:
    with pytest.raises(ConnError) as e:
        core.receive(data)
    assert e.value.code == code, e.value
    assert bytes(core.out).endswith(goaway(core.last_remote, code))
    assert core.receive(request(99)) == []  # nothing taken after it
    return e.value


def flood(core: H2Core, one: bytes, kind: int, honest: bytes = b"") -> int:
    """Send ``one`` until the flood of ``kind`` trips; returns how many went."""
    for n in range(1, 10 * h2flood.BURST[kind] + 1):
        try:
            core.receive(one + honest)
        except ConnError as e:
            assert e.code == ErrorCodes.ENHANCE_YOUR_CALM
            assert core.guard.tripped == h2flood.NAMES[kind]
            return n
    return 0


# -- floods ------------------------------------------------------------------------------------


def test_rapid_reset_trips_after_its_burst() -> None:
    core = server()
    sid = 1
    with pytest.raises(ConnError) as e:
        while sid < 10_000:
            core.receive(request(sid) + rst_stream(sid, ErrorCodes.CANCEL))
            sid += 2
    assert e.value.code == ErrorCodes.ENHANCE_YOUR_CALM and core.guard.tripped == "rapid_reset"
    assert sid // 2 + 1 == h2flood.BURST[h2flood.RESET] + 1


def test_resets_of_streams_that_did_work_never_trip() -> None:
    core = server()
    for i in range(2000):
        sid = 2 * i + 1
        core.receive(request(sid) + frame(DATA, 0, sid, b"body"))
        core.reset(sid, ErrorCodes.CANCEL) if i % 2 else core.receive(rst_stream(sid, 8))
    assert not core.dead


def test_streams_refused_past_the_limit_count_as_resets() -> None:
    core = server()
    for sid in range(1, 2 * LIMITS.max_streams, 2):
        core.receive(request(sid))
    refused = 0
    sid = 2 * LIMITS.max_streams + 1
    with pytest.raises(ConnError):
        while True:
            core.receive(request(sid))
            assert bytes(core.out).endswith(rst_stream(sid, ErrorCodes.REFUSED_STREAM))
            refused += 1
            sid += 2
    assert refused == h2flood.BURST[h2flood.RESET]


@pytest.mark.parametrize(
    ("one", "kind"),
    [
        (settings_frame({}), h2flood.SETTINGS),
        (frame(PING, 0, 0, b"12345678"), h2flood.PING),
        (window_update(0, 1), h2flood.WINDOW),
        (frame(0x20, 0, 0, b"?"), h2flood.OTHER),
        (frame(PRIORITY, 0, 3, b"\x00\x00\x00\x00\x10"), h2flood.OTHER),
    ],
    ids=["settings", "ping", "window_update", "unknown_type", "priority"],
)
def test_control_frame_floods_trip_after_their_burst(one: bytes, kind: int) -> None:
    core = server()
    before = core.guard.level[kind]  # the opening SETTINGS counts as one
    assert flood(core, one, kind) == h2flood.BURST[kind] + 1 - before


def test_control_frames_paced_by_work_never_trip() -> None:
    core = server()
    core.receive(request(1))
    data = frame(DATA, 0, 1, b"x")
    for _ in range(3000):  # a ping and a window update per DATA frame: a download, say
        core.receive(frame(PING, 0, 0, b"12345678") + window_update(0, 1) + data)
        core.ack(1, 1)
    assert not core.dead


def test_empty_data_flood_trips() -> None:
    core = server()
    core.receive(request(1))
    assert flood(core, frame(DATA, 0, 1, b""), h2flood.EMPTY) == h2flood.BURST[h2flood.EMPTY] + 1


def test_frames_on_a_stream_we_reset_are_discarded_then_bounded() -> None:
    core = server()
    core.receive(request(1))
    core.reset(1, ErrorCodes.CANCEL)
    core.out.clear()
    # In flight when we reset: discarded (RFC 9113 §5.1), the connection window given back.
    assert core.receive(frame(DATA, 0, 1, b"late")) == []
    assert bytes(core.out) == b""
    assert core.conn_recv + core.conn_processed == LIMITS.connection_window
    n = flood(core, frame(DATA, 0, 1, b"x"), h2flood.CLOSED)
    assert n == h2flood.BURST[h2flood.CLOSED]  # one went before


def test_continuation_flood_trips() -> None:
    core = server()
    core.receive(frame(HEADERS, 0, 1, BLOCK[:3]))
    empty = frame(CONTINUATION, 0, 1, b"")
    for _ in range(h2flood.MAX_CONTINUATIONS):
        core.receive(empty)
    err = fails(core, empty, ErrorCodes.ENHANCE_YOUR_CALM)
    assert "CONTINUATION" in str(err) and core.guard.tripped == "continuation"


def test_a_header_block_over_the_limit_trips_before_it_is_decoded() -> None:
    core = server()
    big = b"\x00" * 4000
    core.receive(frame(HEADERS, 0, 1, big))
    fails(core, frame(CONTINUATION, 0, 1, big), ErrorCodes.ENHANCE_YOUR_CALM)
    assert core.guard.tripped == "header_block"


def test_a_decoded_header_list_over_the_limit_is_enhance_your_calm() -> None:
    block = PlainEncoder().encode([*REQUEST, (b"x-big", b"v" * 3000), (b"x-big2", b"v" * 1100)])
    fails(server(), frame(HEADERS, END_HEADERS, 1, block), ErrorCodes.ENHANCE_YOUR_CALM)


async def test_a_flood_through_the_proxy_is_counted(nursery: trio.Nursery) -> None:
    p = Proxy(outbound=("127.0.0.1", 0), inbound=None)
    addrs = await nursery.start(p.serve)
    assert addrs.outbound is not None
    stream = await trio.open_tcp_stream(*addrs.outbound)
    ping = frame(PING, 0, 0, b"12345678")
    await stream.send_all(PREFACE + settings_frame({}) + ping * 1100)
    got = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                got += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    assert struct.pack(">L", ErrorCodes.ENHANCE_YOUR_CALM) in got[-8:]
    with trio.fail_after(5):
        while p.metrics.h2_floods != {("outbound", "ping"): 1}:
            await trio.sleep(0.01)
    assert p.metrics.h2_protocol_errors == {"outbound": 1}


# -- protocol errors ---------------------------------------------------------------------------

P, F, C, S = (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.FRAME_SIZE_ERROR,
              ErrorCodes.FLOW_CONTROL_ERROR, ErrorCodes.STREAM_CLOSED)  # fmt: skip


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(DATA, 0, 1, b"x" * 16_385), F),  # over our SETTINGS_MAX_FRAME_SIZE
        (frame(DATA, 0, 0, b"x"), P),
        (frame(DATA, 0, 3, b"x"), P),  # idle stream
        (frame(DATA, PADDED, 1, b"\x05abc"), P),  # padding as long as the frame
        (frame(HEADERS, END_HEADERS, 2, BLOCK), P),  # a client opens odd streams only
        (frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 3, b"\x00\x00\x00\x03\x10" + BLOCK), P),
        (frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 3, b"\x00\x00"), F),
        (
            frame(HEADERS, END_HEADERS, 3, b"\xff\xff\xff\xff\xff\xff\x7f"),
            ErrorCodes.COMPRESSION_ERROR,
        ),  # fmt: skip
        (frame(HEADERS, END_HEADERS, 3, PlainEncoder().encode([(b":method", b"GET")])), P),
        (frame(HEADERS, END_HEADERS, 1, BLOCK), P),  # trailers without END_STREAM
        (frame(HEADERS, 0, 3, BLOCK) + frame(PING, 0, 0, b"12345678"), P),  # inside a block
        (frame(HEADERS, 0x28, 3, b"\x01" + bytes(5)), P),  # padding over the priority (§6.2)
        (frame(CONTINUATION, END_HEADERS, 1, b""), P),  # no block open
        (frame(PRIORITY, 0, 1, b"\x00\x00\x00"), F),
        (frame(PRIORITY, 0, 0, b"\x00\x00\x00\x00\x10"), P),
        (frame(PRIORITY, 0, 5, b"\x00\x00\x00\x05\x10"), P),  # depends on itself
        (frame(RST_STREAM, 0, 1, b"\x00\x00\x08"), F),
        (frame(RST_STREAM, 0, 0, b"\x00\x00\x00\x08"), P),
        (rst_stream(7, 8), P),  # idle stream
        (frame(SETTINGS, 0, 1, b""), P),
        (frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00"), F),
        (frame(SETTINGS, 1, 0, b"\x00" * 6), F),  # an ACK with a payload
        (settings_frame({2: 2}), P),
        (settings_frame({4: 2**31}), C),
        (settings_frame({5: 16_383}), P),
        (settings_frame({5: 2**24}), P),
        (frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02" + BLOCK), P),
        (frame(PING, 0, 0, b"1234567"), F),
        (frame(PING, 0, 1, b"12345678"), P),
        (frame(0x7, 0, 0, b"\x00" * 7), F),  # GOAWAY shorter than 8
        (window_update(0, 0), P),
        (window_update(1, 0), P),
        (window_update(7, 1), P),  # idle stream
        (window_update(0, 2**31 - 65_535), C),
        (frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), F),
        (frame(DATA, 0, 1, b"x" * 16_384) * 4 + frame(DATA, 0, 1, b"x" * 4), C),  # stream window
    ],
)
def test_protocol_errors_end_the_connection_with_the_rfc_code(data: bytes, code: int) -> None:
    core = server()
    core.receive(request(1))
    fails(core, data, code)


def test_the_connection_window_is_enforced_across_streams() -> None:
    core = server()
    fill = b"".join(request(s) + frame(DATA, 0, s, b"x" * 16_384) for s in (1, 3, 5))
    core.receive(fill + request(7) + frame(DATA, 0, 7, b"x" * 16_383))  # 65,535 exactly
    fails(core, frame(DATA, 0, 7, b"x"), ErrorCodes.FLOW_CONTROL_ERROR)


def test_a_preface_that_is_not_http2_and_a_first_frame_not_settings() -> None:
    fails(H2Core(False, LIMITS), b"GET / HTTP/1.1\r\n\r\n", ErrorCodes.PROTOCOL_ERROR)
    fails(H2Core(False, LIMITS), PREFACE + frame(PING, 0, 0, b"12345678"), P)
    core = H2Core(False, LIMITS)
    for i in range(len(PREFACE)):  # byte by byte is fine
        assert core.receive(PREFACE[i : i + 1]) == []
    core.receive(settings_frame({}))
    assert not core.dead


def test_frames_after_the_peers_own_reset_are_a_stream_error() -> None:
    core = server()
    core.receive(request(1) + rst_stream(1, ErrorCodes.CANCEL))
    core.out.clear()
    assert core.receive(frame(DATA, 0, 1, b"x")) == []
    assert bytes(core.out) == rst_stream(1, ErrorCodes.STREAM_CLOSED)
    assert not core.dead


def test_stream_errors_reset_the_stream_and_keep_the_connection() -> None:
    core = server()
    core.receive(request(1) + request(3, end=True))
    core.out.clear()
    # DATA after the peer's END_STREAM (half-closed remote): STREAM_CLOSED for that stream,
    # and its user hears the stream is gone (it would wait on the answer otherwise).
    events = core.receive(frame(DATA, 0, 3, b"x"))
    assert [(type(e), e.sid, e.code) for e in events] == [(ResetIn, 3, ErrorCodes.STREAM_CLOSED)]
    assert rst_stream(3, ErrorCodes.STREAM_CLOSED) in bytes(core.out)
    # A stream window past 2^31-1: that stream is reset FLOW_CONTROL_ERROR.
    events = core.receive(window_update(1, 2**31 - 1))
    assert [(type(e), e.sid, e.code) for e in events if isinstance(e, ResetIn)] == [
        (ResetIn, 1, ErrorCodes.FLOW_CONTROL_ERROR)
    ]
    assert rst_stream(1, ErrorCodes.FLOW_CONTROL_ERROR) in bytes(core.out)
    assert not core.dead and not core.streams


def test_graceful_goaway_lets_open_streams_finish_and_refuses_new_ones() -> None:
    core = server()
    core.receive(request(1))
    core.close(ErrorCodes.NO_ERROR)
    assert bytes(core.out).endswith(goaway(1, ErrorCodes.NO_ERROR))
    core.receive(request(3, end=True))
    assert bytes(core.out).endswith(rst_stream(3, ErrorCodes.REFUSED_STREAM))
    events = core.receive(frame(DATA, END_STREAM, 1, b"end"))
    assert isinstance(events[0], DataIn) and events[0].ended
    core.send_headers(1, [(b":status", b"200")], True)
    assert not core.streams


def test_a_peers_goaway_lets_its_open_streams_finish() -> None:
    """RFC 9113 §6.8: a GOAWAY's sender still finishes the streams it opened at or below the
    last-stream-id it names; h2 takes any frame after a GOAWAY for a PROTOCOL_ERROR."""
    core = server()
    core.receive(request(1))
    assert core.receive(goaway(0, ErrorCodes.NO_ERROR))[0].code == ErrorCodes.NO_ERROR
    events = core.receive(frame(DATA, END_STREAM, 1, b"end"))
    assert isinstance(events[0], DataIn) and events[0].ended and events[0].data == b"end"
    core.send_headers(1, [(b":status", b"200")], True)
    assert not core.streams and not core.dead


def test_the_client_side_keeps_to_the_peers_limits() -> None:
    core = client()
    core.receive(settings_frame({3: 1}))
    sid = core.open_stream()
    core.send_headers(sid, REQUEST, False)
    with pytest.raises(StreamGone):
        core.open_stream()  # SETTINGS_MAX_CONCURRENT_STREAMS 1
    with pytest.raises(StreamGone):
        core.send_data(sid, b"x" * 65_536, False)  # over the window
    events = core.receive(frame(HEADERS, END_HEADERS, sid, PlainEncoder().encode([(b":status", b"103")])))  # fmt: skip
    assert isinstance(events[0], HeadersIn) and events[0].kind == INFORMATIONAL
    core.receive(frame(HEADERS, END_HEADERS | END_STREAM, sid, RESPONSE))
    core.send_data(sid, b"", True)
    assert not core.streams
    core.receive(goaway(1, 0))
    with pytest.raises(StreamGone):
        core.open_stream()  # after the peer's GOAWAY


def test_a_client_takes_no_1xx_that_ends_the_stream_and_no_push() -> None:
    core = client()
    sid = core.open_stream()
    core.send_headers(sid, REQUEST, True)
    block = PlainEncoder().encode([(b":status", b"100")])
    fails(core, frame(HEADERS, END_HEADERS | END_STREAM, sid, block), P)
    core = client()
    fails(core, settings_frame({2: 1}), P)  # a server may not enable push
