"""Where a node's Ed25519 signing key lives: ``DATA_DIR/node.key``, created on first boot.

The key signs the node's own service record (``gossipmesh.crdt.records``); its public half travels
in the node's SWIM metadata so every peer can verify that record. Keeping the key across restarts
means peers never see an owner's key change under them unless the data dir was lost. Without a
data dir the key is generated in memory for this run only: peers learn the new public key from
the new metadata, which carries a higher incarnation, so a restart still works, it just does not
keep its identity.

The file holds the raw 32-byte seed, written atomically (temp file, fsync, rename) with mode 0600
so a crash mid-write never leaves a truncated key and other users cannot read it. A file of the
wrong size is refused rather than replaced: silently minting a new identity would hide a damaged
data dir.
"""

from __future__ import annotations

import os
from pathlib import Path

from gossipmesh.config.identity import KEY_BYTES, NodeIdentity
from gossipmesh.errors import UsageError

KEY_FILE = "node.key"


def load_or_create_identity(data_dir: Path | None) -> NodeIdentity:
    """The node's identity from ``data_dir/node.key``; generated (and saved) when absent."""
    if data_dir is None:
        return NodeIdentity.generate()
    path = data_dir / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        identity = NodeIdentity.generate()
        _write_private(path, identity.private_bytes())
        return identity
    except OSError as exc:
        raise UsageError(f"cannot read node key {path}: {exc.strerror or exc}") from exc
    if len(data) != KEY_BYTES:
        raise UsageError(
            f"node key {path} is {len(data)} bytes, expected {KEY_BYTES}; "
            "restore it or delete it to give this node a new identity"
        )
    return NodeIdentity.from_private_bytes(data)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write node key {path}: {exc.strerror or exc}") from exc
