"""A raw HTTP/1.1 client for in-process agents' admin APIs: one request, one connection, the
status and the decoded JSON body. Raw on purpose: tests send malformed and oversized bodies too."""

from __future__ import annotations

import json
from types import EllipsisType
from typing import Any

import trio

from gossipmesh.agent.runtime import Agent


async def http(
    agent: Agent,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None | EllipsisType = ...,
) -> tuple[int, Any]:
    """``body``: bytes sent as they are, anything else as JSON, None for no body. ``token``: the
    bearer token to send; by default the agent's own, None for no authorization header."""
    assert agent.admin_address is not None
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    if token is ...:
        token = agent.admin_auth.token
    auth = f"authorization: Bearer {token}\r\n" if token is not None else ""
    stream = await trio.open_tcp_stream(agent.admin_address.host, agent.admin_address.port)
    async with stream:
        head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(raw)}\r\n{auth}"
        await stream.send_all(head.encode() + b"connection: close\r\n\r\n" + raw)
        buf = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                buf += chunk
    head_bytes, _, payload = buf.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ")[1]), json.loads(payload)
