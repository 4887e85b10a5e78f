"""Who may change this agent through its admin API: the holder of its bearer token.

Theory of operation
-------------------
The admin API listens on loopback by default, where every local user can connect; the token is
what tells the agent's operator from any other local user. At start the agent keeps 32 random
bytes (``gossipmesh.admin_token``) in ``DATA_DIR/admin.token`` (0600; created at first start and
kept across restarts, so scripts and a CLI configured once keep working). Without a data dir it
writes a fresh token to ``admin.token`` in a private (0700) temporary directory, logs that path
once and removes the directory when it stops.

Which requests need it (``needs_token``):

- on a loopback admin address: every request that is not a GET (config writes, join, leave, keys,
  faults, and whatever routes later parts add), plus ``GET /v1/keys`` and the ``/v1/monitor``
  stream. Reads of members, self, health, services, config and metrics stay open: any local user
  can see them with ``ss`` and ``ps`` anyway, and monitoring needs no secret.
- on a non-loopback (TLS) address: every request, reads included. From the network, topology,
  config and counters are information an attacker should not get for free.
- never: ``GET`` of the dashboard's static files (``/ui/``, agent/dashboard.py). They are the
  package's own HTML, JS and CSS, the same for every agent, and hold no data; the page then calls
  the API with the token the operator gives it, under the rules above.

A request that needs the token and lacks it (or carries a wrong one) is answered 401 with the
API's one-line JSON error, counted as ``admin.unauthorized`` (``/v1/health`` and ``/metrics``),
and never reaches its handler, so it changes nothing. Tokens are compared with
``hmac.compare_digest`` (time independent of where they differ).

``GET /v1/self`` names the token file (``admin_token_file``): a CLI on the same host reads it from
there, after checking that the file and the listener belong to the same user (docs/SECURITY.md).
"""

from __future__ import annotations

import hmac
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from gossipmesh.admin_token import (
    TOKEN_FILE,
    TokenFileError,
    new_token,
    read_token_file,
    write_token_file,
)
from gossipmesh.agent.http import HTTPError, Request
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.node_identity import is_loopback
from gossipmesh.ids import Address

# Reads that hand out something an operator-only caller may see (key ids, the live event stream).
PRIVATE_READS = frozenset({"/v1/keys", "/v1/monitor", "/v1/tap"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
STATIC_PREFIX = "/ui/"  # the dashboard's static files: the package's own, no data
UNAUTHORIZED_DETAIL = (
    "this request needs 'Authorization: Bearer TOKEN' with the agent's admin token "
    f"(DATA_DIR/{TOKEN_FILE} on its host; the CLI reads it itself, or give --token-file FILE "
    "or GOSSIPMESH_TOKEN)"
)


class AdminAuth:
    """The agent's admin token: its file, and the check every admin request passes first."""

    def __init__(
        self, admin: Address, data_dir: Path | None, counters: Counter[str], log: EventLog
    ) -> None:
        self.loopback = is_loopback(admin)
        self._data_dir = data_dir
        self._counters = counters
        self._log = log
        self._token = b""
        self._temp_dir: Path | None = None
        self.token_file: Path | None = None

    @property
    def token(self) -> str:
        """The token (for in-process callers such as tests); empty before ``start``."""
        return self._token.decode()

    def start(self) -> None:
        """Load or create the token file. Raises ``TokenFileError`` (one line) when it cannot be
        written."""
        if self._data_dir is not None:
            path = self._data_dir / TOKEN_FILE
            try:
                token = read_token_file(path)
            except TokenFileError as exc:
                if path.exists() or path.is_symlink():
                    self._log.warn("admin_token_replaced", path=str(path), reason=str(exc))
                token = new_token()
                write_token_file(path, token)
        else:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="gossipmesh-admin-"))  # 0700
            path = self._temp_dir / TOKEN_FILE
            token = new_token()
            write_token_file(path, token)
            self._log.warn("admin_token_temporary", path=str(path),
                           detail="no --data-dir: the admin token lives in this file until the "
                           "agent stops")  # fmt: skip
        self.token_file = path
        self._token = token.encode()

    def close(self) -> None:
        """Remove a temporary token directory (a data dir's token is kept)."""
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def needs_token(self, method: str, path: str) -> bool:
        if method in SAFE_METHODS and (path == "/ui" or path.startswith(STATIC_PREFIX)):
            return False
        if not self.loopback:
            return True
        return method not in SAFE_METHODS or path in PRIVATE_READS

    def authorize(self, request: Request) -> None:
        """Raise the 401 ``HTTPError`` (and count it) unless ``request`` may proceed."""
        if not self.needs_token(request.method, request.path):
            return
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        ok = (
            bool(self._token)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode("latin-1"), self._token)
        )
        if not ok:
            self._counters["admin.unauthorized"] += 1
            raise HTTPError(401, "unauthorized", UNAUTHORIZED_DETAIL)

    def tls_failed(self) -> None:
        self._counters["admin.tls_handshake_failed"] += 1


__all__ = ["PRIVATE_READS", "AdminAuth"]
