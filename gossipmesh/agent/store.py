"""What the agent keeps in its data directory, each in its own small file written atomically.

- ``incarnation``: the highest incarnation this node has used. A booting node starts above it, so
  a restarted node is never refuted into death by rumours about its previous life (a per-boot epoch).
- ``peers.json``: addresses of members last seen alive, so a restart rejoins without ``--join``.
- ``keyring.json``: the key ring when a key option created it (``--keyring FILE`` names another).
- ``admin.token`` (agent/admin_auth.py), ``replica.db`` (gossipmesh/store.py) and the rest.

The directory holds secrets (keys, the admin token) and the config, so it is 0700 and every file
in it 0600: ``secure_data_dir`` creates it so, and tightens an existing one (and the files already
in it) with one warning line. The agent process also runs with umask 077 (agent/main.py), so
files other code creates there (SQLite's -wal and -shm) are private from their first byte.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gossipmesh.agent.log import EventLog
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

MAX_SAVED_PEERS = 64
DIR_MODE, FILE_MODE = 0o700, 0o600


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), FILE_MODE)  # a temp file left by a crash keeps its old mode
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def secure_data_dir(path: Path, log: EventLog) -> None:
    """Create ``path`` 0700, or make an existing one 0700 and its files 0600, saying so once.
    Raises ``UsageError`` (one line) when it cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        mode = stat.S_IMODE(path.stat().st_mode)
        loose = []
        if mode != DIR_MODE:
            os.chmod(path, DIR_MODE)
            loose.append(f"{path} was {mode:o}")
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False):
                file_mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if file_mode & 0o077:
                    os.chmod(entry.path, file_mode & FILE_MODE)
                    loose.append(f"{entry.name} was {file_mode:o}")
    except OSError as exc:
        raise UsageError(f"cannot secure data dir {path}: {exc.strerror or exc}") from exc
    if loose:
        log.warn("data_dir_tightened", path=str(path), changed=loose,
                 detail="the data dir holds keys and the admin token: now 0700, files 0600")  # fmt: skip
    if not os.access(path, os.W_OK):
        raise UsageError(f"data dir {path} is not writable")


class DataDir:
    def __init__(self, path: Path, log: EventLog | None = None) -> None:
        self.path = path
        secure_data_dir(path, log if log is not None else EventLog(level="warn"))

    @property
    def keyring_path(self) -> Path:
        return self.path / "keyring.json"

    def boot_incarnation(self) -> int:
        """Read the last incarnation, persist the next one, and return it."""
        path = self.path / "incarnation"
        last = 0
        try:
            last = int(path.read_text().strip() or "0")
        except (OSError, ValueError):
            last = 0
        incarnation = last + 1
        self.save_incarnation(incarnation)
        return incarnation

    def save_incarnation(self, incarnation: int) -> None:
        write_atomic(self.path / "incarnation", f"{incarnation}\n")

    def load_peers(self) -> list[Address]:
        try:
            data = json.loads((self.path / "peers.json").read_text())
        except (OSError, ValueError):
            return []
        peers = []
        if isinstance(data, list):
            for item in data[:MAX_SAVED_PEERS]:
                try:
                    peers.append(Address.parse(str(item)))
                except UsageError:
                    continue
        return peers

    def save_peers(self, peers: list[Address]) -> None:
        text = json.dumps([str(p) for p in sorted(set(peers))[:MAX_SAVED_PEERS]])
        write_atomic(self.path / "peers.json", text + "\n")
