"""A raw HTTP/2 client (the h2 library over a trio stream) for protocol-level tests: it sends
what a test asks, including what a well-behaved client would not, and acknowledges received
data only when told to (a slow reader)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError


@dataclass
class Answer:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes) -> bytes:
        for n, v in self.headers + self.trailers:
            if n == name:
                return v
        return b""


class RawH2:
    def __init__(self, stream: trio.SocketStream, validate: bool = True) -> None:
        self.stream = stream
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.h2 = H2Connection(config)
        self.answers: dict[int, Answer] = {}
        self.events: list[Event] = []
        self.terminated: ConnectionTerminated | None = None
        self.auto_ack = True
        self.broken = False

    @classmethod
    async def open(cls, addr: tuple[str, int], validate: bool = True) -> RawH2:
        c = cls(await trio.open_tcp_stream(*addr), validate)
        c.h2.initiate_connection()
        await c.flush()
        return c

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(
        self,
        path: bytes,
        authority: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        method: bytes = b"GET",
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", path),
            *(extra or []),
        ]
        self.answers[sid] = Answer()
        self.h2.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=True)
        await self.flush()
        return sid

    async def pump(self) -> bool:
        """Read once and file the events; False at EOF."""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if not data:
            return False
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self.broken = True  # e.g. frames after the peer's GOAWAY: h2 takes none
            return False
        for ev in events:
            self.events.append(ev)
            sid = getattr(ev, "stream_id", None)
            a = self.answers.get(sid) if sid is not None else None
            if isinstance(ev, ResponseReceived) and a is not None:
                a.headers = ev.headers  # type: ignore[assignment]
            elif isinstance(ev, DataReceived) and a is not None:
                a.body += ev.data  # type: ignore[operator]
                if self.auto_ack:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)  # type: ignore[arg-type]
            elif isinstance(ev, TrailersReceived) and a is not None:
                a.trailers = ev.headers  # type: ignore[assignment]
            elif isinstance(ev, StreamEnded) and a is not None:
                a.ended = True
            elif isinstance(ev, StreamReset) and a is not None:
                a.reset = ev.error_code
            elif isinstance(ev, ConnectionTerminated):
                self.terminated = ev
            elif isinstance(ev, RemoteSettingsChanged):
                pass
        await self.flush()
        return True

    async def until_done(self, sid: int) -> Answer:
        a = self.answers[sid]
        while not a.ended and a.reset is None and self.terminated is None:
            if not await self.pump():
                break
        return a

    async def aclose(self) -> None:
        await self.stream.aclose()
