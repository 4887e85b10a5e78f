"""Keyring: sealing, rotation semantics, the ring file, and garbage in -> only DecodeError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.crypto import (
    SEAL_OVERHEAD,
    Keyring,
    cluster_key,
    decode_key,
    encode_key,
    generate_key,
    load_keyring_file,
    save_keyring_file,
)
from gossipmesh.errors import DecodeError, UsageError

K1, K2, K3 = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))


def test_seal_open_round_trip_with_aad() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", b"cluster-a")
    assert len(sealed) == len(b"hello") + SEAL_OVERHEAD
    assert ring.open(sealed, b"cluster-a") == b"hello"


def test_different_cluster_name_does_not_open() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", b"cluster-a")
    with pytest.raises(DecodeError) as exc:
        ring.open(sealed, b"cluster-b")
    assert exc.value.reason == "decrypt"


def test_different_key_does_not_open() -> None:
    sealed = Keyring([K1]).seal(b"x")
    with pytest.raises(DecodeError, match="decrypt"):
        Keyring([K2]).open(sealed)


def test_secondary_keys_open_primary_seals() -> None:
    old = Keyring([K1])
    rotating = Keyring([K2, K1])
    assert rotating.open(old.seal(b"from-old")) == b"from-old"
    with pytest.raises(DecodeError):
        old.open(rotating.seal(b"from-new"))


def test_rotation_install_use_remove() -> None:
    ring = Keyring([K1])
    ring.install(K2)
    ring.install(K2)  # idempotent
    assert ring.keys() == [K1, K2]
    ring.use(K2)
    assert ring.primary == K2 and ring.keys() == [K2, K1]
    with pytest.raises(UsageError, match="primary"):
        ring.remove(K2)
    ring.remove(K1)
    assert ring.keys() == [K2]
    with pytest.raises(UsageError, match="not installed"):
        ring.use(K3)
    with pytest.raises(UsageError, match="not installed"):
        ring.remove(K3)


def test_key_text_forms() -> None:
    text = generate_key()
    assert len(decode_key(text)) == 32
    assert decode_key(encode_key(K1)) == K1
    with pytest.raises(UsageError, match="base64"):
        decode_key("not base64!!")
    with pytest.raises(UsageError, match="32 bytes"):
        decode_key(encode_key(K1)[:-8] + "====")


def test_cluster_key_differs_per_cluster() -> None:
    assert cluster_key("a") != cluster_key("b") and len(cluster_key("a")) == 32


def test_ring_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    save_keyring_file(path, Keyring([K2, K1]))
    assert json.loads(path.read_text()) == [encode_key(K2), encode_key(K1)]
    assert load_keyring_file(path).keys() == [K2, K1]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("{", "not valid JSON"),
        ('{"a": 1}', "JSON list"),
        ('["zz"]', "base64"),
    ],
)
def test_bad_ring_files(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "ring.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=match):
        load_keyring_file(path)


@given(st.binary(max_size=2048))
def test_random_bytes_only_decode_error(data: bytes) -> None:
    ring = Keyring([K1, K2])
    with pytest.raises(DecodeError):
        ring.open(data, b"c")


@given(st.binary(max_size=256), st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_bit_flip_is_rejected(plaintext: bytes, position: int, bit: int) -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.seal(plaintext, b"c"))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(DecodeError):
        ring.open(bytes(sealed), b"c")
