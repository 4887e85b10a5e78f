"""What the proxy's HTTP/2 core (h2core.py) reports after reading a peer's bytes.

Theory of operation
-------------------
``H2Core.receive`` turns bytes into a list of these events, in the order of the frames that
caused them, for the link (h2link.py) to file with its streams. Only what the proxy acts on is
reported: a header block (a request, a response, an informational response or trailers, with
END_STREAM), a DATA frame's content and flow-controlled length, a peer's RST_STREAM, its GOAWAY,
and that a send window may have grown (a WINDOW_UPDATE, or a SETTINGS that changes the initial
window). PING, SETTINGS acknowledgements and PRIORITY are answered or ignored inside the core.

Plain ``__slots__`` classes, not frozen dataclasses as elsewhere in gossipmesh: one is made per
frame received on the proxy's hottest path, and a frozen dataclass's ``__init__`` (it goes
through ``object.__setattr__`` per field) measured 0.88 us against 0.22 us for these
(Python 3.11, four fields). They are not mutated after the core made them.
"""

from __future__ import annotations

from gossipmesh.proxy.h2codec import REQUEST, RESPONSE, TRAILERS

INFORMATIONAL = 3  # a 1xx response block (the others are h2codec's REQUEST, RESPONSE, TRAILERS)

HeaderList = list[tuple[bytes, bytes]]


class HeadersIn:
    """A complete header block on ``sid``: ``kind`` is REQUEST, RESPONSE, INFORMATIONAL or
    TRAILERS; ``ended``: it carried END_STREAM."""

    __slots__ = ("sid", "headers", "ended", "kind")

    def __init__(self, sid: int, headers: HeaderList, ended: bool, kind: int) -> None:
        self.sid = sid
        self.headers = headers
        self.ended = ended
        self.kind = kind

    def __repr__(self) -> str:
        return f"<HeadersIn {self.sid} kind={self.kind} ended={self.ended} {self.headers!r}>"


class DataIn:
    """A DATA frame's content on ``sid``; ``flow``: its flow-controlled length (padding
    included), what ``H2Core.ack`` hands back once the data was passed on."""

    __slots__ = ("sid", "data", "flow", "ended")

    def __init__(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        self.sid = sid
        self.data = data
        self.flow = flow
        self.ended = ended

    def __repr__(self) -> str:
        return f"<DataIn {self.sid} {len(self.data)}/{self.flow} ended={self.ended}>"


class ResetIn:
    """The peer reset stream ``sid`` with error ``code``."""

    __slots__ = ("sid", "code")

    def __init__(self, sid: int, code: int) -> None:
        self.sid = sid
        self.code = code

    def __repr__(self) -> str:
        return f"<ResetIn {self.sid} code={self.code}>"


class GoAwayIn:
    """The peer's GOAWAY: streams above ``last_sid`` were never processed."""

    __slots__ = ("last_sid", "code")

    def __init__(self, last_sid: int, code: int) -> None:
        self.last_sid = last_sid
        self.code = code

    def __repr__(self) -> str:
        return f"<GoAwayIn last={self.last_sid} code={self.code}>"


class WindowIn:
    """A send window may have grown (one shared instance, ``WINDOW``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<WindowIn>"


WINDOW = WindowIn()

Event = HeadersIn | DataIn | ResetIn | GoAwayIn | WindowIn


class StreamGone(Exception):
    """A send on a stream that cannot take it (closed, reset, unknown, or the connection gone),
    or a stream the peer's limits do not allow: the caller's stream is over."""


__all__ = [
    "INFORMATIONAL",
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "WINDOW",
    "DataIn",
    "Event",
    "GoAwayIn",
    "HeaderList",
    "HeadersIn",
    "ResetIn",
    "StreamGone",
    "WindowIn",
]
