"""The ``h2`` library as an oracle for the proxy's own HTTP/2 core (gossipmesh/proxy/h2core.py).

``Oracle`` is an ``H2Connection`` set up exactly as the proxy used it before its own core (our
HPACK coders, h2's inbound validation off and ``check_block`` on the events instead), with the
core's API: ``receive`` returns the events in the core's normalised form or raises ``Failed``
with the GOAWAY's error code; the sending methods raise ``Refused`` where the core raises
``StreamGone``. ``normal_events`` and ``frames_of`` put both sides' outputs in one form.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings
from hpack.struct import NeverIndexedHeaderTuple

from gossipmesh.proxy.h2codec import (
    REQUEST,
    RESPONSE,
    TRAILERS,
    PlainDecoder,
    PlainEncoder,
    check_block,
)
from gossipmesh.proxy.h2core import H2Core
from gossipmesh.proxy.h2events import INFORMATIONAL, DataIn, GoAwayIn, HeadersIn, ResetIn
from gossipmesh.proxy.h2frames import PREFACE, ConnError
from gossipmesh.proxy.h2state import H2Settings

Norm = tuple[Any, ...]


class Failed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Refused(Exception):
    pass


def fields(headers: Any) -> list[tuple[bytes, bytes, bool]]:
    return [(bytes(n), bytes(v), type(h) is NeverIndexedHeaderTuple) for h in headers for n, v in [h]]  # fmt: skip


class Oracle:
    def __init__(self, client: bool, s: H2Settings) -> None:
        config = H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        h2 = self.h2 = H2Connection(config)
        h2.encoder = PlainEncoder()  # type: ignore[assignment]
        h2.decoder = PlainDecoder()  # type: ignore[assignment]
        initial = {
            SettingCodes.MAX_CONCURRENT_STREAMS: s.max_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: s.stream_window,
            SettingCodes.MAX_HEADER_LIST_SIZE: s.max_header_list,
        }
        if client:
            initial[SettingCodes.ENABLE_PUSH] = 0
        h2.local_settings = Settings(client=client, initial_values=initial)
        h2.decoder.max_header_list_size = s.max_header_list
        h2.initiate_connection()
        if s.connection_window > 65_535:
            h2.increment_flow_control_window(s.connection_window - 65_535)

    def receive(self, data: bytes) -> list[Norm]:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as e:
            raise Failed(int(e.error_code)) from None
        out: list[Norm] = []
        for ev in events:
            kind = {RequestReceived: REQUEST, ResponseReceived: RESPONSE,
                    TrailersReceived: TRAILERS, InformationalResponseReceived: INFORMATIONAL}.get(type(ev))  # fmt: skip
            if kind is not None:
                try:
                    # A 1xx block is a response's (the proxy before its core let it through
                    # unchecked: it ignores them, but a peer's bytes are checked all the same).
                    check = RESPONSE if kind == INFORMATIONAL else kind
                    check_block(ev.headers, check)  # type: ignore[attr-defined]
                except ProtocolError:
                    with contextlib.suppress(H2Error):
                        self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
                    raise Failed(ErrorCodes.PROTOCOL_ERROR) from None
                ended = getattr(ev, "stream_ended", None) is not None or kind == TRAILERS
                out.append(("headers", ev.stream_id, fields(ev.headers), ended, kind))  # type: ignore[attr-defined]
            elif isinstance(ev, DataReceived):
                ended = ev.stream_ended is not None
                out.append(("data", ev.stream_id, ev.data, ev.flow_controlled_length, ended))
            elif isinstance(ev, StreamReset):  # the peer's, or h2's for a stream error
                out.append(("reset", ev.stream_id, int(ev.error_code or 0)))
            elif isinstance(ev, ConnectionTerminated):
                # h2 keeps the reserved bit RFC 9113 §6.8 says to ignore; the core drops it.
                last = (ev.last_stream_id or 0) & 0x7FFFFFFF
                out.append(("goaway", last, int(ev.error_code or 0)))
        return out

    def data_to_send(self) -> bytes:
        return self.h2.data_to_send()

    def open_request(self, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        try:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, headers, end_stream=end)
        except H2Error:
            raise Refused from None
        return sid

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(sid, headers, end_stream=end)
        except H2Error:
            raise Refused from None

    def window(self, sid: int) -> int:
        try:
            w = self.h2.local_flow_control_window(sid)
        except H2Error:
            raise Refused from None
        return min(w, self.h2.max_outbound_frame_size)

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        try:
            self.h2.send_data(sid, data, end_stream=end)
        except H2Error:
            raise Refused from None

    def reset(self, sid: int, code: int) -> None:
        s = self.h2.streams.get(sid)
        if s is not None and not s.closed:  # as the link did
            with contextlib.suppress(H2Error):
                self.h2.reset_stream(sid, code)

    def ack(self, sid: int, n: int) -> None:
        with contextlib.suppress(H2Error):
            self.h2.acknowledge_received_data(n, sid)

    def close(self, code: int) -> None:
        with contextlib.suppress(H2Error):
            self.h2.close_connection(code)


def core_receive(core: H2Core, data: bytes) -> list[Norm]:
    """The core's events for ``data`` in the oracle's form (``Failed`` on a connection error)."""
    try:
        events = core.receive(data)
    except ConnError as e:
        raise Failed(e.code) from None
    out: list[Norm] = []
    for ev in events:
        if isinstance(ev, HeadersIn):
            out.append(("headers", ev.sid, fields(ev.headers), ev.ended, ev.kind))
        elif isinstance(ev, DataIn):
            out.append(("data", ev.sid, ev.data, ev.flow, ev.ended))
        elif isinstance(ev, ResetIn):
            out.append(("reset", ev.sid, ev.code))
        elif isinstance(ev, GoAwayIn):
            out.append(("goaway", ev.last_sid, ev.code))
    return out


DEFAULTS = {1: 4096, 2: 1, 3: None, 4: 65_535, 5: 16_384, 6: None, 8: 0}


def frames_of(data: bytes) -> list[Norm]:
    """Frames as comparable tuples: SETTINGS as the values they make effective (h2 repeats the
    defaults, the core sends only what differs), GOAWAY without its debug data."""
    if data.startswith(PREFACE):
        data = data[len(PREFACE) :]
    out: list[Norm] = []
    pos = 0
    while pos < len(data):
        hi, lo, kind, flags, sid = struct.unpack_from(">HBBBL", data, pos)
        n = (hi << 8) | lo
        payload = data[pos + 9 : pos + 9 + n]
        pos += 9 + n
        if kind == 4 and not flags & 1:
            values = dict(DEFAULTS)
            for i in range(0, n, 6):
                k, v = struct.unpack_from(">HL", payload, i)
                values[k] = v
            values.pop(2)  # ENABLE_PUSH: only meaningful from a client, which both send as 0
            out.append(("SETTINGS", sorted(values.items(), key=lambda kv: kv[0])))
        elif kind == 7:
            out.append(("GOAWAY", payload[:8]))
        else:
            out.append((kind, flags, sid, payload))
    return out


__all__ = ["Failed", "Oracle", "Refused", "core_receive", "frames_of"]
