"""Field validators shared by the packet codec (``messages.py``) and the push-pull codec
(``state_codec.py``): every field from the network is checked for type and range here, and
anything wrong raises ``DecodeError("bad_field", ...)`` and nothing else.

Integers the core does arithmetic on (incarnations, sequence numbers) are capped at
``MAX_COUNTER`` (2**62) so ``incarnation + 1`` can never overflow msgpack's 64-bit encoding.
``bool`` is a subclass of ``int`` in Python; a hostile ``True`` must never pass as ``1``, so the
checks compare exact types. ``plainly_valid`` is the cheap, allocation-free check the hot paths
run first; a member that fails it goes through the exact validators for a precise error.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gossipmesh.errors import DecodeError
from gossipmesh.ids import MAX_NODE_NAME_BYTES, Address
from gossipmesh.swim.member import MAX_META_BYTES

MAX_COUNTER = 1 << 62
MAX_HOST_BYTES = 255
SIGNATURE_BYTES = 64  # raw ECDSA P-256 r || s
# A node certificate is ~450 bytes (633 with a 128-byte name); an alive claim must fit a packet.
MAX_MEMBER_CERT_BYTES = 1024
CERT_REF_BYTES = 32  # a reference to a certificate (no DER certificate is this short)

# Strings this short (in characters) are within the byte limits whatever their encoding (a code
# point is at most 4 UTF-8 bytes), so the fast paths need not encode them to check.
FAST_NAME_CHARS = MAX_NODE_NAME_BYTES // 4
FAST_HOST_CHARS = MAX_HOST_BYTES // 4


def int_field(v: Any, what: str, lo: int = 0, hi: int = MAX_COUNTER) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    return v


def opt_int_field(v: Any, what: str) -> int | None:
    return None if v is None else int_field(v, what)


def str_field(v: Any, what: str, max_bytes: int, min_len: int = 1) -> str:
    if type(v) is not str or not min_len <= (n := len(v)) <= max_bytes:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    # len() counts characters; only long-ish strings can exceed the byte limit when encoded.
    if n * 4 > max_bytes and len(v.encode("utf-8", "surrogatepass")) > max_bytes:
        raise DecodeError("bad_field", f"{what}: too long")
    return v


def name_field(v: Any, what: str = "name") -> str:
    return str_field(v, what, MAX_NODE_NAME_BYTES)


def bytes_field(v: Any, what: str, max_bytes: int) -> bytes:
    if type(v) is not bytes or len(v) > max_bytes:
        raise DecodeError("bad_field", f"{what}: {type(v).__name__}")
    return v


def bool_field(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise DecodeError("bad_field", f"{what}: {v!r:.40}")
    return v


def address_field(host: Any, port: Any) -> Address:
    return Address(str_field(host, "host", MAX_HOST_BYTES), int_field(port, "port", 0, 65535))


def signature_field(v: Any, what: str) -> bytes:
    if type(v) is not bytes or len(v) != SIGNATURE_BYTES:
        raise DecodeError("bad_field", f"{what}: not a {SIGNATURE_BYTES}-byte signature")
    return v


def cert_field(v: Any, refs: bool = False) -> bytes:
    """A certificate (DER), or with ``refs`` also a ``CERT_REF_BYTES`` reference to one."""
    lo = CERT_REF_BYTES if refs else CERT_REF_BYTES + 1
    if type(v) is not bytes or not lo <= len(v) <= MAX_MEMBER_CERT_BYTES:
        raise DecodeError("bad_field", "cert")
    return v


def cert_ref(cert: bytes) -> bytes:
    """The reference an ``Alive`` may carry instead of the certificate ``cert``."""
    return hashlib.sha256(cert).digest()


def is_cert_ref(cert: bytes) -> bool:
    return len(cert) == CERT_REF_BYTES


def plainly_valid(name: object, inc: object, host: object, port: object, meta: object) -> bool:
    """The cheap check shared by every member-carrying decoder: a member that passes it is
    certainly valid; one that fails goes through the full, exact validation."""
    return (
        type(name) is str
        and 0 < len(name) <= FAST_NAME_CHARS
        and type(inc) is int
        and 0 <= inc <= MAX_COUNTER
        and type(host) is str
        and 0 < len(host) <= FAST_HOST_CHARS
        and type(port) is int
        and 0 <= port <= 65535
        and type(meta) is bytes
        and len(meta) <= MAX_META_BYTES
    )
