"""The admin API's bearer token on disk, shared by the agent (which writes it) and its clients.

An agent keeps 32 random bytes, base64url without padding (43 characters), in
``DATA_DIR/admin.token`` (``TOKEN_FILE``), mode 0600 in a 0700 directory, so only the agent's own
user (and root) can read it. A client on the same host reads the file and sends
``Authorization: Bearer TOKEN``.

A client must not hand the agent's token to just anyone listening on the admin port: while the
agent is down, another local user could bind that port and wait for a CLI to send it the token.
So a client that found the token file on its own (rather than being given a token) sends it only
to a listener owned by the file's owner: ``listener_uid`` reads the owner of a loopback TCP
listener from ``/proc/net/tcp`` (Linux; elsewhere the check is skipped, see docs/SECURITY.md).

Standard library only: the client library imports this module.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
import stat
import sys
from pathlib import Path

from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

TOKEN_FILE = "admin.token"
TOKEN_BYTES = 32
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_TOKEN_FILE_BYTES = 256  # a token is 43 characters; anything much larger is not one
PRIVATE_BITS = 0o077  # group and other permission bits: a secret file has none of them

__all__ = [
    "TOKEN_FILE",
    "TokenFileError",
    "listener_uid",
    "new_token",
    "read_token_file",
    "write_token_file",
]


class TokenFileError(UsageError):
    """The token file is missing, unreadable, not private or does not hold a token (one line)."""


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically; the file is 0600 from its first byte on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
            os.write(fd, token.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise TokenFileError(f"cannot write admin token {path}: {exc.strerror or exc}") from exc


def read_token_file(path: Path, *, owner_uid: int | None = None) -> str:
    """The token in ``path``. Refused (``TokenFileError``) unless it is a regular file (not a
    symbolic link) with no group or other permissions, owned by ``owner_uid`` when given, holding
    exactly one token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TokenFileError(f"cannot read admin token {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"admin token {path} is not a regular file")
        if info.st_mode & PRIVATE_BITS:
            raise TokenFileError(
                f"admin token {path} is readable by other users (mode {info.st_mode & 0o777:o})"
            )
        if owner_uid is not None and info.st_uid != owner_uid:
            raise TokenFileError(
                f"admin token {path} belongs to uid {info.st_uid}, but the agent listening "
                f"there runs as uid {owner_uid}"
            )
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenFileError(f"cannot read admin token {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    token = data.decode("ascii", "replace").strip()
    if len(data) > MAX_TOKEN_FILE_BYTES or not TOKEN_RE.match(token):
        raise TokenFileError(f"admin token {path} does not hold a token")
    return token


def listener_uid(address: Address) -> int | None:
    """The uid owning the TCP socket listening on ``address`` (loopback only), from
    ``/proc/net/tcp[6]``; None when it cannot be told (not Linux, not loopback, not found)."""
    try:
        ip = ipaddress.ip_address("127.0.0.1" if address.host == "localhost" else address.host)
    except ValueError:
        return None
    if not ip.is_loopback:
        return None
    table = "/proc/net/tcp" if ip.version == 4 else "/proc/net/tcp6"
    want = {_proc_hex(ip, address.port), _proc_hex(_any(ip.version), address.port)}
    wanted = {w.encode() for w in want}
    try:
        with open(table, "rb") as f:
            next(f, None)  # the header line
            for line in f:
                fields = line.split()
                # sl local_address rem_address st ... uid: state 0A is LISTEN
                if len(fields) > 7 and fields[3] == b"0A" and fields[1] in wanted:
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None


def _any(version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address("0.0.0.0" if version == 4 else "::")


def _proc_hex(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    # /proc/net/tcp prints each 32-bit word of the address in host byte order.
    raw = ip.packed
    step = -1 if sys.byteorder == "little" else 1
    words = [raw[i : i + 4][::step] for i in range(0, len(raw), 4)]
    return b"".join(words).hex().upper() + f":{port:04X}"
