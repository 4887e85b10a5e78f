"""``run_agent``: settings -> keyring -> Agent, with signals and exit codes.

Exit codes: 0 after a graceful leave (SIGINT/SIGTERM or ``POST /v1/leave``); 2 for a usage error
(bad flag or config value); 1 when the agent cannot start (unreadable key file, port in use).
Each failure is one line on stderr.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from gossipmesh.agent.log import EventLog
from gossipmesh.agent.node_identity import HOW_TO_SECURE, build_identity
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import AgentSettings, load_settings
from gossipmesh.agent.sidecar import Sidecar
from gossipmesh.agent.transport import AgentStartError
from gossipmesh.crypto import Keyring, cluster_key, decode_key, load_keyring_file, save_keyring_file
from gossipmesh.errors import StoreCorruptError, UsageError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def wall_ms() -> int:
    return int(time.time() * 1000)


def build_keyring(settings: AgentSettings, log: EventLog) -> tuple[Keyring, Path | None, bool]:
    """The ring, the file that persists it (None: nothing to persist), and whether a real key was
    given (False: the playground's key derived from the cluster name).

    ``--keyring FILE`` wins: it must exist and is rewritten on rotation. Otherwise, with a data dir,
    ``data-dir/keyring.json`` holds the ring once ``--encrypt`` created it (a later ``--encrypt`` is
    installed into it, never replaces a rotated ring). Without any key (a loopback playground only:
    ``build_identity`` refuses anything else), packets are sealed with a key derived from the
    cluster name: cluster separation, no secrecy.
    """
    if settings.keyring is not None:
        ring = load_keyring_file(settings.keyring)
        if settings.encrypt is not None:
            ring.install(decode_key(settings.encrypt))
            save_keyring_file(settings.keyring, ring)
        return ring, settings.keyring, True
    path = settings.data_dir / "keyring.json" if settings.data_dir is not None else None
    if path is not None and path.exists():
        ring = load_keyring_file(path)
        if settings.encrypt is not None and decode_key(settings.encrypt) not in ring:
            ring.install(decode_key(settings.encrypt))
            save_keyring_file(path, ring)
        return ring, path, True
    if settings.encrypt is not None:
        ring = Keyring([decode_key(settings.encrypt)])
        if path is not None:
            save_keyring_file(path, ring)
        return ring, path, True
    return Keyring([cluster_key(settings.cluster)]), None, False


def run_agent(flags: Mapping[str, Any], config_file: Path | None = None) -> int:
    try:
        settings = load_settings(flags, config_file)
        log = EventLog(level=settings.log_level)
        keyring, keyring_path, has_key = build_keyring(settings, log)
        identity = build_identity(settings, has_key=has_key, now_ms=wall_ms())
        agent = Agent(settings, keyring=keyring, keyring_path=keyring_path, log=log,
                      identity=identity)  # fmt: skip
        _build_control_plane(agent)  # before the data plane: it reads ``agent.config``
        sidecar = _build_sidecar(agent)
    except StoreCorruptError as exc:
        detail = str(exc).split("; restart with")[0]
        print(f"gossipmesh agent: refusing to start: {detail}; restart with --rebuild-config to "
              "move it aside and resync from peers", file=sys.stderr)  # fmt: skip
        return EXIT_FAIL
    except UsageError as exc:
        print(f"gossipmesh agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gossipmesh agent: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if agent.identity.playground:
        log.warn("playground", detail="no gossip key or no node certificate: this agent only "
                 "listens on loopback and anyone on this host can join or rewrite its mesh; "
                 + HOW_TO_SECURE)  # fmt: skip
    try:
        trio.run(_main, agent, sidecar)
    except BaseException as exc:
        start_error = _find(exc, AgentStartError)
        if start_error is not None:
            print(f"gossipmesh agent: {start_error}", file=sys.stderr)
            return EXIT_FAIL
        if _find(exc, KeyboardInterrupt) is not None:
            return EXIT_OK
        raise
    return EXIT_OK


def _build_control_plane(agent: Agent) -> None:
    """The config replica (``agent.config``), its admin routes, and fault injection if asked.
    Raises StoreCorruptError when replica.db is damaged and --rebuild-config was not given."""
    from gossipmesh.agent.config_api import install_config_routes
    from gossipmesh.agent.faults import install_faults
    from gossipmesh.agent.replica import ConfigReplica

    s = agent.settings
    replica = ConfigReplica.open(agent, s.data_dir, rebuild=s.rebuild_config,
                                 sync_interval_ms=s.config_sync_interval_ms,
                                 gc_grace_ms=s.config_gc_grace_ms)  # fmt: skip
    agent.config = replica
    install_config_routes(replica)
    if s.enable_fault_injection:
        install_faults(agent)
        agent.log.warn("fault_injection_enabled", admin=str(s.admin))


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` inside ``exc`` (trio nurseries wrap errors in exception groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _build_sidecar(agent: Agent) -> Sidecar:
    """Health checks, node record and proxy. Built before ``agent.run`` so its member listener,
    user-message handler and stream kind are registered before the first packet arrives. The
    config replica, when the agent has one, is the sidecar's ``ConfigSource``."""
    return Sidecar(agent, agent.settings.sidecar, config=getattr(agent, "config", None))


async def _main(agent: Agent, sidecar: Sidecar | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            from gossipmesh.agent.replica import ConfigReplica

            if isinstance(agent.config, ConfigReplica):
                await nursery.start(agent.config.run)
            if sidecar is not None:
                await nursery.start(sidecar.run)

            async def on_signal() -> None:
                async for signum in signals:
                    agent.log.info("signal", signal=signal.Signals(signum).name)
                    nursery.start_soon(agent.leave_and_stop)
                    # A second signal means "now": stop without waiting for the flush.
                    async for _ in signals:
                        agent.stop()
                        return

            nursery.start_soon(on_signal)
            await agent.stopped.wait()
            nursery.cancel_scope.cancel()
