"""Credentials on disk: modes, atomic writes, and loaders whose refusals say how to fix them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pki_helpers import make_ca, make_node, make_operator

from gossipmesh.identity import (
    CredentialError,
    NodeCredentials,
    OperatorCredentials,
    load_ca,
    load_certificates,
    load_node,
    load_operator,
    save_ca,
    save_node,
    save_operator,
    write_atomic,
)
from gossipmesh.identity.files import certificate_pem, load_signer, private_key_pem


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ca_dir_round_trip_with_modes(tmp_path: Path) -> None:
    ca = make_ca()
    d = tmp_path / "ca"
    save_ca(d, ca)
    assert mode(d) == 0o700
    assert mode(d / "root.key") == 0o600
    assert mode(d / "root.crt") == 0o644
    assert (d / "root.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    loaded = load_ca(d)
    assert loaded.cert_der == ca.cert_der and loaded.trust_domain == "test"
    assert loaded.signer.public_key_bytes == ca.signer.public_key_bytes
    assert [p.name for p in d.iterdir() if p.name.endswith(".tmp")] == []


def test_directories_are_0700_only_when_created(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        made = tmp_path / "a" / "b"
        save_node(made, make_node(make_ca()))
    finally:
        os.umask(old_umask)
    assert mode(made) == 0o700 and mode(tmp_path / "a") == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    save_node(existing, make_node(make_ca()))
    assert mode(existing) == 0o755  # the operator's own directory is left as they made it
    assert mode(existing / "node.key") == 0o600


def test_ca_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first, second = make_ca(), make_ca()
    save_ca(tmp_path, first)
    with pytest.raises(CredentialError, match="already exists.*--force"):
        save_ca(tmp_path, second)
    assert load_ca(tmp_path).cert_der == first.cert_der  # nothing changed
    save_ca(tmp_path, second, force=True)
    assert load_ca(tmp_path).cert_der == second.cert_der


def test_node_dir_round_trip_with_two_roots(tmp_path: Path) -> None:
    old, new = make_ca(), make_ca()
    node = make_node(new, "web-1")
    node = NodeCredentials.from_parts(node.signer, node.cert_der, (new.cert_der, old.cert_der))
    save_node(tmp_path, node)
    assert mode(tmp_path / "node.key") == 0o600
    loaded = load_node(tmp_path)
    assert (loaded.name, loaded.cluster) == ("web-1", "test")
    assert loaded.roots == (new.cert_der, old.cert_der)
    assert loaded.cert_der == node.cert_der
    assert str(loaded.spiffe_id) == "spiffe://test/node/web-1"


def test_operator_file_round_trip(tmp_path: Path) -> None:
    ca = make_ca()
    op = make_operator(ca, "alice")
    path = tmp_path / "keys" / "alice.pem"
    save_operator(path, op)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    text = path.read_bytes()
    assert text.index(b"PRIVATE KEY") < text.index(b"CERTIFICATE")
    loaded = load_operator(path)
    assert (loaded.name, loaded.cluster, loaded.roots) == ("alice", "test", (ca.cert_der,))
    assert loaded.signer.public_key_bytes == op.signer.public_key_bytes
    with pytest.raises(CredentialError, match="already exists"):
        save_operator(path, op)


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o007])
def test_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, bad_mode: int) -> None:
    save_ca(tmp_path, make_ca())
    key = tmp_path / "root.key"
    os.chmod(key, bad_mode)
    with pytest.raises(CredentialError) as exc:
        load_ca(tmp_path)
    message = str(exc.value)
    assert f"chmod 600 {key}" in message and "\n" not in message
    assert f"{bad_mode:04o}" in message


def test_operator_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "op.pem"
    save_operator(path, make_operator(make_ca()))
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError, match=f"chmod 600 {path}"):
        load_operator(path)


def test_missing_files_name_their_path(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=str(tmp_path / "root.key")):
        load_ca(tmp_path)
    save_node(tmp_path / "n", make_node(make_ca()))
    (tmp_path / "n" / "roots.pem").unlink()
    with pytest.raises(CredentialError, match=f"{tmp_path / 'n' / 'roots.pem'}: no such file"):
        load_node(tmp_path / "n")
    with pytest.raises(CredentialError, match="no such file"):
        load_operator(tmp_path / "nope.pem")


def _write_key(path: Path, key: object) -> None:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(path, pem, 0o600)


def test_wrong_kind_of_key_says_so(tmp_path: Path) -> None:
    key = tmp_path / "k"
    _write_key(key, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CredentialError, match="Ed25519, expected ECDSA P-256"):
        load_signer(key)
    _write_key(key, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CredentialError, match="secp384r1, expected ECDSA P-256"):
        load_signer(key)


def test_encrypted_and_junk_keys_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    write_atomic(key, pem, 0o600)
    with pytest.raises(CredentialError, match="encrypted"):
        load_signer(key)
    write_atomic(key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600)
    with pytest.raises(CredentialError, match="not a readable private key"):
        load_signer(key)
    write_atomic(key, b"hello", 0o600)
    with pytest.raises(CredentialError, match="expected one PEM private key, found 0"):
        load_signer(key)


def test_mismatched_key_and_certificate_are_refused(tmp_path: Path) -> None:
    ca = make_ca()
    save_node(tmp_path, make_node(ca))
    other = make_node(ca)
    write_atomic(tmp_path / "node.key", private_key_pem(other.signer), 0o600)
    with pytest.raises(CredentialError, match="does not belong to the certificate"):
        load_node(tmp_path)


def test_node_dir_with_an_operator_certificate_is_refused(tmp_path: Path) -> None:
    ca = make_ca()
    op = make_operator(ca)
    tmp_path.joinpath("node.key").write_bytes(private_key_pem(op.signer))
    os.chmod(tmp_path / "node.key", 0o600)
    tmp_path.joinpath("node.crt").write_bytes(certificate_pem(op.cert_der))
    tmp_path.joinpath("roots.pem").write_bytes(certificate_pem(ca.cert_der))
    with pytest.raises(CredentialError, match="not a node certificate"):
        load_node(tmp_path)


def test_roots_must_be_roots_of_the_same_domain(tmp_path: Path) -> None:
    ca, other = make_ca(), make_ca("other")
    node = make_node(ca)
    with pytest.raises(CredentialError, match="trusted root"):
        NodeCredentials.from_parts(node.signer, node.cert_der, (other.cert_der,))
    with pytest.raises(CredentialError, match="trusted root"):
        NodeCredentials.from_parts(node.signer, node.cert_der, (node.cert_der,))
    with pytest.raises(CredentialError, match="no root"):
        NodeCredentials.from_parts(node.signer, node.cert_der, ())


def test_operator_file_without_root_is_refused(tmp_path: Path) -> None:
    op = make_operator(make_ca())
    path = tmp_path / "op.pem"
    write_atomic(path, private_key_pem(op.signer) + certificate_pem(op.cert_der), 0o600)
    with pytest.raises(CredentialError, match="at least one root"):
        load_operator(path)
    assert isinstance(op, OperatorCredentials)


def test_load_certificates_reads_pem_bundles_and_der(tmp_path: Path) -> None:
    ca = make_ca()
    node = make_node(ca)
    bundle = tmp_path / "b.pem"
    bundle.write_bytes(b"junk\n" + certificate_pem(node.cert_der) + certificate_pem(ca.cert_der))
    assert load_certificates(bundle) == (node.cert_der, ca.cert_der)
    der = tmp_path / "c.der"
    der.write_bytes(ca.cert_der)
    assert load_certificates(der) == (ca.cert_der,)
    empty = tmp_path / "e.pem"
    empty.write_bytes(b"nothing here")
    with pytest.raises(CredentialError, match="no PEM certificate"):
        load_certificates(empty)
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (300 * 1024))
    with pytest.raises(CredentialError, match="larger than"):
        load_certificates(big)


def test_write_atomic_replaces_and_sets_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"one", 0o600)
    write_atomic(path, b"two", 0o644)
    assert path.read_bytes() == b"two" and mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    with pytest.raises(CredentialError, match="cannot write"):
        write_atomic(tmp_path / "missing-dir" / "f", b"x", 0o600)
