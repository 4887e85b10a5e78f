"""Credentials on disk: the CA dir, a node dir and an operator file.

Theory of operation
-------------------
Layouts (DESIGN-11 D2)::

    CA dir        root.key (0600, PEM PKCS8)   root.crt
    node dir      node.key (0600, PEM PKCS8)   node.crt   roots.pem (one or more roots)
    operator file one PEM (0600): the private key, the operator certificate, then the root(s)

Every write is atomic: a temp file in the same directory, written, fsynced, given its mode, then
renamed over the target, and the directory fsynced; a crash leaves the old file or the new one,
never half of either. A directory the tools create is 0700; one that already exists is left as
the operator made it. Keys are created 0600 from the first byte (``mkstemp``), so there is no
window in which another user could open them.

Loading is strict, and every refusal is one line that says what to do: a missing file names its
path; a key file that group or others can access is refused with the ``chmod 600`` that fixes it
(the same rule ssh applies to its keys); a key that is not ECDSA P-256, or is encrypted, says so.
Files are read with a size cap. The loaders return the frozen credential objects of
``credentials.py``, which check that key, certificate and roots belong together.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gossipmesh.identity.credentials import (
    MAX_ROOTS,
    CaCredentials,
    CredentialError,
    NodeCredentials,
    OperatorCredentials,
)
from gossipmesh.identity.signing import Signer

ROOT_KEY_FILE, ROOT_CERT_FILE = "root.key", "root.crt"
NODE_KEY_FILE, NODE_CERT_FILE, ROOTS_FILE = "node.key", "node.crt", "roots.pem"
KEY_MODE, CERT_MODE, DIR_MODE = 0o600, 0o644, 0o700
MAX_PEM_FILE_BYTES = 256 * 1024

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Writing


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; existing dirs are left alone."""
    missing = []
    probe = path
    while not probe.is_dir() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise CredentialError(
                f"cannot create directory {directory}: {exc.strerror or exc}"
            ) from exc


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically; the file has ``mode`` from its first byte on."""
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode & KEY_MODE)  # never wider than 0600 while it is a temp file
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = ""
        _fsync_dir(path.parent)
    except OSError as exc:
        raise CredentialError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_key_pem(signer: Signer) -> bytes:
    return signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _refuse_existing(paths: list[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists():
            raise CredentialError(f"{path} already exists (use --force to replace it)")


def save_ca(directory: Path, ca: CaCredentials, *, force: bool = False) -> None:
    """Write ``root.key`` and ``root.crt`` into ``directory``; refuse to replace a root."""
    key, cert = directory / ROOT_KEY_FILE, directory / ROOT_CERT_FILE
    _refuse_existing([key, cert], force)
    make_private_dir(directory)
    write_atomic(key, private_key_pem(ca.signer), KEY_MODE)
    write_atomic(cert, certificate_pem(ca.cert_der), CERT_MODE)


def save_node(directory: Path, node: NodeCredentials, *, force: bool = False) -> None:
    """Write ``node.key``, ``node.crt`` and ``roots.pem`` into ``directory``."""
    key, cert, roots = (directory / n for n in (NODE_KEY_FILE, NODE_CERT_FILE, ROOTS_FILE))
    _refuse_existing([key, cert], force)
    make_private_dir(directory)
    write_atomic(key, private_key_pem(node.signer), KEY_MODE)
    write_atomic(cert, certificate_pem(node.cert_der), CERT_MODE)
    write_atomic(roots, b"".join(certificate_pem(r) for r in node.roots), CERT_MODE)


def save_operator(path: Path, operator: OperatorCredentials, *, force: bool = False) -> None:
    """Write the operator file: key, certificate, root(s), in one 0600 PEM."""
    _refuse_existing([path], force)
    make_private_dir(path.parent)
    pems = [private_key_pem(operator.signer), certificate_pem(operator.cert_der)]
    pems += [certificate_pem(r) for r in operator.roots]
    write_atomic(path, b"".join(pems), KEY_MODE)


# --------------------------------------------------------------------------------------------
# Reading


def read_file(path: Path, label: str) -> bytes:
    """The bytes of ``path`` (at most MAX_PEM_FILE_BYTES); one-line errors naming the path."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_FILE_BYTES + 1)
    except FileNotFoundError:
        raise CredentialError(f"{label} {path}: no such file") from None
    except IsADirectoryError:
        raise CredentialError(f"{label} {path}: is a directory") from None
    except OSError as exc:
        raise CredentialError(f"{label} {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise CredentialError(f"{label} {path}: larger than {MAX_PEM_FILE_BYTES} bytes")
    return data


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, DER) of each PEM block in ``data``, in order; bad base64 raises CredentialError."""
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except (binascii.Error, ValueError):
            raise CredentialError(f"bad base64 in a PEM {match.group(1).decode()} block") from None
        blocks.append((match.group(1).decode("ascii"), der))
    return blocks


def load_certificates(path: Path, label: str = "certificate file") -> tuple[bytes, ...]:
    """The certificates (DER) of a PEM file (other blocks ignored), or of a single DER file."""
    data = read_file(path, label)
    blocks = pem_blocks(data)
    if not blocks and data[:1] == b"\x30":  # a DER SEQUENCE: one certificate in binary form
        return (data,)
    certs = tuple(der for name, der in blocks if name == "CERTIFICATE")
    if not certs:
        raise CredentialError(f"{label} {path}: no PEM certificate in it")
    return certs


def load_signer(path: Path, label: str = "key file") -> Signer:
    """The P-256 private key in ``path``, refusing a file that group or others can access."""
    return _signer_from(read_private(path, label), path, label)


def read_private(path: Path, label: str) -> bytes:
    """The bytes of a file holding a private key, after checking its permissions."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CredentialError(f"{label} {path}: no such file") from None
    except OSError as exc:
        raise CredentialError(f"{label} {path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode) and mode & 0o077:
        raise CredentialError(
            f"{label} {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    return read_file(path, label)


def _signer_from(data: bytes, path: Path, label: str) -> Signer:
    keys = [(name, der) for name, der in pem_blocks(data) if name.endswith("PRIVATE KEY")]
    if len(keys) != 1:
        raise CredentialError(f"{label} {path}: expected one PEM private key, found {len(keys)}")
    name, der = keys[0]
    if name == "ENCRYPTED PRIVATE KEY":
        raise CredentialError(
            f"{label} {path}: the key is encrypted; gossipmesh needs it unencrypted"
        )
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CredentialError(f"{label} {path}: not a readable private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialError(
            f"{label} {path}: the key is {_key_kind(key)}, expected ECDSA P-256 "
            "(make one with `gossipmesh ca init` / `ca issue-node` / `ca issue-operator`)"
        )
    return Signer(key)


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "Ed448"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__


def load_ca(directory: Path) -> CaCredentials:
    """The CA in ``directory`` (``root.key`` + ``root.crt``)."""
    signer = load_signer(directory / ROOT_KEY_FILE, "root key")
    certs = load_certificates(directory / ROOT_CERT_FILE, "root certificate")
    return CaCredentials.from_parts(signer, certs[0], label=str(directory / ROOT_CERT_FILE))


def load_node(directory: Path) -> NodeCredentials:
    """The node credentials in ``directory`` (``node.key``, ``node.crt``, ``roots.pem``)."""
    signer = load_signer(directory / NODE_KEY_FILE, "node key")
    cert = load_certificates(directory / NODE_CERT_FILE, "node certificate")[0]
    roots = load_certificates(directory / ROOTS_FILE, "roots file")
    if len(roots) > MAX_ROOTS:
        raise CredentialError(f"roots file {directory / ROOTS_FILE}: more than {MAX_ROOTS} roots")
    return NodeCredentials.from_parts(signer, cert, roots, label=str(directory))


def load_operator(path: Path) -> OperatorCredentials:
    """The operator file: its key, then its certificate, then the root(s)."""
    data = read_private(path, "operator file")
    signer = _signer_from(data, path, "operator file")
    certs = [der for name, der in pem_blocks(data) if name == "CERTIFICATE"]
    if len(certs) < 2:
        raise CredentialError(
            f"operator file {path}: needs the operator certificate and at least one root"
        )
    if len(certs) > MAX_ROOTS + 1:
        raise CredentialError(f"operator file {path}: more than {MAX_ROOTS} roots")
    return OperatorCredentials.from_parts(signer, certs[0], certs[1:], label=str(path))
