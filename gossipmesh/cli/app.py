"""The ``gossipmesh`` command line. Commands are thin: parse, call the admin API, render, exit.

Exit codes, for every command: 0 success; 1 a failure (the agent is unreachable or reported an
error, something asked for does not exist, ``doctor`` found a problem, ``monitor``'s agent went
away); 2 usage error (a bad flag, address or input file). Errors are one line on stderr that names
the address and, where it can tell, the likely mistake (gossipmesh/client.py).
Shell completion: ``gossipmesh --install-completion`` (or ``--show-completion SHELL``).
The CLI is a client of the admin API and imports no agent internals; the one exception is
``gossipmesh agent``, which runs the agent itself (imported lazily, only for that command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from gossipmesh.cli import (
    ca_cmd,
    common,
    config_cmd,
    demo_cmd,
    doctor_cmd,
    render,
    services_cmd,
    shift_cmd,
    simulate,
    stat_cmd,
    tap_cmd,
)
from gossipmesh.cli.common import (
    DEFAULT_AGENT,
    AgentOpt,
    InputProblem,
    JsonOpt,
    client,
    out,
    print_json,
    run,
)
from gossipmesh.client import AdminClient, KeyOp
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

app = typer.Typer(
    name="gossipmesh",
    help="gossipmesh: a decentralized service mesh (SWIM membership, no control-plane server).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion SHELL
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="Rotate the cluster's encryption keys (cluster-wide).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@app.callback()
def credentials(
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="GOSSIPMESH_TOKEN_FILE",
            show_envvar=True,
            help="File holding the agent's admin token (else $GOSSIPMESH_TOKEN, else the "
            "agent's own token file on this host).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="GOSSIPMESH_DATA_DIR",
            show_envvar=True,
            help="The agent's --data-dir on this host: its admin.token is read from there.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="GOSSIPMESH_CA_FILE",
            show_envvar=True,
            help="Cluster roots (roots.pem, or an operator file) to verify a non-loopback "
            "agent's TLS admin API.",
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=lambda shown: _print_version() if shown else None,
            help="Print the installed gossipmesh version and exit.",
        ),
    ] = False,
) -> None:
    """gossipmesh: a decentralized service mesh (SWIM membership, no control-plane server)."""
    common.credentials = common.Credentials(token_file, data_dir, ca_file)


def _print_version() -> None:
    from gossipmesh.version import package_version

    sys.stdout.write(f"gossipmesh {package_version()}\n")
    raise typer.Exit(0)


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the installed gossipmesh version (from the package metadata) and its build."""
    from gossipmesh.buildinfo import current_build, describe
    from gossipmesh.version import package_version, python_version

    build = current_build()
    if as_json:
        print_json(
            {
                "version": package_version(),
                "python": python_version(),
                "build": build.kind,
                "stale": list(build.stale),
            }
        )
    else:
        sys.stdout.write(
            f"gossipmesh {package_version()} (Python {python_version()}, {describe(build)} build)\n"
        )


@app.command()
def agent(
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    bind: Annotated[
        str | None, typer.Option(help="UDP+TCP gossip address HOST:PORT (default 0.0.0.0:7946).")
    ] = None,
    advertise: Annotated[str | None, typer.Option(help="Address peers use to reach us.")] = None,
    join: Annotated[
        list[str] | None, typer.Option(help="Seed HOST:PORT to join (repeatable; retried).")
    ] = None,
    admin: Annotated[
        str | None, typer.Option(help="Admin API HOST:PORT (default 127.0.0.1:7947).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="State dir: keyring, known peers, incarnation.")
    ] = None,
    encrypt: Annotated[
        str | None,
        typer.Option(
            help="Base64 AES-256 key (from `gossipmesh keygen`); visible in ps: prefer "
            "--encrypt-file or $GOSSIPMESH_ENCRYPT."
        ),
    ] = None,
    encrypt_file: Annotated[
        str | None, typer.Option(help="File holding the key (`gossipmesh keygen > FILE`).")
    ] = None,
    keyring: Annotated[
        str | None, typer.Option(help="Keyring file: JSON list of base64 keys, primary first.")
    ] = None,
    tls_dir: Annotated[
        str | None,
        typer.Option(
            help="Node credentials dir (node.key, node.crt, roots.pem) from `ca issue-node`."
        ),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Timing preset: lan (default), wan or local.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option(help='Cluster name; clusters never merge (default "default").')
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with the same settings (flags win).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warn or error.")] = None,
    outbound: Annotated[
        str | None,
        typer.Option(help="Proxy listener for local apps, HOST:PORT (default 127.0.0.1:4140)."),
    ] = None,
    inbound: Annotated[
        str | None,
        typer.Option(help="Proxy listener for peer agents, HOST:PORT (default BIND-HOST:4143)."),
    ] = None,
    no_proxy: Annotated[
        bool, typer.Option("--no-proxy", help="Run no proxy (checks and records still run).")
    ] = False,
    inbound_plaintext: Annotated[
        bool,
        typer.Option(
            "--inbound-plaintext",
            help="MIGRATION ONLY: the inbound listener also takes plaintext, unauthenticated "
            "callers (docs/SECURITY.md).",
        ),
    ] = False,
    workload_lifetime_ms: Annotated[
        int | None,
        typer.Option(help="Workload certificate lifetime in ms (default 24 h, renewed at half)."),
    ] = None,
    dataplane: Annotated[
        str | None,
        typer.Option(
            help="What carries the bytes: native (default), haproxy or nginx (docs/DATAPLANES.md)."
        ),
    ] = None,
    proxy_workers: Annotated[
        int | None,
        typer.Option(help="Processes carrying the native proxy (SO_REUSEPORT), 1-64 (default 1)."),
    ] = None,
    rebuild_config: Annotated[
        bool,
        typer.Option(
            "--rebuild-config",
            help="If replica.db is damaged, move it aside, start empty and resync from peers.",
        ),
    ] = False,
    config_sync_interval_ms: Annotated[
        int | None, typer.Option(help="Config anti-entropy period in ms (default 3000).")
    ] = None,
    config_gc_grace_ms: Annotated[
        int | None, typer.Option(help="Keep stable tombstones this long, ms (default 1 h).")
    ] = None,
    enable_fault_injection: Annotated[
        bool,
        typer.Option(
            "--enable-fault-injection",
            help="Serve /v1/faults (drop traffic to chosen peers); loopback admin only.",
        ),
    ] = False,
    access_log: Annotated[
        str | None,
        typer.Option(help="One JSON line per proxied request to FILE, or - for stdout."),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="Export trace spans over OTLP/HTTP to URL (gossipmesh[otel])."),
    ] = None,
    seed: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the gossipmesh agent in the foreground (SIGINT/SIGTERM leave gracefully)."""
    # The one place the CLI runs agent code: it becomes the agent process (agent/launch.py).
    from gossipmesh.agent.launch import exec_agent

    flags = {
        "name": name,
        "bind": bind,
        "advertise": advertise,
        "join": join or None,
        "admin": admin,
        "data_dir": data_dir,
        "encrypt": encrypt,
        "encrypt_file": encrypt_file,
        "keyring": keyring,
        "tls_dir": tls_dir,
        "profile": profile,
        "cluster": cluster,
        "log_level": log_level,
        "seed": seed,
        "outbound": outbound,
        "inbound": inbound,
        "no_proxy": True if no_proxy else None,
        "inbound_plaintext": True if inbound_plaintext else None,
        "workload_lifetime_ms": workload_lifetime_ms,
        "dataplane": dataplane,
        "proxy_workers": proxy_workers,
        "rebuild_config": True if rebuild_config else None,
        "config_sync_interval_ms": config_sync_interval_ms,
        "config_gc_grace_ms": config_gc_grace_ms,
        "enable_fault_injection": True if enable_fault_injection else None,
        "access_log": access_log,
        "otlp_endpoint": otlp_endpoint,
    }
    exec_agent(flags, config)


@app.command()
def members(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """List the members the agent knows: state, services, tags and proxy address."""
    admin = client(agent)
    data = run(admin.members)
    instances = run(lambda: _instances(admin))
    me = run(admin.self_info)
    for m in data:
        m.update(render.member_services(str(m.get("name")), instances))
        if m.get("name") == me.get("name"):  # the catalog dials its own instances directly
            m["proxy"] = (me.get("listeners") or {}).get("inbound")
    if as_json:
        print_json(data)
    else:
        out.print(render.members_table(data))


def _instances(admin: AdminClient) -> list[dict[str, Any]]:
    """The catalog's instances; none when the agent serves no catalog (404)."""
    status, rows = admin.request("GET", "/v1/services")
    return rows if status == 200 and isinstance(rows, list) else []


@app.command()
def join(
    addresses: Annotated[list[str], typer.Argument(help="HOST:PORT of members to join.")],
    agent: AgentOpt = DEFAULT_AGENT,
) -> None:
    """Ask the agent to join the cluster through the given addresses."""
    for address in addresses:
        try:
            Address.parse(address)
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint="ADDRESSES") from exc
    admin = client(agent)
    data = run(lambda: admin.join(addresses))
    errors = data.get("errors") or {}
    for address, ok in (data.get("results") or {}).items():
        why = escape(str(errors.get(address) or "no answer"))
        out.print(f"{escape(address)}: {'[green]joined[/]' if ok else f'[red]{why}[/]'}")
    if not data.get("joined"):
        raise typer.Exit(common.EXIT_FAIL)


@app.command()
def leave(agent: AgentOpt = DEFAULT_AGENT) -> None:
    """Make the agent leave the cluster gracefully and stop."""
    admin = client(agent)
    run(admin.leave)
    out.print("leaving")


@app.command()
def keygen() -> None:
    """Print a new random AES-256 key (base64) for --encrypt-file and `keys install`."""
    from gossipmesh.crypto import generate_key

    sys.stdout.write(generate_key() + "\n")


@app.command()
def status(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Show the agent's health: member counts, health score, dropped-packet counters."""
    admin = client(agent)
    data = run(admin.health)
    if as_json:
        print_json(data)
    else:
        render.status(out, data)


@app.command()
def monitor(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Stream member events as they happen (Ctrl-C to stop; exit 1 when the agent goes away)."""
    admin = client(agent)

    def stream() -> None:
        for line in admin.monitor():
            if not line:
                continue
            if as_json:
                sys.stdout.write(line.decode() + "\n")
                sys.stdout.flush()
            else:
                try:
                    out.print(render.event_line(json.loads(line)))
                except ValueError:
                    continue

    try:
        run(stream)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    # The stream only ends when the agent closes it: it stopped, left or crashed.
    common.fail(f"the agent at {admin.address} closed the event stream (it stopped or left)",
                common.EXIT_FAIL)  # fmt: skip


def _key_op(op: KeyOp, key: str, agent: str, as_json: bool) -> None:
    from gossipmesh.crypto import decode_key, key_id

    if key == "-":  # from stdin: a key on the command line is visible in ps
        key = sys.stdin.readline().strip()
    try:
        kid = key_id(decode_key(key))
    except UsageError as exc:
        raise InputProblem(f"KEY: {exc}") from exc
    admin = client(agent)
    # 409: `use` refused because some members lack the key (nothing was switched).
    data = run(lambda: admin.change_key(op, key), usage_statuses=(400, 409))
    if as_json:
        print_json(data)
    else:
        out.print(f"key {kid}")
        render.keys_result(out, data)
    if data.get("failed"):
        raise typer.Exit(1)


@keys_app.command("list")
def keys_list(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """List the ids of the keys on every live member, and how many nodes hold each."""
    admin = client(agent)
    data = run(admin.keys)
    if as_json:
        print_json(data)
    else:
        render.keys_result(out, data)


@keys_app.command("id")
def keys_id(key: Annotated[str, typer.Argument(help="A key, or - to read it from stdin.")]) -> None:
    """Print the id the admin API shows for KEY (keys themselves are never shown)."""
    from gossipmesh.crypto import decode_key, key_id

    text = sys.stdin.readline().strip() if key == "-" else key
    try:
        sys.stdout.write(key_id(decode_key(text)) + "\n")
    except UsageError as exc:
        common.fail(f"KEY: {exc}", common.EXIT_USAGE)


@keys_app.command("install")
def keys_install(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Install KEY on every member (decrypt-only until `keys use`). KEY - reads stdin."""
    _key_op("install", key, agent, as_json)


@keys_app.command("use")
def keys_use(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Make KEY the primary (encrypting) key on every member; refused, naming them, while some
    member lacks it. KEY - reads stdin."""
    _key_op("use", key, agent, as_json)


@keys_app.command("remove")
def keys_remove(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Remove KEY from every member (it must not be the primary anywhere). KEY - reads stdin."""
    _key_op("remove", key, agent, as_json)


services_cmd.install(app)
doctor_cmd.install(app)
config_cmd.install(app)
shift_cmd.install(app)
stat_cmd.install(app)
demo_cmd.install(app)
ca_cmd.install(app)
simulate.register(app)
tap_cmd.install(app)


def main() -> None:
    app(prog_name="gossipmesh")
