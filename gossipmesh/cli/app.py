"""The ``gossipmesh`` command line. Commands are thin: parse, call the admin API, render, exit.

Exit codes: 0 success; 1 the agent is unreachable or reported a failure; 2 usage error.
The CLI is a client of the admin API and imports no agent internals; the one exception is
``gossipmesh agent``, which runs the agent itself (imported lazily, only for that command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from gossipmesh.cli import ca_cmd, config_cmd, demo_cmd, render, services_cmd, simulate
from gossipmesh.cli.common import DEFAULT_AGENT, AgentOpt, JsonOpt, client, out, print_json, run
from gossipmesh.client import KeyOp

app = typer.Typer(
    name="gossipmesh",
    help="gossipmesh: a decentralized service mesh (SWIM membership, no control-plane server).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="Rotate the cluster's encryption keys (cluster-wide).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


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
        str | None, typer.Option(help="Base64 AES-256 key (from `gossipmesh keygen`).")
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
    seed: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the gossipmesh agent in the foreground (SIGINT/SIGTERM leave gracefully)."""
    from gossipmesh.agent.main import run_agent  # the one place the CLI runs agent code

    flags = {
        "name": name,
        "bind": bind,
        "advertise": advertise,
        "join": join or None,
        "admin": admin,
        "data_dir": data_dir,
        "encrypt": encrypt,
        "keyring": keyring,
        "tls_dir": tls_dir,
        "profile": profile,
        "cluster": cluster,
        "log_level": log_level,
        "seed": seed,
        "outbound": outbound,
        "inbound": inbound,
        "no_proxy": True if no_proxy else None,
        "rebuild_config": True if rebuild_config else None,
        "config_sync_interval_ms": config_sync_interval_ms,
        "config_gc_grace_ms": config_gc_grace_ms,
        "enable_fault_injection": True if enable_fault_injection else None,
    }
    raise typer.Exit(run_agent(flags, config))


@app.command()
def members(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """List the members the agent knows, with their state."""
    admin = client(agent)
    data = run(admin.members)
    if as_json:
        print_json(data)
    else:
        out.print(render.members_table(data))


@app.command()
def join(
    addresses: Annotated[list[str], typer.Argument(help="HOST:PORT of members to join.")],
    agent: AgentOpt = DEFAULT_AGENT,
) -> None:
    """Ask the agent to join the cluster through the given addresses."""
    admin = client(agent)
    data = run(lambda: admin.join(addresses))
    for address, ok in (data.get("results") or {}).items():
        out.print(f"{address}: {'[green]joined[/]' if ok else '[red]no answer[/]'}")
    if not data.get("joined"):
        raise typer.Exit(1)


@app.command()
def leave(agent: AgentOpt = DEFAULT_AGENT) -> None:
    """Make the agent leave the cluster gracefully and stop."""
    admin = client(agent)
    run(admin.leave)
    out.print("leaving")


@app.command()
def keygen() -> None:
    """Print a new random AES-256 key (base64) for --encrypt and `keys install`."""
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
    """Stream member events as they happen (Ctrl-C to stop)."""
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


def _key_op(op: KeyOp, key: str, agent: str, as_json: bool) -> None:
    admin = client(agent)
    data = run(lambda: admin.change_key(op, key))
    if as_json:
        print_json(data)
    else:
        render.keys_result(out, data)
    if data.get("failed"):
        raise typer.Exit(1)


@keys_app.command("list")
def keys_list(agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """List the keys installed on every live member, and how many nodes hold each."""
    admin = client(agent)
    data = run(admin.keys)
    if as_json:
        print_json(data)
    else:
        render.keys_result(out, data)


@keys_app.command("install")
def keys_install(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Install KEY on every member (decrypt-only until `keys use`)."""
    _key_op("install", key, agent, as_json)


@keys_app.command("use")
def keys_use(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Make KEY the primary (encrypting) key on every member."""
    _key_op("use", key, agent, as_json)


@keys_app.command("remove")
def keys_remove(key: str, agent: AgentOpt = DEFAULT_AGENT, as_json: JsonOpt = False) -> None:
    """Remove KEY from every member (it must not be the primary anywhere)."""
    _key_op("remove", key, agent, as_json)


services_cmd.install(app)
config_cmd.install(app)
demo_cmd.install(app)
ca_cmd.install(app)
simulate.register(app)


def main() -> None:
    app(prog_name="gossipmesh")
