"""Signatures: canonical bytes, raw r||s, and a verifier that never raises on hostile input."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gossipmesh.identity import (
    SIGNATURE_BYTES,
    Signer,
    canonical,
    load_public_key,
    verify_signature,
)
from gossipmesh.identity.signing import ORDER, PUBLIC_KEY_BYTES

ALIVE = b"gossipmesh/alive/v1"


def test_canonical_bytes_are_exactly_these() -> None:
    # Every replica must reproduce these bytes; a change here breaks every stored signature.
    data = canonical(
        ALIVE, "prod", "web-1", 7, b"\x01\x02", None, True, False, [1, "x", []], (2**63, -1)
    )
    assert data.hex() == (
        "9a"  # array of 10
        "c413676f737369706d6573682f616c6976652f7631"  # bin8 domain
        "a470726f64"  # "prod"
        "a57765622d31"  # "web-1"
        "07"  # 7
        "c4020102"  # bin8 b"\x01\x02"
        "c0c3c2"  # None, True, False
        "9301a17890"  # [1, "x", []]
        "92cf8000000000000000ff"  # (2**63, -1): a tuple encodes as a list
    )


def test_canonical_keeps_bool_and_int_apart() -> None:
    assert canonical(ALIVE, "c", True) != canonical(ALIVE, "c", 1)
    assert canonical(ALIVE, "c", b"x") != canonical(ALIVE, "c", "x")


def test_domain_and_cluster_separate_statements() -> None:
    assert canonical(ALIVE, "a", 1) != canonical(b"gossipmesh/accuse/v1", "a", 1)
    assert canonical(ALIVE, "a", 1) != canonical(ALIVE, "b", 1)


@pytest.mark.parametrize(
    "field", [1.5, {"a": 1}, [{"a": 1}], bytearray(b"x"), memoryview(b"x"), object(), {1, 2}]
)
def test_canonical_refuses_values_without_one_encoding(field: object) -> None:
    with pytest.raises(TypeError):
        canonical(ALIVE, "c", field)


@pytest.mark.parametrize("field", [2**64, -(2**63) - 1, "\ud800", [[[[[[[[[1]]]]]]]]]])
def test_canonical_refuses_unencodable_values(field: object) -> None:
    with pytest.raises(ValueError):
        canonical(ALIVE, "c", field)


def test_canonical_checks_domain_and_cluster_types() -> None:
    with pytest.raises(TypeError):
        canonical("alive", "c")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        canonical(b"", "c")
    with pytest.raises(TypeError):
        canonical(ALIVE, b"c")  # type: ignore[arg-type]


def test_sign_and_verify() -> None:
    signer = Signer.generate()
    data = canonical(ALIVE, "c", "n1", 3)
    sig = signer.sign(data)
    assert len(sig) == SIGNATURE_BYTES
    assert verify_signature(signer.public_key, data, sig)
    assert verify_signature(signer.public_key_bytes, data, sig)
    assert len(signer.public_key_bytes) == PUBLIC_KEY_BYTES
    assert not verify_signature(signer.public_key, data + b"x", sig)
    assert not verify_signature(Signer.generate().public_key, data, sig)
    assert "PRIVATE" not in repr(signer) and str(signer.private_key) not in repr(signer)


def test_public_key_bytes_round_trip() -> None:
    signer = Signer.generate()
    key = load_public_key(signer.public_key_bytes)
    assert key is not None and key.public_numbers() == signer.public_key.public_numbers()


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00" * 63,
        b"\x00" * 65,
        b"\x00" * 64,  # r = s = 0
        b"\xff" * 64,  # r, s >= n
        b"\x01" * 32 + ORDER.to_bytes(32, "big"),  # s = n
        "x" * 64,
        None,
    ],
)
def test_hostile_signatures_are_false_not_errors(bad: object) -> None:
    signer = Signer.generate()
    assert verify_signature(signer.public_key, b"data", bad) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"\x04" + b"\x00" * 64,
        b"\x02" + b"\x11" * 32,
        b"\x04" + b"\xff" * 64,
        b"junk" * 20,
        None,
        7,
    ],
)
def test_hostile_keys_are_false_not_errors(key: object) -> None:
    signer = Signer.generate()
    sig = signer.sign(b"data")
    assert verify_signature(key, b"data", sig) is False  # type: ignore[arg-type]
    if isinstance(key, bytes):
        assert load_public_key(key) is None


def test_wrong_curve_and_data_type_are_false() -> None:
    signer = Signer.generate()
    sig = signer.sign(b"data")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert verify_signature(p384, b"data", sig) is False
    assert verify_signature(signer.public_key, "data", sig) is False  # type: ignore[arg-type]


def test_signer_accepts_only_p256() -> None:
    from gossipmesh.errors import UsageError

    with pytest.raises(UsageError):
        Signer(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(UsageError):
        Signer(ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]
