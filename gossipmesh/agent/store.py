"""What the agent keeps in its data directory, each in its own small file written atomically.

- ``incarnation``: the highest incarnation this node has used. A booting node starts above it, so
  a restarted node is never refuted into death by rumours about its previous life (a per-boot epoch).
- ``peers.json``: addresses of members last seen alive, so a restart rejoins without ``--join``.
- ``keyring.json``: the key ring when ``--encrypt`` created it (``--keyring FILE`` names another).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

MAX_SAVED_PEERS = 64


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create data dir {path}: {exc.strerror or exc}") from exc
        if not os.access(path, os.W_OK):
            raise UsageError(f"data dir {path} is not writable")

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
