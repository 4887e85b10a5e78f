"""Where the agent's gossip key comes from, and which source wins.

Sources of a key, in the order they are looked at:

1. ``--encrypt KEY`` (or TOML ``encrypt``). On a command line the key is visible to every local
   user in ``/proc/PID/cmdline`` and ``ps``: it still works, with a warning. In a TOML file it is
   as private as the file: a warning when the file is readable by group or others.
2. ``--encrypt-file FILE`` (TOML ``encrypt_file``): the key is the file's content (what
   ``gossipmesh keygen > FILE`` writes); a warning when FILE is readable by group or others.
3. ``$GOSSIPMESH_ENCRYPT``: the environment of a process is readable only by its own user.

and the keyring: ``--keyring FILE``, else ``DATA_DIR/keyring.json`` once a key created it.

**A keyring on disk wins.** It is what ``gossipmesh keys install/use/remove`` maintain, so it holds
the rotated truth; a key given by a source above is the key the ring was born from and may be long
retired. Installing it again on restart (as the agent once did) silently re-armed a removed key.
So when a ring exists, a given key that is not its primary is ignored, with one warning line. A
given key is only used to create the ring (saved to ``DATA_DIR/keyring.json``).

Without any key the agent may run only as a loopback playground (``build_identity``): packets are
sealed with a key derived from the cluster name, which keeps clusters apart and nothing secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gossipmesh.agent.log import EventLog
from gossipmesh.agent.settings import AgentSettings
from gossipmesh.crypto import Keyring, cluster_key, decode_key, load_keyring_file, save_keyring_file
from gossipmesh.errors import UsageError

ENV_KEY = "GOSSIPMESH_ENCRYPT"
MAX_KEY_FILE_BYTES = 4096


def build_keyring(settings: AgentSettings, log: EventLog) -> tuple[Keyring, Path | None, bool]:
    """The ring, the file that persists it (None: nothing to persist), and whether a real key was
    given (False: the playground's key derived from the cluster name)."""
    given, source = given_key(settings, log)
    path = settings.keyring
    if path is None and settings.data_dir is not None:
        path = settings.data_dir / "keyring.json"
    if settings.keyring is not None or (path is not None and path.exists()):
        assert path is not None
        ring = load_keyring_file(path)
        if given is not None and given != ring.primary:
            log.warn("keyring_wins", keyring=str(path), ignored=source,
                     detail=f"the keyring on disk wins; the key from {source} is not its primary "
                     "and is not installed (rotate with `gossipmesh keys`, then drop the stale "
                     "key option)")  # fmt: skip
        return ring, path, True
    if given is not None:
        ring = Keyring([given])
        if path is not None:
            save_keyring_file(path, ring)
        return ring, path, True
    return Keyring([cluster_key(settings.cluster)]), None, False


def given_key(settings: AgentSettings, log: EventLog) -> tuple[bytes | None, str]:
    """The key given by flag, file or environment (None: none) and a name for its source."""
    if settings.encrypt is not None:
        origin = settings.encrypt_origin or "flag"
        if origin == "flag":
            log.warn("key_on_command_line",
                     detail="--encrypt KEY is visible to every local user in /proc/PID/cmdline; "
                     f"use --encrypt-file FILE or ${ENV_KEY} instead")  # fmt: skip
            return decode_key(settings.encrypt), "--encrypt"
        config = Path(origin.removeprefix("config "))
        _warn_if_shared(config, "config file holding encrypt", log)
        return decode_key(settings.encrypt), f"encrypt in {config}"
    if settings.encrypt_file is not None:
        return read_key_file(settings.encrypt_file, log), f"--encrypt-file {settings.encrypt_file}"
    text = os.environ.get(ENV_KEY)
    if text:
        try:
            return decode_key(text), f"${ENV_KEY}"
        except UsageError as exc:
            raise UsageError(f"${ENV_KEY}: {exc}") from exc
    return None, ""


def read_key_file(path: Path, log: EventLog) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UsageError(f"key file {path} is too large to hold one key")
    try:
        key = decode_key(data.decode("ascii", "replace"))
    except UsageError as exc:
        raise UsageError(f"key file {path}: {exc}") from exc
    _warn_if_shared(path, "key file", log)
    return key


def _warn_if_shared(path: Path, what: str, log: EventLog) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o044:
        log.warn("key_file_readable", path=str(path), mode=f"{mode:o}",
                 detail=f"the {what} is readable by other users; chmod 600 it")  # fmt: skip


__all__ = ["ENV_KEY", "build_keyring", "given_key", "read_key_file"]
