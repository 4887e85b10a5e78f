"""``gossipmesh ca ...``: the mesh's offline certificate authority (no server, no agent needed).

| command                                             | writes |
|-----------------------------------------------------|--------|
| ``ca init --dir DIR [--cluster NAME] [--days N]``   | DIR/root.key (0600), DIR/root.crt |
| ``ca issue-node NAME --dir DIR --out NODE_DIR``     | NODE_DIR/node.key (0600), node.crt, roots.pem |
| ``ca issue-operator NAME --dir DIR --out FILE``     | FILE (0600): key, certificate, root(s) |
| ``ca show FILE [--json]``                           | nothing: kind, SPIFFE id, fingerprint, validity, issuer |
| ``ca verify FILE --roots ROOTS.pem``                | nothing: exit 0 if FILE's first certificate chains to a root |
| ``ca revoke``, ``ca trust-root``, ``ca distrust-root`` | root-signed entries, through an agent (``ca_trust_cmd.py``) |

The root key never leaves DIR: keep DIR offline. Nothing is overwritten without ``--force``.
Everything issued is also kept in ``DIR/issued/`` (certificates only), for ``ca revoke``.
``--also-trust FILE`` (repeatable) adds more roots to what a node or operator trusts, for a root
rotation. The commands are thin: parse, call ``gossipmesh.identity``, render.

Exit codes: 0 success; 1 ``ca verify`` refused the certificate (the reason is printed) or
``ca show`` met a certificate that is not a mesh certificate; 2 usage: a bad name or option, a
missing, unreadable or unsafe input file, an output that exists already, a path that cannot be
written. Errors are one line on stderr.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gossipmesh.cli.common import EXIT_FAIL, EXIT_USAGE, JsonOpt, fail, out, print_json
from gossipmesh.errors import UsageError

if TYPE_CHECKING:
    from gossipmesh.identity import CertInfo, IssuedCredentials

C = TypeVar("C", bound="IssuedCredentials")

ca_app = typer.Typer(
    help="The mesh's offline certificate authority: root, node and operator certificates.",
    no_args_is_help=True,
)

DirOpt = Annotated[Path, typer.Option("--dir", help="The CA directory (root.key, root.crt).")]
DaysOpt = Annotated[int | None, typer.Option("--days", help="Validity in days.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files.")]
AlsoTrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--also-trust", help="PEM file of more roots to trust (repeatable; rotation)."),
]


ISSUED_DIR = "issued"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _extra_roots(paths: list[Path] | None) -> tuple[bytes, ...]:
    from gossipmesh.identity import load_certificates

    roots: list[bytes] = []
    for path in paths or []:
        roots.extend(load_certificates(path, "roots file"))
    return tuple(roots)


def _usage(fn: Any) -> Any:
    """Run ``fn``; a refused input is one line and exit 2."""
    try:
        return fn()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)


@ca_app.command("init")
def init(
    directory: DirOpt,
    cluster: Annotated[
        str, typer.Option("--cluster", help="Cluster name = trust domain.")
    ] = "default",
    days: DaysOpt = None,
    force: ForceOpt = False,
) -> None:
    """Create a root key and self-signed root certificate in DIR (keep DIR offline)."""
    from gossipmesh.identity import ROOT_DAYS, CaCredentials, parse_certificate, save_ca

    def make() -> CaCredentials:
        ca = CaCredentials.generate(
            cluster, now_ms=_now_ms(), days=ROOT_DAYS if days is None else days
        )
        save_ca(directory, ca, force=force)
        return ca

    ca = _usage(make)
    info = parse_certificate(ca.cert_der)
    out.print(f"root [bold]{info.spiffe_id}[/] written to {directory}")
    out.print(f"  fingerprint {info.fingerprint.hex()}")
    out.print(f"  valid until {_iso(info.not_after_ms)}")


@ca_app.command("issue-node")
def issue_node(
    name: Annotated[str, typer.Argument(help="Node name (as given to `agent --name`).")],
    directory: DirOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Node directory to write.")],
    days: DaysOpt = None,
    force: ForceOpt = False,
    also_trust: AlsoTrustOpt = None,
) -> None:
    """Issue a node key and certificate into NODE_DIR (give it to the agent as --tls-dir)."""
    from gossipmesh.identity import NodeCredentials, save_node

    _issue(
        NodeCredentials,
        name,
        directory,
        days,
        also_trust,
        lambda c: save_node(out_dir, c, force=force),
        out_dir,
    )


@ca_app.command("issue-operator")
def issue_operator(
    name: Annotated[str, typer.Argument(help="Operator name (a person or a tool).")],
    directory: DirOpt,
    out_file: Annotated[Path, typer.Option("--out", help="Operator file to write (0600).")],
    days: DaysOpt = None,
    force: ForceOpt = False,
    also_trust: AlsoTrustOpt = None,
) -> None:
    """Issue an operator signing key and certificate into one 0600 file."""
    from gossipmesh.identity import OperatorCredentials, save_operator

    _issue(
        OperatorCredentials,
        name,
        directory,
        days,
        also_trust,
        lambda c: save_operator(out_file, c, force=force),
        out_file,
    )


def _issue(
    kind: type[C],
    name: str,
    directory: Path,
    days: int | None,
    also_trust: list[Path] | None,
    save: Callable[[C], None],
    where: Path,
) -> None:
    """Load the CA, issue ``kind`` credentials for ``name``, save them, say what was written."""
    from gossipmesh.identity import load_ca

    def make() -> C:
        ca = load_ca(directory)
        extra = _extra_roots(also_trust)
        creds = kind.issue(ca, name, now_ms=_now_ms(), days=days, extra_roots=extra)
        save(creds)
        record_issued(directory, creds.cert_der)  # so `ca revoke --node NAME` can find it
        return creds

    creds = _usage(make)
    _report_issued(creds.cert_der, where)


def record_issued(directory: Path, der: bytes) -> None:
    """Keep a copy of what the CA issued: ``DIR/issued/KIND-NAME-FINGERPRINT.crt``."""
    from gossipmesh.identity import parse_certificate
    from gossipmesh.identity.files import CERT_MODE, certificate_pem, write_atomic

    info = parse_certificate(der)
    issued = directory / ISSUED_DIR
    issued.mkdir(mode=0o700, exist_ok=True)
    name = f"{info.kind.value}-{info.spiffe_id.name}-{info.fingerprint.hex()[:16]}.crt"
    write_atomic(issued / name, certificate_pem(der), CERT_MODE)


def _report_issued(der: bytes, where: Path) -> None:
    from gossipmesh.identity import parse_certificate

    info = parse_certificate(der)
    out.print(f"{info.kind.value} [bold]{info.spiffe_id}[/] written to {where}")
    out.print(f"  fingerprint {info.fingerprint.hex()}")
    out.print(f"  valid until {_iso(info.not_after_ms)}")


def describe(info: CertInfo) -> dict[str, Any]:
    """The facts ``ca show`` prints, as JSON-ready values."""
    return {
        "kind": info.kind.value,
        "spiffe_id": info.spiffe_id.uri,
        "fingerprint": info.fingerprint.hex(),
        "not_before": _iso(info.not_before_ms),
        "not_after": _iso(info.not_after_ms),
        "issuer": info.issuer,
        "subject": info.subject,
        "serial": f"{info.serial:x}",
        "ca": info.is_ca,
        "path_length": info.path_length,
    }


@ca_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="A certificate, roots.pem or operator file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show each certificate in FILE: kind, SPIFFE id, fingerprint, validity, issuer."""
    from gossipmesh.identity import CertificateRejected, load_certificates, parse_certificate

    ders = _usage(lambda: load_certificates(file))
    rows = []
    for index, der in enumerate(ders):
        try:
            rows.append(describe(parse_certificate(der)))
        except CertificateRejected as exc:
            fail(f"{file}: certificate {index + 1} is not a mesh certificate: {exc}", EXIT_FAIL)
    if as_json:
        print_json(rows)
        return
    for index, row in enumerate(rows):
        if index:
            out.print()
        out.print(f"[bold]{row['kind']}[/] {row['spiffe_id']}")
        for key in ("fingerprint", "not_before", "not_after", "issuer", "subject", "serial"):
            out.print(f"  {key.replace('_', ' ')}: {row[key]}")


@ca_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The certificate to check (its first one).")],
    roots: Annotated[Path, typer.Option("--roots", help="PEM file of the trusted root(s).")],
) -> None:
    """Check FILE's certificate against ROOTS now: exit 0 if valid, 1 with the reason if not.

    A workload certificate is checked with the next certificate in FILE as its node's.
    """
    from gossipmesh.identity import (
        CertificateRejected,
        IdKind,
        Rejected,
        TrustStore,
        load_certificates,
        parse_certificate,
    )

    ders = _usage(lambda: load_certificates(file))
    root_ders = _usage(lambda: load_certificates(roots, "roots file"))
    try:
        domain = parse_certificate(root_ders[0]).spiffe_id.trust_domain
    except CertificateRejected as exc:
        fail(f"{roots}: not a mesh root: {exc}", EXIT_USAGE)
    store = _usage(lambda: TrustStore(domain, root_ders))
    try:
        kind = parse_certificate(ders[0]).kind
    except CertificateRejected as exc:
        fail(f"{file}: rejected: {exc}", EXIT_FAIL)
    if kind is IdKind.ROOT:
        # A root is not verified by a chain: it is trusted if it is one of ROOTS.
        info = parse_certificate(ders[0])
        if info.fingerprint not in store.root_fingerprints:
            fail(f"{file}: rejected: unknown_root: this root is not in {roots}", EXIT_FAIL)
        out.print(f"[green]ok[/] {info.spiffe_id} (root), one of {roots}")
        return
    intermediate = ders[1] if kind is IdKind.WORKLOAD and len(ders) > 1 else None
    verdict = store.verify(ders[0], kind, _now_ms(), intermediate=intermediate)
    if isinstance(verdict, Rejected):
        fail(f"{file}: rejected: {verdict}", EXIT_FAIL)
    out.print(
        f"[green]ok[/] {verdict.spiffe_id} ({verdict.kind.value}), "
        f"valid until {_iso(verdict.not_after_ms)}"
    )


def install(app: typer.Typer) -> None:
    """Mount ``ca`` on the top-level app (called by gossipmesh.cli.app)."""
    from gossipmesh.cli import ca_trust_cmd  # registers revoke, trust-root, distrust-root

    ca_trust_cmd.install(ca_app)
    app.add_typer(ca_app, name="ca")
