"""``run_agent``: settings -> keyring -> Agent, with signals and exit codes.

SIGHUP re-reads the keyring file and the node credentials (agent/reload.py).

Exit codes: 0 after a graceful leave (SIGINT/SIGTERM or ``POST /v1/leave``); 2 for a usage error
(bad flag or config value); 1 when the agent cannot start (unreadable key file, port in use).
Each failure is one line on stderr.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from gossipmesh.agent.key_sources import build_keyring
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.node_identity import HOW_TO_SECURE, build_identity
from gossipmesh.agent.reload import reload_agent
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.agent.sidecar import Sidecar
from gossipmesh.agent.store import secure_data_dir
from gossipmesh.agent.transport import AgentStartError
from gossipmesh.errors import DataplaneStartError, StoreCorruptError, UsageError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# The soft descriptor limit the agent raises itself to (when the hard limit allows): room for
# tens of thousands of proxied connections, far below what a kernel table or memory would mind.
MAX_DESCRIPTORS = 65536


def raise_descriptor_limit(cap: int = MAX_DESCRIPTORS) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, at most ``cap`` (never lower it); returns
    (soft, hard) after. The default soft limit is often 1,024: 1,100 idle connections to the
    proxy then left the agent unable to serve its admin API (issue 13). The proxy's descriptor
    budget is read from the result (proxy/descriptors.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass  # keep what we have; the budget adapts to it
    return soft, hard


def wall_ms() -> int:
    return int(time.time() * 1000)


def run_agent(flags: Mapping[str, Any], config_file: Path | None = None) -> int:
    try:
        settings = load_settings(flags, config_file)
        if settings.sidecar.enabled and settings.sidecar.dataplane != "native":
            from gossipmesh.dataplane import find_binary  # only these flags load the package

            find_binary(settings.sidecar.dataplane)  # before anything starts: one line, exit 1
        log = EventLog(level=settings.log_level)
        soft, hard = raise_descriptor_limit()
        # Everything this process creates (keyring, token, replica.db and its -wal/-shm, peers)
        # is private from its first byte, whoever creates it (docs/SECURITY.md).
        os.umask(0o077)
        if settings.data_dir is not None:
            secure_data_dir(settings.data_dir, log)
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
    except DataplaneStartError as exc:  # --dataplane haproxy|nginx without its binary
        print(f"gossipmesh agent: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"gossipmesh agent: {exc}", file=sys.stderr)
        return EXIT_FAIL
    log.info("descriptors", soft_limit=soft, hard_limit=hard)
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
    from gossipmesh.agent.replica import ConfigReplica

    s = agent.settings
    replica = ConfigReplica.open(agent, s.data_dir, rebuild=s.rebuild_config,
                                 sync_interval_ms=s.config_sync_interval_ms,
                                 gc_grace_ms=s.config_gc_grace_ms)  # fmt: skip
    agent.config = replica
    install_config_routes(replica)
    if s.enable_fault_injection:
        from gossipmesh.agent.faults import install_faults

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
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        trio.open_signal_receiver(signal.SIGHUP) as hangups,  # reload (agent/reload.py)
    ):
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

            async def on_hangup() -> None:
                async for _ in hangups:
                    agent.log.info("signal", signal="SIGHUP")
                    reload_agent(agent)

            nursery.start_soon(on_signal)
            nursery.start_soon(on_hangup)
            await agent.stopped.wait()
            nursery.cancel_scope.cancel()
