"""Node identity: the Ed25519 key pair that signs a node's own records.

The crdt core takes ``sign``/``verify`` callables so it never imports cryptography; this module is
where they come from. Pure: key bytes in, callables out. The agent reads and writes the key file
(``private_bytes()`` is the raw 32-byte seed; keep it mode 0600) and learns peers' public keys
from wherever the deployment distributes them (member metadata, a keys directory) and calls
``TrustedKeys.add``.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from gossipmesh.crdt.records import VerifyOutcome
from gossipmesh.errors import UsageError

KEY_BYTES = 32


class NodeIdentity:
    """A node's signing key."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> NodeIdentity:
        if len(data) != KEY_BYTES:
            raise UsageError(f"node key must be {KEY_BYTES} bytes, got {len(data)}")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class TrustedKeys:
    """owner name → Ed25519 public key; ``verify`` is the callable ``RecordTable`` takes."""

    def __init__(self, keys: Mapping[str, bytes] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for owner, key in (keys or {}).items():
            self.add(owner, key)

    def add(self, owner: str, public_key: bytes) -> None:
        if len(public_key) != KEY_BYTES:
            raise UsageError(f"{owner}: public key must be {KEY_BYTES} bytes")
        self._keys[owner] = Ed25519PublicKey.from_public_bytes(public_key)

    def remove(self, owner: str) -> None:
        self._keys.pop(owner, None)

    def __contains__(self, owner: object) -> bool:
        return owner in self._keys

    def verify(self, owner: str, data: bytes, signature: bytes) -> VerifyOutcome:
        key = self._keys.get(owner)
        if key is None:
            return "unknown_owner"
        try:
            key.verify(signature, data)
        except (InvalidSignature, ValueError):
            return "bad_signature"
        return "ok"
