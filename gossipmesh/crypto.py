"""The keyring: AES-256-GCM sealing of every packet and stream frame, with key rotation.

Theory of operation (after memberlist's ``keyring.go`` and ``security.go``):

- A ring holds one or more 32-byte keys. The first is the *primary*: it seals everything we send.
  Every installed key is tried when opening, so a cluster can rotate keys with no loss of
  membership: ``install`` the new key everywhere (everyone can now read it), ``use`` it everywhere
  (everyone now writes it; old-key packets still open), then ``remove`` the old one.
- A sealed message is ``version (1 byte) | nonce (12 bytes) | ciphertext+tag``. The nonce is random
  (96 bits; collision odds stay negligible for far more packets than a mesh sends per key).
- The caller passes associated data. The agent binds the cluster name there, so two clusters on
  one network that share a key (or have none) cannot read each other's packets and never merge.
- ``open`` never raises anything but ``DecodeError`` with a stable reason slug, so receive loops can
  count a bad packet and carry on.

Keys travel as standard base64 of exactly 32 bytes, the form ``gossipmesh keygen`` prints. A ring
file is a JSON list of such strings, primary first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossipmesh.errors import DecodeError, UsageError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_VERSION = 1
# Bytes a sealed message adds to its plaintext; the wire layer budgets packets with it.
SEAL_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
# A ring is a short list in practice (one key, two during a rotation); the cap bounds the work an
# undecryptable packet costs us (one failed AES-GCM open per key).
MAX_KEYS = 16


def generate_key() -> str:
    """A new random key in the text form the CLI prints and ``--encrypt`` accepts."""
    return encode_key(os.urandom(KEY_BYTES))


def encode_key(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise UsageError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse a base64 key; raise UsageError saying what is wrong with it."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError("key is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise UsageError(f"key must decode to {KEY_BYTES} bytes (AES-256), got {len(raw)}")
    return raw


KEY_ID_HEX = 16  # 64 bits: enough to tell a ring's keys apart, and says nothing about a key


def key_id(key: bytes) -> str:
    """A key's public name: a SHA-256 prefix (hex). What the admin API shows instead of a key;
    ``gossipmesh keys id KEY`` computes it from a key an operator holds."""
    return hashlib.sha256(b"gossipmesh key id/" + key).hexdigest()[:KEY_ID_HEX]


def cluster_key(cluster: str) -> bytes:
    """A key derived from the cluster name alone, used when no key was configured.

    It gives integrity and cluster separation, not secrecy: anyone who knows the cluster name can
    read and forge packets. The agent logs a warning when it runs this way.
    """
    return hashlib.sha256(b"gossipmesh-unencrypted-cluster:" + cluster.encode()).digest()


class Keyring:
    """An ordered set of AES-256-GCM keys; index 0 is the primary (the one that seals)."""

    __slots__ = ("_keys", "_aeads")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise UsageError("a keyring needs at least one key")
        self._keys: list[bytes] = []
        self._aeads: list[AESGCM] = []
        for key in keys:
            self._add(key)

    @classmethod
    def from_text(cls, keys: Iterable[str]) -> Keyring:
        return cls([decode_key(k) for k in keys])

    def _add(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise UsageError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
        if key in self._keys:
            return
        if len(self._keys) >= MAX_KEYS:
            raise UsageError(f"keyring is full ({MAX_KEYS} keys); remove one first")
        self._keys.append(key)
        self._aeads.append(AESGCM(key))

    # ---- inspection -------------------------------------------------------------------------

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def keys(self) -> list[bytes]:
        return list(self._keys)

    def keys_text(self) -> list[str]:
        return [encode_key(k) for k in self._keys]

    def key_ids(self) -> list[str]:
        """``key_id`` of every key, primary first: what may leave the agent."""
        return [key_id(k) for k in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    # ---- rotation (memberlist semantics) ----------------------------------------------------

    def install(self, key: bytes) -> None:
        """Add ``key`` as a secondary (decrypt-only) key; installing a present key is a no-op."""
        self._add(key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary."""
        if key not in self._keys:
            raise UsageError("key is not installed; install it first")
        i = self._keys.index(key)
        self._keys.insert(0, self._keys.pop(i))
        self._aeads.insert(0, self._aeads.pop(i))

    def remove(self, key: bytes) -> None:
        """Drop a secondary key. The primary cannot be removed (we would have nothing to seal with)."""
        if key not in self._keys:
            raise UsageError("key is not installed")
        if key == self._keys[0]:
            raise UsageError("cannot remove the primary key; use another key first")
        i = self._keys.index(key)
        del self._keys[i]
        del self._aeads[i]

    # ---- sealing ----------------------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes((SEAL_VERSION,)) + nonce + self._aeads[0].encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt with whichever installed key fits; ``DecodeError`` for anything else."""
        if len(sealed) < SEAL_OVERHEAD:
            raise DecodeError("truncated", f"sealed message of {len(sealed)} bytes")
        if sealed[0] != SEAL_VERSION:
            raise DecodeError("version", f"unknown seal version {sealed[0]}")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        body = sealed[1 + NONCE_BYTES :]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise DecodeError("decrypt", "no installed key opens this message")


# ---- the ring file ------------------------------------------------------------------------------


def load_keyring_file(path: Path) -> Keyring:
    """Read a JSON list of base64 keys (primary first). Errors name the file and the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read keyring file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"keyring file {path} is not valid JSON: {exc.msg}") from exc
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise UsageError(f"keyring file {path} must be a JSON list of base64 keys")
    try:
        return Keyring.from_text(data)
    except UsageError as exc:
        raise UsageError(f"keyring file {path}: {exc}") from exc


def save_keyring_file(path: Path, ring: Keyring) -> None:
    """Write the ring atomically (temp file + rename) and readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # a temp file left by a crash keeps its old mode
        json.dump(ring.keys_text(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
