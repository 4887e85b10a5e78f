"""A small blocking client for a gossipmesh agent's admin API (HTTP/JSON on 127.0.0.1:7947).

This is the library the ``gossipmesh`` CLI, the demo and operators' own scripts use to talk to
an agent; it imports no agent code and needs only the standard library::

    from gossipmesh.client import AdminClient, ClientError

    agent = AdminClient("127.0.0.1:7947")
    try:
        for m in agent.members():
            print(m["name"], m["state"])
        agent.config_put("route/web", {"destinations": [{"service": "api"}]})
    except ClientError as exc:
        print(exc)  # one line, ready to show a person

Public surface
--------------
- ``AdminClient(agent, timeout_s, *, token, token_file, agent_data_dir, discover_token,
  ca_file)``: one method per admin endpoint (below), plus ``request``, ``call`` and
  ``stream_lines`` for anything else. Each call opens one connection and closes it, so a client
  is cheap, holds no socket between calls and may be shared between threads.
- Errors, all ``ClientError``: ``AgentUnreachable`` (nothing answered, or not JSON, or its TLS
  certificate is not a node of the cluster), ``AdminError`` (the agent answered with an error
  status; ``status``, ``error`` and ``detail`` say which; 401 ``unauthorized`` without a valid
  token) and ``CredentialsProblem`` (a token or CA file given to the client is unusable). A bad
  ``agent`` address, or a non-loopback one without ``ca_file``, raises
  ``gossipmesh.errors.UsageError`` at construction.

Authentication
--------------
Writes, ``keys()`` and ``monitor()`` (and every call to a non-loopback agent) need the agent's
admin token, sent as ``Authorization: Bearer TOKEN``. Give it as ``token``, or as ``token_file``
(read at each call), or let the client read the agent's own file on this host: ``agent_data_dir``
(``DIR/admin.token``) or ``discover_token=True`` (the file ``GET /v1/self`` names). A file the
client finds itself is used only if it is private and belongs to the user whose process listens
on the admin port (``gossipmesh.admin_token``): a token never goes to a port squatter. A
non-loopback agent is reached over TLS only, verified against the cluster's roots in ``ca_file``
(``gossipmesh.client_tls``).
- ``DEFAULT_AGENT`` (the admin address an agent listens on by default) and ``TIMEOUT_S``.

Endpoints
---------
| method                              | admin API                                     |
|-------------------------------------|-----------------------------------------------|
| ``self_info()``                     | GET /v1/self                                  |
| ``members()``                       | GET /v1/members                               |
| ``health()``                        | GET /v1/health                                |
| ``services()``                      | GET /v1/services                              |
| ``join(addresses)``                 | POST /v1/join (502 "none joined" is returned) |
| ``leave()``                         | POST /v1/leave                                |
| ``monitor()``                       | GET /v1/monitor (a stream of JSON lines)      |
| ``tap(service, ...)``               | GET /v1/tap (live requests as JSON lines)     |
| ``keys()``, ``change_key(op, key)`` | GET, POST /v1/keys (207 "partly" is returned) |
| ``config(prefix)``                  | GET /v1/config?prefix=                        |
| ``config_get(key)``                 | GET /v1/config/KIND/NAME                      |
| ``config_put(key, body, signer)``   | prepare, sign, commit one entity              |
| ``config_delete(key, signer)``      | prepare, sign, commit one deletion            |
| ``config_apply(entities, signer)``  | prepare, sign, commit many (one atomic change)|
| ``config_write(items, signer)``     | POST /v1/config/prepare, then /commit         |
| ``trust()``                         | GET /v1/trust                                 |
| ``config_history(key)``             | GET /v1/config-history/KIND/NAME              |
| ``config_conflicts()``              | GET /v1/config-conflicts                      |
| ``faults()``, ``set_faults(drop)``, ``clear_faults()`` | GET, POST, DELETE /v1/faults |
| ``stats(window_s, service, scope)`` | GET /v1/stats (traffic over the last seconds) |

Config writes are signed by an operator (docs/SECURITY.md, "Signed configuration"): the agent
proposes the exact entries (``prepare``), a ``ConfigSigner`` checks and signs them on this side,
and ``commit`` sends them back; a 409 (the key changed meanwhile) prepares again, a few times.
``gossipmesh.config.signing.ProposalSigner`` is the signer (it needs ``cryptography``; this
module does not import it).

Answers are the agent's JSON, parsed (dicts and lists); docs/ARCHITECTURE.md and the CLI's
``--json`` output show their shapes.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlencode

from gossipmesh.admin_token import TOKEN_FILE, TokenFileError, listener_uid, read_token_file
from gossipmesh.errors import UsageError
from gossipmesh.ids import DEFAULT_ADMIN_PORT, Address

if TYPE_CHECKING:
    from gossipmesh.client_tls import AdminTLS

__all__ = [
    "DEFAULT_AGENT",
    "TIMEOUT_S",
    "AdminClient",
    "AdminError",
    "AgentUnreachable",
    "ClientError",
    "CredentialsProblem",
    "ConfigSigner",
    "KeyOp",
    "is_loopback_host",
]

DEFAULT_AGENT = f"127.0.0.1:{DEFAULT_ADMIN_PORT}"
TIMEOUT_S = 15.0  # key fan-out and join wait up to ~5 s on the agent side

KeyOp = Literal["install", "use", "remove"]
# The reads that need the token even on loopback (agent/admin_auth.py decides; this only tells
# the client when to go and find a token it was not given).
PRIVATE_READS = ("/v1/keys", "/v1/monitor", "/v1/tap")
COMMIT_ATTEMPTS = 5
Items = Mapping[str, Mapping[str, Any] | None]


class ConfigSigner(Protocol):
    """Checks an agent's proposal and signs it (``gossipmesh.config.signing.ProposalSigner``)."""

    def prepare_request(self, items: Items) -> dict[str, Any]: ...

    def sign(
        self, proposal: Mapping[str, Any], items: Items, node: str, wall_ms: int
    ) -> dict[str, Any]: ...


# What a gossip port (or a TLS listener) does to an HTTP request: close or reset, no answer.
NOT_HTTP = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
            ssl.SSLEOFError)  # fmt: skip


class ClientError(Exception):
    """Any failure of an admin API call; ``str(exc)`` is one line for a person to read."""


class AgentUnreachable(ClientError):
    """No admin API answered at the address, or what answered did not speak JSON."""


class CredentialsProblem(ClientError):
    """A token file or CA file given to the client cannot be used (one line, names the file)."""


class AdminError(ClientError):
    """The agent answered with an error status (``status``) and its ``error``/``detail``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(f"{error}: {detail}" if detail else error)


class AdminClient:
    """The admin API of one agent. ``agent`` is ``HOST[:PORT]`` (port 7947 by default)."""

    def __init__(
        self,
        agent: str = DEFAULT_AGENT,
        timeout_s: float = TIMEOUT_S,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        agent_data_dir: str | Path | None = None,
        discover_token: bool = False,
        ca_file: str | Path | None = None,
    ) -> None:
        self.address = Address.parse(agent, default_port=DEFAULT_ADMIN_PORT)
        self.timeout_s = timeout_s
        self.loopback = is_loopback_host(self.address.host)
        self._token = token.strip() if token else None
        self._token_file = Path(token_file) if token_file is not None else None
        self._own_file = Path(agent_data_dir) / TOKEN_FILE if agent_data_dir is not None else None
        self._discover = discover_token
        self._why_no_token = ""
        self._tls: AdminTLS | None = None
        if ca_file is not None:
            from gossipmesh.client_tls import AdminTLS  # cryptography: only when TLS is used

            try:
                self._tls = AdminTLS.load(Path(ca_file))
            except UsageError as exc:
                raise CredentialsProblem(str(exc)) from exc
        elif not self.loopback:
            raise UsageError(
                f"agent {self.address} is not on loopback: its admin API is TLS, give the "
                "cluster's roots (--ca-file ROOTS.pem, or an operator file)"
            )

    def __repr__(self) -> str:
        return f"AdminClient({str(self.address)!r}, timeout_s={self.timeout_s:g})"

    # ---- membership -------------------------------------------------------------------------

    def self_info(self) -> dict[str, Any]:
        """This agent's own member record (name, address, incarnation, state)."""
        data: dict[str, Any] = self.call("GET", "/v1/self")
        return data

    def members(self) -> list[dict[str, Any]]:
        """Every member the agent knows, with its state (alive, suspect, dead, left)."""
        data: list[dict[str, Any]] = self.call("GET", "/v1/members")
        return data

    def health(self) -> dict[str, Any]:
        """Member counts, health score and counters (drops, errors, limits hit)."""
        data: dict[str, Any] = self.call("GET", "/v1/health")
        return data

    def services(self) -> list[dict[str, Any]]:
        """Every service instance in the mesh: node, address, tags, health, ejection."""
        data: list[dict[str, Any]] = self.call("GET", "/v1/services")
        return data

    def join(self, addresses: list[str]) -> dict[str, Any]:
        """Join through ``addresses``; ``{"joined": n, "results": {address: ok}}``, also when
        none answered (``joined == 0``)."""
        data: dict[str, Any] = self.call("POST", "/v1/join", {"addresses": addresses}, ok=(502,))
        return data

    def leave(self) -> dict[str, Any]:
        """Leave the cluster gracefully; the agent answers first, then stops."""
        data: dict[str, Any] = self.call("POST", "/v1/leave")
        return data

    def monitor(self) -> Iterator[bytes]:
        """Member events as they happen, one JSON object per line (the first is
        ``monitor-start``), until the agent closes the stream; blank keep-alive lines included."""
        return self.stream_lines("/v1/monitor")

    def tap(
        self,
        service: str = "",
        *,
        path: str = "",
        method: str = "",
        status: str = "",
        max_rps: float | None = None,
        duration_s: float | None = None,
        scope: str = "mesh",
    ) -> Iterator[bytes]:
        """Live requests matching the filters, from every alive agent (``scope="local"``: this
        one), one JSON object per line: ``tap-start``, a line per request, ``tap-end`` when
        ``duration_s`` is up (the agent caps it). No bodies, no header values."""
        query: dict[str, str] = {"scope": scope}
        for name, value in (("service", service), ("path", path), ("method", method),
                            ("status", status)):  # fmt: skip
            if value:
                query[name] = value
        if max_rps is not None:
            query["max_rps"] = f"{max_rps:g}"
        if duration_s is not None:
            query["duration"] = f"{duration_s:g}"
        return self.stream_lines("/v1/tap?" + urlencode(query))

    # ---- keys -------------------------------------------------------------------------------

    def keys(self) -> dict[str, Any]:
        """The ids of the keys on every live member (``crypto.key_id``; keys never leave an
        agent), how many nodes hold each, and each node's primary."""
        data: dict[str, Any] = self.call("GET", "/v1/keys")
        return data

    def change_key(self, op: KeyOp, key: str) -> dict[str, Any]:
        """Install, use (make primary) or remove ``key`` on every member. A partial success
        (HTTP 207) is returned, not raised: its ``failed`` names the members that refused.
        ``use`` while some member lacks the key raises ``AdminError`` 409 naming them."""
        data: dict[str, Any] = self.call("POST", "/v1/keys", {"op": op, "key": key}, ok=(207,))
        return data

    # ---- config -----------------------------------------------------------------------------

    def config(self, prefix: str = "") -> dict[str, Any]:
        """The effective entities under ``prefix``: ``{"entities": {key: body}, "count", ...}``."""
        query = f"?prefix={quote(prefix, safe='/')}" if prefix else ""
        data: dict[str, Any] = self.call("GET", f"/v1/config{query}")
        return data

    def config_get(self, key: str) -> dict[str, Any]:
        """One entity, ``{"key", "value", ...}``; a missing key is ``AdminError`` status 404."""
        data: dict[str, Any] = self.call("GET", f"/v1/config/{_path(key)}")
        return data

    def config_put(self, key: str, body: Mapping[str, Any], signer: ConfigSigner) -> dict[str, Any]:
        """Write one entity, signed; answered once the write is durable on this agent."""
        return self.config_write({key: body}, signer)

    def config_delete(self, key: str, signer: ConfigSigner) -> dict[str, Any]:
        """Delete one entity (a signed tombstone every agent learns)."""
        return self.config_write({key: None}, signer)

    def config_apply(
        self, entities: Mapping[str, Mapping[str, Any] | None], signer: ConfigSigner
    ) -> dict[str, Any]:
        """Write many entities (``None`` deletes) as one atomic, signed change."""
        return self.config_write(entities, signer)

    def config_prepare(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The agent's proposal for a write (``{"items": ..., "certificate": ...}``)."""
        data: dict[str, Any] = self.call("POST", "/v1/config/prepare", dict(body))
        return data

    def config_commit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Commit signed entries (``{"entries": [...]}``); 409 is raised as ``AdminError``."""
        data: dict[str, Any] = self.call("POST", "/v1/config/commit", dict(body))
        return data

    def config_write(
        self, items: Items, signer: ConfigSigner, attempts: int = COMMIT_ATTEMPTS
    ) -> dict[str, Any]:
        """Prepare, sign and commit ``items``; prepare again when the agent answers 409 (the
        key changed between the two steps). The signer's refusal (the agent proposed something
        the operator did not ask for) surfaces as its own exception."""
        items = {k: None if v is None else dict(v) for k, v in items.items()}
        node = str(self.self_info().get("name"))
        for attempt in range(attempts):
            proposal = self.config_prepare(signer.prepare_request(items))
            body = signer.sign(proposal, items, node, int(time.time() * 1000))
            if not body.get("entries"):
                return {"written": {}, "durable": True, "voided": []}  # nothing to change
            try:
                return self.config_commit(body)
            except AdminError as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def trust(self) -> dict[str, Any]:
        """The roots and revocations the agent enforces (GET /v1/trust)."""
        data: dict[str, Any] = self.call("GET", "/v1/trust")
        return data

    def config_history(self, key: str) -> dict[str, Any]:
        """Versions of one entity this agent has seen, newest first."""
        data: dict[str, Any] = self.call("GET", f"/v1/config-history/{_path(key)}")
        return data

    def config_conflicts(self) -> dict[str, Any]:
        """Keys written concurrently, with every sibling and the winner."""
        data: dict[str, Any] = self.call("GET", "/v1/config-conflicts")
        return data

    # ---- fault injection (agents started with --enable-fault-injection) ---------------------

    def stats(
        self, window_s: float = 10.0, service: str | None = None, scope: str = "cluster"
    ) -> dict[str, Any]:
        """Success rate, rps and latency percentiles over the last ``window_s`` seconds, merged
        over every alive agent (``scope="local"``: this agent alone); gossipmesh/traffic_stats.py
        describes the shape."""
        query = f"?window_s={window_s:g}&scope={quote(scope)}"
        if service:
            query += f"&service={quote(service)}"
        return self.call("GET", "/v1/stats" + query)

    def faults(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", "/v1/faults")
        return data

    def set_faults(self, drop: list[str], loss: float | None = None) -> dict[str, Any]:
        """Drop all traffic to and from the gossip addresses ``drop`` (``HOST:PORT``), and lose
        the share ``loss`` (0-1) of all gossip datagrams in and out."""
        body: dict[str, Any] = {"drop": drop}
        if loss is not None:
            body["loss"] = loss
        data: dict[str, Any] = self.call("POST", "/v1/faults", body)
        return data

    def clear_faults(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("DELETE", "/v1/faults")
        return data

    # ---- any endpoint -----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON) whatever the status.

        Raises AgentUnreachable when nothing answers or the answer is not JSON.
        """
        headers = self._auth_headers(method, path)
        conn = self._connect(self.timeout_s)
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["content-type"] = "application/json"
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
            raise AgentUnreachable(
                f"{self.address} sent a non-JSON answer (HTTP {resp.status}): not an admin API; "
                f"a proxy listener? (outbound 4140 and inbound 4143 by default; the admin API is "
                f"the agent's --admin, default {DEFAULT_AGENT})"
            ) from exc
        return resp.status, data

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        """Like ``request`` but raises AdminError for an error status not listed in ``ok``."""
        status, data = self.request(method, path, body)
        if status >= 400 and status not in ok:
            if isinstance(data, dict):
                detail = str(data.get("detail", ""))
                if status == 401 and self._why_no_token:
                    detail += f"; the client found no token: {self._why_no_token}"
                raise AdminError(status, str(data.get("error")), detail)
            raise AdminError(status, f"HTTP {status}", "")
        return data

    def stream_lines(self, path: str) -> Iterator[bytes]:
        """Yield lines of a streaming endpoint until the agent closes it (no read timeout)."""
        headers = self._auth_headers("GET", path)
        conn = self._connect(None)
        try:
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise AgentUnreachable(self._why(exc)) from exc
            if resp.status >= 400:
                try:
                    data = json.loads(resp.read())
                    error, detail = str(data["error"]), str(data.get("detail", ""))
                except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
                    error, detail = f"HTTP {resp.status}", ""
                if resp.status == 401 and self._why_no_token:
                    detail += f"; the client found no token: {self._why_no_token}"
                raise AdminError(resp.status, error, detail)
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

    def _connect(self, timeout_s: float | None) -> http.client.HTTPConnection:
        if self._tls is not None:
            return self._tls.connection(self.address.host, self.address.port, timeout_s)
        return http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout_s)

    # ---- the token ----------------------------------------------------------------------------

    def _auth_headers(self, method: str, path: str) -> dict[str, str]:
        token = self._token
        if token is None and self._token_file is not None:
            try:
                token = read_token_file(self._token_file)
            except TokenFileError as exc:
                raise CredentialsProblem(str(exc)) from exc
        needed = (
            not self.loopback
            or method not in ("GET", "HEAD")
            or path.partition("?")[0] in PRIVATE_READS
        )
        if token is None and needed:
            token = self._find_own_token()
        return {"authorization": f"Bearer {token}"} if token else {}

    def _find_own_token(self) -> str | None:
        """The agent's own token file on this host, if it is safe to use (cached once found)."""
        if not self.loopback:
            return None  # another host's files are not ours to read
        path = self._own_file
        if path is None and self._discover:
            self._discover = False  # ask once
            try:
                status, data = self.request("GET", "/v1/self")
            except AgentUnreachable:
                return None  # the real request will say so
            named = data.get("admin_token_file") if isinstance(data, dict) else None
            if status == 200 and isinstance(named, str) and named:
                path = self._own_file = Path(named)
        if path is None:
            return None
        # Only to the user whose process listens on the port: see gossipmesh.admin_token.
        owner = listener_uid(self.address)
        try:
            self._token = read_token_file(path, owner_uid=owner)
        except TokenFileError as exc:
            self._why_no_token = str(exc)
            return None
        return self._token

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, NOT_HTTP):
            return (
                f"{self.address} closed the connection without an HTTP answer: this looks like "
                "an agent's gossip port; the admin API is on the agent's --admin address "
                f"(default {DEFAULT_AGENT})"
            )
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS: {exc}"
        elif isinstance(exc, socket.timeout | TimeoutError):
            reason = "timed out"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror.lower()
        else:
            reason = type(exc).__name__
        return (
            f"cannot reach the gossipmesh agent at {self.address} ({reason}); "
            "is `gossipmesh agent` running?"
        )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path(key: str) -> str:
    """``KIND/NAME`` as a URL path: the agent unquotes it, so any name survives the trip."""
    return quote(key, safe="/")
