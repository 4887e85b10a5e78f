"""``check.grpc``: the standard gRPC health check (``grpc.health.v1.Health/Check``) over h2c.

Theory of operation
-------------------
One call on a fresh connection to the instance, HTTP/2 with prior knowledge (the h2 library,
sans-IO, driven here on a trio stream): HEADERS for ``/grpc.health.v1.Health/Check``, one
length-prefixed ``HealthCheckRequest{service}`` message, END_STREAM; then the answer's message
and trailers. The instance passes when the call ends with ``grpc-status: 0`` and the message's
``status`` field is SERVING (1). The two protobuf messages are one string and one enum field, so
they are written and read by hand (no protobuf dependency). Everything the instance sends is
bounded (``MAX_ANSWER_BYTES``) and every failure is a result with a reason, never an exception;
the checker's timeout (health.py) bounds the time.
"""

from __future__ import annotations

import trio
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived
from h2.exceptions import H2Error

PATH = b"/grpc.health.v1.Health/Check"
SERVING = 1
MAX_ANSWER_BYTES = 65_536
RECV_BYTES = 16_384


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def request_message(service: str) -> bytes:
    """``HealthCheckRequest{service}``, length-prefixed as a gRPC message."""
    raw = service.encode()
    body = b"\x0a" + varint(len(raw)) + raw if raw else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def serving_status(message: bytes) -> int | None:
    """The ``status`` (field 1, varint) of a length-prefixed ``HealthCheckResponse``; 0 when
    absent (proto3 default: UNKNOWN); None if the bytes are not such a message."""
    if len(message) < 5 or message[0] != 0:
        return None
    body = message[5 : 5 + int.from_bytes(message[1:5], "big")]
    i = 0
    status = 0
    while i < len(body):
        key = body[i]
        i += 1
        if key == 0x08:  # field 1, varint
            value = shift = 0
            while i < len(body):
                byte = body[i]
                i += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            status = value
        else:
            return None  # HealthCheckResponse has no other field
    return status


async def grpc_probe(stream: trio.abc.Stream, authority: str, service: str) -> tuple[bool, str]:
    """One health call on ``stream`` (connected to the instance): (passes, reason)."""
    h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    h2.initiate_connection()
    sid = h2.get_next_available_stream_id()
    h2.send_headers(
        sid,
        [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", authority.encode()),
         (b":path", PATH), (b"content-type", b"application/grpc"), (b"te", b"trailers")],
    )  # fmt: skip
    h2.send_data(sid, request_message(service), end_stream=True)
    answer = bytearray()
    code: bytes | None = None
    try:
        await stream.send_all(h2.data_to_send())
        while True:
            data = await stream.receive_some(RECV_BYTES)
            if not data:
                return False, "grpc: closed before the answer"
            for ev in h2.receive_data(data):
                if isinstance(ev, ResponseReceived | TrailersReceived):
                    for name, value in ev.headers or ():
                        if name == b"grpc-status":
                            code = bytes(value)
                elif isinstance(ev, DataReceived) and ev.stream_id == sid:
                    answer += ev.data or b""
                    if len(answer) > MAX_ANSWER_BYTES:
                        return False, "grpc: answer too large"
                    h2.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
                elif isinstance(ev, StreamReset):
                    return False, f"grpc: stream reset ({ev.error_code})"
                elif isinstance(ev, StreamEnded) and ev.stream_id == sid:
                    return verdict(code, bytes(answer))
            out = h2.data_to_send()
            if out:
                await stream.send_all(out)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, H2Error) as e:
        return False, f"grpc: {type(e).__name__}: {e}"[:120]


def verdict(code: bytes | None, answer: bytes) -> tuple[bool, str]:
    if code != b"0":
        return False, f"grpc-status {code.decode('latin-1') if code else 'missing'}"
    status = serving_status(answer)
    if status is None:
        return False, "grpc: not a HealthCheckResponse"
    names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
    return status == SERVING, f"grpc {names.get(status, str(status))}"


__all__ = ["grpc_probe", "request_message", "serving_status", "varint"]
