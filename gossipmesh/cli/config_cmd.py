"""``gossipmesh config ...``: read and edit the replicated mesh configuration through any agent.

| command                                   | admin API |
|-------------------------------------------|-----------|
| ``config get [PREFIX] [--exact] [--json]``| GET /v1/config?prefix= |
| ``config set KIND/NAME -f FILE|-``        | POST /v1/config/prepare, sign, /commit |
| ``config delete KIND/NAME``               | the same, for a deletion |
| ``config apply -f FILE``                  | the same, many keys as one atomic delta |
| ``config history KIND/NAME [--json]``     | GET /v1/config-history/KIND/NAME |
| ``config conflicts [--json]``             | GET /v1/config-conflicts |

Files are JSON or TOML: ``.json``/``.toml`` by extension, otherwise (and for ``-``, stdin) JSON
is tried first, then TOML. ``set`` takes one entity body. ``apply`` takes a mapping of entities,
in any of these shapes (mixable)::

    # TOML: a table per entity, [KIND.NAME] ...
    [route.web]
    destinations = [{ service = "api", weight = 90 }, { service = "api-v2", weight = 10 }]
    [service.api]
    protocol = "http"
    # ... or quoted keys, and deletions as a list
    ["policy/ops"]
    to = "api"
    delete = ["route/old"]

    // JSON: {"route/web": {...}, "route/old": null}, or {"entities": {...}}, or {"route": {"web": {...}}}

Every file is parsed and validated (``gossipmesh.config.schema``, the same rules the agents
apply) before anything is sent: a bad file is one line naming the file and the field, exit 2, and
nothing is written. The agent validates again; its 400/403/413 answers also exit 2. Exit 1: the
agent is unreachable or failed, proposed something this side refuses to sign, or the key asked for
is not there (``config get --exact``, ``config delete``, ``config history``).

**Every write is signed here**, by the operator key in ``--operator-key FILE`` (or
``$GOSSIPMESH_OPERATOR_KEY``; made by ``gossipmesh ca issue-operator``): the agent proposes the
exact entries, ``gossipmesh.config.signing.ProposalSigner`` checks them (writer, context,
values, time, siblings' signatures) and signs, and the agent verifies again before it commits.
Against a playground agent (``/v1/self`` says ``playground``) the playground operator is used when
no key is given. A missing or unreadable key is one line and exit 2.
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from gossipmesh.cli.common import (
    DEFAULT_AGENT,
    EXIT_FAIL,
    AgentOpt,
    InputProblem,
    JsonOpt,
    client,
    fail,
    out,
    print_json,
    run,
)
from gossipmesh.client import AdminClient, ConfigSigner
from gossipmesh.config.schema import KINDS, parse_key, validate_key
from gossipmesh.errors import ConfigValidationError, UsageError

T = TypeVar("T")
MAX_FILE_BYTES = 1024 * 1024  # the admin API's body limit: a larger file could never be applied
USAGE_STATUSES = (400, 403, 413)  # 404 (not there) is a failure, exit 1

config_app = typer.Typer(
    help="Read and edit the replicated mesh configuration (any agent accepts writes).",
    no_args_is_help=True,
)
FileOpt = Annotated[str, typer.Option("-f", "--file", help="JSON or TOML file, or - for stdin.")]
OperatorKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--operator-key",
        envvar="GOSSIPMESH_OPERATOR_KEY",
        help="Operator key file that signs the write (gossipmesh ca issue-operator).",
        show_envvar=True,
    ),
]
NO_KEY = (
    "config writes are signed by an operator: give --operator-key FILE or set "
    "GOSSIPMESH_OPERATOR_KEY (gossipmesh ca issue-operator NAME --dir CA --out FILE makes one)"
)


class FileProblem(InputProblem):
    """A file the operator gave is unreadable or invalid; the message is the one line to print."""


# ---------------------------------------------------------------------------------------------
# Files (pure apart from reading the file; unit-tested directly)


def read_document(source: str) -> Mapping[str, Any]:
    """Parse ``source`` (a path, or ``-`` for stdin) as JSON or TOML into a mapping."""
    if source == "-":
        text, label, ext = sys.stdin.read(MAX_FILE_BYTES + 1), "stdin", ""
    else:
        path = Path(source)
        label, ext = source, path.suffix.lower()
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise FileProblem(f"{label}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise FileProblem(f"{label}: not UTF-8 text") from exc
    if len(text) > MAX_FILE_BYTES:
        raise FileProblem(f"{label}: larger than the {MAX_FILE_BYTES}-byte request limit")
    data: Any
    if ext == ".json":
        data = _json(text, label)
    elif ext == ".toml":
        data = _toml(text, label)
    else:
        try:
            data = json.loads(text)
        except ValueError:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise FileProblem(f"{label}: neither JSON nor TOML (TOML: {exc})") from exc
    if not isinstance(data, dict):
        raise FileProblem(f"{label}: must hold an object/table, not {type(data).__name__}")
    return data


def _json(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FileProblem(f"{label}: not valid JSON: {exc}") from exc


def _toml(text: str, label: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileProblem(f"{label}: not valid TOML: {exc}") from exc


def check_entity(label: str, key: str, body: object) -> dict[str, Any]:
    """Validate one entity locally; FileProblem names the file, key and field."""
    try:
        kind, _ = parse_key(key)
        if not isinstance(body, dict):
            raise ConfigValidationError(kind, "must be an object (a table)")
        validate_key(key, body)
    except ConfigValidationError as exc:
        raise FileProblem(f"{label}: {key}: {exc}") from exc
    return body


def entities_from(data: Mapping[str, Any], label: str) -> dict[str, dict[str, Any] | None]:
    """Flatten an apply file (see the module doc) into ``{KIND/NAME: body or None}``, validated."""
    out: dict[str, dict[str, Any] | None] = {}

    def put(key: str, body: object) -> None:
        if key in out:
            raise FileProblem(f"{label}: {key}: given twice")
        out[key] = None if body is None else check_entity(label, key, body)

    for top, value in data.items():
        if top == "entities" and isinstance(value, dict):
            for key, body in value.items():
                put(key, body)
        elif top == "delete":
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                raise FileProblem(f'{label}: delete: must be a list of "KIND/NAME" strings')
            for key in value:
                try:
                    parse_key(key)
                except ConfigValidationError as exc:
                    raise FileProblem(f"{label}: delete: {exc.reason}") from exc
                put(key, None)
        elif "/" in top:
            put(top, value)
        elif top in KINDS:
            if not isinstance(value, dict):
                raise FileProblem(f"{label}: {top}: must be a table of [{top}.NAME] entities")
            for name, body in value.items():
                put(f"{top}/{name}", body)
        else:
            raise FileProblem(
                f"{label}: {top}: not KIND/NAME, a [KIND.NAME] table, entities or delete "
                f"(kinds: {', '.join(KINDS)})"
            )
    if not out:
        raise FileProblem(f"{label}: no entities")
    return out


def only_key(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A ``GET /v1/config?prefix=`` answer cut down to ``key`` itself."""
    cut = dict(data)
    for part in ("entities", "void"):
        found = data.get(part) or {}
        cut[part] = {key: found[key]} if key in found else {}
    return cut


# ---------------------------------------------------------------------------------------------
# Helpers of the commands


def _run(fn: Callable[[], T]) -> T:
    """``common.run`` (the one error boundary), where an input the agent refused (400/403/413)
    is a usage error too."""
    return run(fn, USAGE_STATUSES)


def check_key(key: str) -> str:
    """``key`` if it is a valid KIND/NAME, else InputProblem naming it."""
    try:
        parse_key(key)
    except ConfigValidationError as exc:
        raise InputProblem(f"{key}: {exc.reason}") from exc
    return key


def operator_signer(admin: AdminClient, key_file: str | None) -> ConfigSigner:
    """The signer of this command's writes: ``--operator-key``, or the playground operator when
    the agent is a playground. InputProblem when there is none or it cannot be read."""
    from gossipmesh.config.signing import ProposalSigner
    from gossipmesh.identity import load_operator, playground_operator

    if key_file:
        try:
            return ProposalSigner.for_operator(load_operator(Path(key_file)))
        except UsageError as exc:
            raise InputProblem(f"--operator-key {key_file}: {exc}") from exc
    info = admin.self_info()
    if info.get("playground"):
        return ProposalSigner.for_operator(playground_operator(str(info.get("cluster"))))
    raise InputProblem(NO_KEY)


def signed_write(
    admin: AdminClient, key_file: str | None, items: Mapping[str, dict[str, Any] | None]
) -> dict[str, Any]:
    """Prepare, check, sign and commit ``items``; the agent's answer."""
    from gossipmesh.config.signing import ProposalRefused

    try:
        return _run(lambda: admin.config_write(items, operator_signer(admin, key_file)))
    except ProposalRefused as exc:
        fail(f"refusing to sign what the agent proposed: {exc}", EXIT_FAIL)


def report_voided(data: Mapping[str, Any]) -> None:
    voided = data.get("voided") or []
    if voided:
        out.print(f"[yellow]changed visibility[/] (now void, or counting again): "
                  f"{', '.join(voided)}; re-apply what should stay")  # fmt: skip


def policy_warnings(items: Mapping[str, dict[str, Any] | None], known: set[str]) -> list[str]:
    """Policies in ``items`` that name a service nothing defines or runs (``known``): written
    all the same (the service may come later), but likely a typo that protects nothing."""
    lines: list[str] = []
    for key, body in items.items():
        if body is None or not key.startswith("policy/"):
            continue
        to = body.get("to")
        if isinstance(to, str) and to not in known:
            lines.append(f"{key}: service {to!r} is unknown (no service/{to}, no instance)")
        for caller in body.get("from") or ():
            if isinstance(caller, str) and "://" not in caller and caller not in known:
                lines.append(f"{key}: caller service {caller!r} is unknown")
    return lines


def report_policy_warnings(admin: AdminClient, items: Mapping[str, dict[str, Any] | None]) -> None:
    if not any(k.startswith("policy/") and v is not None for k, v in items.items()):
        return
    try:
        known = {k.partition("/")[2] for k in (admin.config("service/").get("entities") or {})}
        known |= {str(row.get("service")) for row in admin.services()}
    except Exception:  # noqa: BLE001 - a warning must not turn a written change into a failure
        return
    known |= {k.partition("/")[2] for k, v in items.items() if k.startswith("service/") and v}
    for line in policy_warnings(items, known):
        out.print(f"[yellow]warning[/]: {line}")


def _when(hlc: Mapping[str, Any]) -> str:
    ms = int(hlc.get("wall_ms") or 0)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
    logical = int(hlc.get("logical") or 0)
    return f"{text}+{logical}" if logical else text


def _signer(signer: Mapping[str, Any]) -> str:
    """``alice (3f2a9c01)``: the operator's name and the start of its certificate fingerprint."""
    fp = str(signer.get("fingerprint") or "")[:8]
    return f"{signer.get('name') or '?'} ({fp})" if fp else "?"


def _compact(value: Any, width: int = 100) -> str:
    text = "(deleted)" if value is None else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Commands


@config_app.command("get")
def get(
    prefix: Annotated[str, typer.Argument(help="Key prefix, e.g. route/ or route/web.")] = "",
    exact: Annotated[
        bool,
        typer.Option(
            "--exact", help="PREFIX is one KIND/NAME: show only that key; exit 1 if it is not set."
        ),
    ] = False,
    agent: AgentOpt = DEFAULT_AGENT,
    as_json: JsonOpt = False,
) -> None:
    """List the effective entities (the winner of any conflict) under PREFIX (or one key)."""
    if exact:
        _run(lambda: check_key(prefix))
    admin = client(agent)
    data = _run(lambda: admin.config(prefix))
    if exact:  # the API filters by prefix: route/hello would bring route/hello2 along
        data = only_key(data, prefix)
        if not data["entities"] and not data["void"]:
            fail(f"{prefix}: not set", EXIT_FAIL)
    if as_json:
        print_json(data)
        return
    entities = data.get("entities") or {}
    if not entities and not data.get("void"):
        out.print(f"no entities{' under ' + prefix if prefix else ''}")
        return
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("Key")
    table.add_column("Value", overflow="fold")
    for key, value in entities.items():
        table.add_row(key, _compact(value))
    for key, why in (data.get("void") or {}).items():
        table.add_row(key, f"[red]void[/] ({why}): its signer's entries do not count")
    out.print(table)


@config_app.command("set")
def set_(
    key: Annotated[str, typer.Argument(help="KIND/NAME, e.g. route/web.")],
    file: FileOpt,
    agent: AgentOpt = DEFAULT_AGENT,
    operator_key: OperatorKeyOpt = None,
) -> None:
    """Write one entity from a JSON or TOML file (or - for stdin), signed."""
    label = "stdin" if file == "-" else file
    body = _run(lambda: check_entity(label, check_key(key), read_document(file)))
    admin = client(agent)
    data = signed_write(admin, operator_key, {key: body})
    out.print(f"{key}: written")
    report_voided(data)
    report_policy_warnings(admin, {key: body})


@config_app.command("delete")
def delete(
    key: Annotated[str, typer.Argument(help="KIND/NAME")],
    agent: AgentOpt = DEFAULT_AGENT,
    operator_key: OperatorKeyOpt = None,
) -> None:
    """Delete one entity (a signed tombstone every agent learns)."""
    _run(lambda: check_key(key))
    admin = client(agent)
    present = only_key(_run(lambda: admin.config(key)), key)
    if not present["entities"] and not present["void"]:  # a void key may be deleted
        fail(f"{key}: not set, nothing to delete", EXIT_FAIL)
    signed_write(admin, operator_key, {key: None})
    out.print(f"{key}: deleted")


@config_app.command("apply")
def apply(
    file: FileOpt,
    agent: AgentOpt = DEFAULT_AGENT,
    as_json: JsonOpt = False,
    operator_key: OperatorKeyOpt = None,
) -> None:
    """Write many entities (and deletions) from one file as a single atomic, signed change."""
    label = "stdin" if file == "-" else file
    entities = _run(lambda: entities_from(read_document(file), label))
    admin = client(agent)
    data = signed_write(admin, operator_key, entities)
    if as_json:
        print_json(data)
        return
    deleted = sum(1 for v in entities.values() if v is None)
    out.print(f"applied {len(entities) - deleted} entities, {deleted} deletions (one change)")
    report_voided(data)
    report_policy_warnings(admin, entities)


@config_app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="KIND/NAME")],
    agent: AgentOpt = DEFAULT_AGENT,
    as_json: JsonOpt = False,
) -> None:
    """Versions of one entity this agent has seen, newest first, with writer and time."""
    _run(lambda: check_key(key))
    admin = client(agent)
    data = _run(lambda: admin.config_history(key))
    if as_json:
        print_json(data)
        return
    versions = data.get("versions") or []
    if not versions:
        out.print(f"{key}: no versions known here")
        return
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Time (HLC)", "Writer", "#", "Signer", "State", "Value"):
        table.add_column(col, overflow="fold" if col == "Value" else "ellipsis")
    for v in versions:
        state = "[green]current[/]" if v.get("current") else "[bright_black]superseded[/]"
        if v.get("suspect"):
            state += " [yellow]clock-suspect[/]"
        if v.get("void"):
            state += f" [red]void: {v['void']}[/]"
        table.add_row(_when(v.get("hlc") or {}), str(v.get("writer")), str(v.get("counter")),
                      _signer(v.get("signer") or {}), state, _compact(v.get("value"), 80))  # fmt: skip
    out.print(table)


@config_app.command("conflicts")
def conflicts(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Keys written concurrently (siblings kept), and which value wins everywhere."""
    admin = client(agent)
    data = _run(admin.config_conflicts)
    if as_json:
        print_json(data)
        return
    items = data.get("conflicts") or []
    if not items:
        out.print("no conflicts")
        return
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("Key", "Sibling", "Writer", "Signer", "Time (HLC)", "Value"):
        table.add_column(col, overflow="fold" if col == "Value" else "ellipsis")
    for c in items:
        for s in c.get("siblings") or []:
            mark = "[green]wins[/]" if s.get("winner") else "[yellow]loses[/]"
            table.add_row(str(c.get("key")), mark, str(s.get("writer")),
                          _signer(s.get("signer") or {}), _when(s.get("hlc") or {}),
                          _compact(s.get("value"), 60))  # fmt: skip
    out.print(table)
    out.print(f"{len(items)} conflicting key(s); write the key again to resolve")


def install(app: typer.Typer) -> None:
    """Mount ``config`` on the top-level app (called by gossipmesh.cli.app)."""
    app.add_typer(config_app, name="config")
