"""``gossipmesh ca revoke | trust-root | distrust-root``: root-signed entries, through any agent.

| command                                                                 | writes (signed by DIR's root) |
|-------------------------------------------------------------------------|-------------------------------|
| ``ca revoke [FP|CERT] [--node NAME] [--operator NAME] --mode M --dir DIR`` | ``revocation/FP`` per certificate |
| ``ca trust-root NEW_ROOT.crt --dir DIR``                                | ``trust/root/FP``: trusted |
| ``ca distrust-root FP|ROOT.crt --dir DIR [--mode M]``                   | ``trust/root/FP``: distrusted |

Revocations and root statements live in the replicated document (docs/SECURITY.md, "Signed
configuration"): every agent enforces them within seconds, and they are never deleted. ``--mode
retired`` (the default) keeps what the certificate signed before the revocation; ``compromised``
voids all of it (a stolen key can backdate), and the command lists the keys whose value became
void so they can be applied again. ``--node NAME`` / ``--operator NAME`` revoke every certificate
the CA issued under that name (``DIR/issued/``); a fingerprint or a certificate file names one.

A root rotation: ``ca init --dir NEW``; ``ca trust-root NEW/root.crt --dir OLD`` (every agent now
trusts both); re-issue node and operator certificates from NEW (``--also-trust OLD/root.crt``
until the end), restart or reload the agents one at a time; ``ca distrust-root OLD/root.crt --dir
NEW``. Config written under the old root keeps counting: nothing is lost.

The root key signs locally; the agent only proposes and commits (``gossipmesh.config.signing``).
Exit codes: 0 done; 1 the agent failed or proposed something this side refuses to sign; 2 a bad
argument, a missing CA directory, or a write the agent refused.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from gossipmesh.cli.common import (
    DEFAULT_AGENT,
    EXIT_FAIL,
    EXIT_USAGE,
    AgentOpt,
    InputProblem,
    client,
    fail,
    out,
    run,
)
from gossipmesh.errors import UsageError

USAGE_STATUSES = (400, 403, 404, 413)
FP_RE = re.compile(r"[0-9a-f]{64}")

DirOpt = Annotated[Path, typer.Option("--dir", help="The CA directory whose root signs.")]
ModeOpt = Annotated[
    str,
    typer.Option("--mode", help="retired: keep what it signed before; compromised: void it all."),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the document).")]


def _ca(directory: Path) -> Any:
    from gossipmesh.identity import load_ca

    try:
        return load_ca(directory)
    except UsageError as exc:
        raise InputProblem(str(exc)) from exc


def _certificate(target: str, what: str) -> bytes | None:
    """A certificate file's DER, or None when ``target`` is a fingerprint."""
    from gossipmesh.identity import load_certificates

    if FP_RE.fullmatch(target):
        return None
    try:
        return load_certificates(Path(target), what)[0]
    except UsageError as exc:
        raise InputProblem(f"{target}: not a fingerprint (64 hex digits) nor {exc}") from exc


def _issued(directory: Path) -> list[Any]:
    from gossipmesh.identity import CertificateRejected, load_certificates, parse_certificate

    out_ = []
    for path in sorted((directory / "issued").glob("*.crt")):
        try:
            out_.append(parse_certificate(load_certificates(path)[0]))
        except (UsageError, CertificateRejected):
            continue
    return out_


def _write(agent: str, directory: Path, items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from gossipmesh.config.signing import ProposalRefused, ProposalSigner

    signer = ProposalSigner.for_root(_ca(directory))
    admin = client(agent)
    try:
        data: dict[str, Any] = run(lambda: admin.config_write(items, signer), USAGE_STATUSES)
    except ProposalRefused as exc:
        fail(f"refusing to sign what the agent proposed: {exc}", EXIT_FAIL)
    voided = data.get("voided") or []
    if voided:
        out.print(f"[yellow]now void[/] (or counting again): {', '.join(voided)}; re-apply "
                  "what should stay")  # fmt: skip
    return data


def revoke(
    directory: DirOpt,
    target: Annotated[str | None, typer.Argument(help="Fingerprint or certificate file.")] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="Every certificate of node NAME.")
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Every certificate of operator NAME.")
    ] = None,
    mode: ModeOpt = "retired",
    agent: AgentOpt = DEFAULT_AGENT,
    reason: ReasonOpt = "",
) -> None:
    """Revoke node or operator certificates for the whole mesh (root-signed, for good)."""
    from gossipmesh.config.trust import MODES, revocation_key
    from gossipmesh.identity import CertificateRejected, parse_certificate

    if mode not in MODES:
        fail(f"--mode {mode!r}: expected one of {', '.join(MODES)}", EXIT_USAGE)
    if sum(x is not None for x in (target, node, operator)) != 1:
        fail("name exactly one of: a fingerprint or certificate file, --node, --operator",
             EXIT_USAGE)  # fmt: skip
    issued = run(lambda: _issued(directory))
    items: dict[str, dict[str, Any]] = {}
    if target is not None:
        der = run(lambda: _certificate(target, "certificate file"))
        if der is not None:
            try:
                info = parse_certificate(der)
            except CertificateRejected as exc:
                fail(f"{target}: not a mesh certificate: {exc}", EXIT_USAGE)
            found = [info]
        else:
            found = [i for i in issued if i.fingerprint.hex() == target]
            if not found:
                fail(f"{target}: not among the certificates in {directory}/issued; give the "
                     "certificate file instead", EXIT_USAGE)  # fmt: skip
    else:
        kind, name = ("node", node) if node is not None else ("operator", operator)
        found = [i for i in issued if i.kind.value == kind and i.spiffe_id.name == name]
        if not found:
            fail(f"no {kind} certificate named {name!r} in {directory}/issued", EXIT_USAGE)
    for info in found:
        if info.kind.value not in ("node", "operator"):
            fail(f"{info.spiffe_id}: only node and operator certificates are revoked (a root is "
                 "distrusted: ca distrust-root)", EXIT_USAGE)  # fmt: skip
        items[revocation_key(info.fingerprint)] = {
            "kind": info.kind.value, "name": info.spiffe_id.name, "mode": mode, "reason": reason,
        }  # fmt: skip
    _write(agent, directory, items)
    for info in found:
        out.print(f"revoked {info.spiffe_id} ({mode}) fingerprint {info.fingerprint.hex()}")


def trust_root(
    root_file: Annotated[Path, typer.Argument(help="The new root certificate (root.crt).")],
    directory: DirOpt,
    agent: AgentOpt = DEFAULT_AGENT,
    reason: ReasonOpt = "",
) -> None:
    """Make every agent trust another root too (the first step of a root rotation)."""
    from gossipmesh.config.trust import root_key
    from gossipmesh.identity import CertificateRejected, parse_certificate

    der = run(lambda: _certificate(str(root_file), "root certificate file"))
    if der is None:
        fail(f"{root_file}: give the root certificate file", EXIT_USAGE)
    try:
        info = parse_certificate(der)
    except CertificateRejected as exc:
        fail(f"{root_file}: not a mesh certificate: {exc}", EXIT_USAGE)
    if info.kind.value != "root":
        fail(f"{root_file}: {info.spiffe_id} is not a root", EXIT_USAGE)
    body = {"der": base64.b64encode(der).decode(), "state": "trusted", "reason": reason}
    _write(agent, directory, {root_key(info.fingerprint): body})
    out.print(f"every agent now trusts root {info.fingerprint.hex()}")


def distrust_root(
    target: Annotated[str, typer.Argument(help="Fingerprint or certificate of the old root.")],
    directory: DirOpt,
    agent: AgentOpt = DEFAULT_AGENT,
    mode: ModeOpt = "retired",
    reason: ReasonOpt = "",
) -> None:
    """Stop trusting a root from now on (the last step of a root rotation)."""
    from gossipmesh.config.trust import MODES, root_key
    from gossipmesh.identity import fingerprint

    if mode not in MODES:
        fail(f"--mode {mode!r}: expected one of {', '.join(MODES)}", EXIT_USAGE)
    der = run(lambda: _certificate(target, "root certificate file"))
    if der is None:  # a fingerprint: the agent knows the root's certificate
        roots = run(lambda: client(agent).trust()).get("roots") or []
        der = next((base64.b64decode(r["der"]) for r in roots
                    if r.get("fingerprint") == target and r.get("der")), None)  # fmt: skip
        if der is None:
            fail(f"{target}: the agent knows no root with this fingerprint; give its "
                 "certificate file", EXIT_USAGE)  # fmt: skip
    fp = fingerprint(der)
    if fp == fingerprint(_ca_der(directory)):
        fail(f"{directory}'s own root cannot distrust itself: sign with the new root's directory",
             EXIT_USAGE)  # fmt: skip
    body = {"der": base64.b64encode(der).decode(), "state": "distrusted", "mode": mode,
            "reason": reason}  # fmt: skip
    _write(agent, directory, {root_key(fp): body})
    out.print(f"root {fp.hex()} distrusted ({mode})")


def _ca_der(directory: Path) -> bytes:
    ca = run(lambda: _ca(directory))
    der: bytes = ca.cert_der
    return der


def install(ca_app: typer.Typer) -> None:
    ca_app.command("revoke")(revoke)
    ca_app.command("trust-root")(trust_root)
    ca_app.command("distrust-root")(distrust_root)
