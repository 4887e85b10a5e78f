"""A tiny blocking client for the agent's admin API (http.client; one request per connection)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

from gossipmesh.errors import UsageError
from gossipmesh.ids import DEFAULT_ADMIN_PORT, Address

DEFAULT_AGENT = f"127.0.0.1:{DEFAULT_ADMIN_PORT}"
TIMEOUT_S = 15.0  # key fan-out and join wait up to ~5 s on the agent side


class AgentUnreachable(Exception):
    """No admin API answered at the address; the message is the one line the CLI prints."""


class AdminError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(f"{error}: {detail}" if detail else error)


class AdminClient:
    def __init__(self, agent: str, timeout_s: float = TIMEOUT_S) -> None:
        self.address = Address.parse(agent, default_port=DEFAULT_ADMIN_PORT)
        self.timeout_s = timeout_s

    def _connect(self, timeout_s: float | None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON). Raises AgentUnreachable."""
        conn = self._connect(self.timeout_s)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnreachable(self._why(exc)) from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError as exc:
            raise AgentUnreachable(f"agent at {self.address} sent a non-JSON answer") from exc
        return resp.status, data

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        """Like ``request`` but raises AdminError for an error status not listed in ``ok``."""
        status, data = self.request(method, path, body)
        if status >= 400 and status not in ok:
            if isinstance(data, dict):
                raise AdminError(status, str(data.get("error")), str(data.get("detail", "")))
            raise AdminError(status, f"HTTP {status}", "")
        return data

    def stream_lines(self, path: str) -> Iterator[bytes]:
        """Yield lines of a streaming endpoint until the agent closes it."""
        conn = self._connect(None)
        try:
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise AgentUnreachable(self._why(exc)) from exc
            if resp.status >= 400:
                raise AdminError(
                    resp.status, f"HTTP {resp.status}", resp.read().decode(errors="replace")
                )
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException):
                    return
                if not line:
                    return
                yield line.rstrip(b"\n")
        finally:
            conn.close()

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, socket.timeout | TimeoutError):
            reason = "timed out"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror.lower()
        else:
            reason = type(exc).__name__
        return (
            f"cannot reach the gossipmesh agent at {self.address} ({reason}); "
            "is `gossipmesh agent` running? (set --agent or GOSSIPMESH_AGENT)"
        )


def parse_agent(text: str) -> str:
    try:
        Address.parse(text, default_port=DEFAULT_ADMIN_PORT)
    except UsageError as exc:
        raise ValueError(str(exc)) from exc
    return text
