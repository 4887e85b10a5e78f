"""Signatures: ECDSA P-256 with SHA-256 over canonical bytes, carried as raw 64-byte ``r || s``.

Theory of operation
-------------------
One algorithm everywhere (DESIGN-11 D1): root, node, operator and workload keys are P-256, the
only curve that both cryptography's X.509 verifier and every TLS stack accept, and its verify is
the cheaper of the two candidates on this machine (see BENCHMARKS.md).

*What is signed* is always ``canonical(domain, cluster, *fields)``: the msgpack encoding of the
list ``[domain, cluster, field, ...]``. Two rules make the bytes reproducible by every replica:
only ints, str, bytes, bools, None and lists/tuples are allowed (no maps, whose order is a choice,
and no floats, whose encoding is), and msgpack always picks the shortest form of each value. The
``domain`` (e.g. ``b"gossipmesh/alive/v1"``) separates uses, so a signature made for one kind of
statement can never be replayed as another; the ``cluster`` keeps two clusters apart.

*On the wire* a signature is the 32-byte big-endian ``r`` followed by the 32-byte ``s``: fixed
size, one encoding per (r, s). ``verify_signature`` never raises on hostile input: a wrong length,
a zero or out-of-range scalar, junk key bytes all come back as ``False``. (ECDSA signatures are
malleable, ``(r, s)`` and ``(r, n - s)`` both verify; nothing here uses a signature as an
identifier, so that is harmless. Certificates are identified by their to-be-signed part for the
same reason: see ``certs.fingerprint``.)

ECDSA signing is randomised, so the same message signed twice gives different bytes; verifiers
must not compare signatures.
"""

from __future__ import annotations

from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gossipmesh.errors import UsageError

SIGNATURE_BYTES = 64
SCALAR_BYTES = 32
PUBLIC_KEY_BYTES = 65  # SEC1 uncompressed point: 0x04 || X || Y
CURVE = ec.SECP256R1()
# The order of the P-256 group; signature scalars and private keys live in [1, ORDER).
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
MAX_CANONICAL_DEPTH = 8
_ECDSA = ec.ECDSA(hashes.SHA256())
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack can encode

PublicKey = ec.EllipticCurvePublicKey


def canonical(domain: bytes, cluster: str, *fields: Any) -> bytes:
    """The exact bytes to sign for a statement of kind ``domain`` in cluster ``cluster``.

    Raises TypeError for a value of a type that has no canonical form (float, dict, bytearray,
    objects) and ValueError for an int msgpack cannot encode or text that is not valid Unicode:
    both are the caller's bug, never a peer's, so they surface.
    """
    if type(domain) is not bytes or not domain:
        raise TypeError("canonical: domain must be non-empty bytes")
    if type(cluster) is not str:
        raise TypeError("canonical: cluster must be str")
    for field in fields:
        _check(field, 1)
    try:
        return msgpack.packb([domain, cluster, *fields], use_bin_type=True)
    except UnicodeEncodeError as exc:
        raise ValueError(f"canonical: text is not valid Unicode: {exc}") from None


def _check(value: Any, depth: int) -> None:
    kind = type(value)
    if value is None or kind is bool or kind is bytes:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"canonical: int {value} out of the msgpack range")
        return
    if kind is str:
        return
    if kind is list or kind is tuple:
        if depth >= MAX_CANONICAL_DEPTH:
            raise ValueError(f"canonical: nested deeper than {MAX_CANONICAL_DEPTH}")
        for item in value:
            _check(item, depth + 1)
        return
    raise TypeError(f"canonical: {kind.__name__} has no canonical encoding")


class Signer:
    """A P-256 private key that signs canonical bytes. Holds the key; never prints it."""

    __slots__ = ("private_key", "public_key", "public_key_bytes")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise UsageError("a signing key must be an ECDSA P-256 private key")
        self.private_key = private_key
        self.public_key: PublicKey = private_key.public_key()
        self.public_key_bytes = public_key_bytes(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(ec.generate_private_key(CURVE))

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte ``r || s`` ECDSA-SHA256 signature of ``data``."""
        r, s = decode_dss_signature(self.private_key.sign(data, _ECDSA))
        return r.to_bytes(SCALAR_BYTES, "big") + s.to_bytes(SCALAR_BYTES, "big")

    def __repr__(self) -> str:
        return f"Signer(public_key={self.public_key_bytes[1:9].hex()}...)"


def public_key_bytes(key: PublicKey) -> bytes:
    """The 65-byte uncompressed SEC1 encoding of a P-256 public key."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_public_key(data: bytes) -> PublicKey | None:
    """A P-256 public key from its 65-byte SEC1 encoding, or None if the bytes are not one."""
    if type(data) is not bytes or len(data) != PUBLIC_KEY_BYTES or data[0] != 4:
        return None
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, data)
    except ValueError:
        return None


def verify_signature(public_key: PublicKey | bytes, data: bytes, signature: bytes) -> bool:
    """True iff ``signature`` (raw ``r || s``) is a valid signature of ``data`` by the key.

    ``public_key`` is a key object or its 65-byte SEC1 encoding. Never raises on hostile input.
    """
    if isinstance(public_key, bytes):
        loaded = load_public_key(public_key)
        if loaded is None:
            return False
        public_key = loaded
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or not isinstance(public_key.curve, ec.SECP256R1)
        or type(data) is not bytes
        or type(signature) is not bytes
        or len(signature) != SIGNATURE_BYTES
    ):
        return False
    r = int.from_bytes(signature[:SCALAR_BYTES], "big")
    s = int.from_bytes(signature[SCALAR_BYTES:], "big")
    if not (0 < r < ORDER and 0 < s < ORDER):
        return False
    try:
        public_key.verify(encode_dss_signature(r, s), data, _ECDSA)
    except InvalidSignature:
        return False
    return True
