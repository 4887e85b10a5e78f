"""An external data plane as the sidecar sees it: a supervised proxy process fed routing tables.

Theory of operation
-------------------
The sidecar hands every new routing snapshot to ``update(table, routes)`` (sync, from its worker
task: it only keeps the newest one and wakes the applier). The applier waits ``COALESCE_S`` after
the first wake, so a burst of changes (a partition healing, a rolling deploy) is applied once,
from the newest snapshot, then asks the engine (``_apply``) to move from what it applied last to
that. What the engine does is its own: HAProxy classifies the change (``diff.classify``) and uses
its runtime API or a seamless reload; nginx writes, tests and reloads. A change the engine refuses
(a config check that fails) is logged, counted (``dataplane.apply_failures``) and shown in
status; the engine keeps serving what it had, and the next snapshot is tried again from there.

The process is the agent's child (``process.Child``). ``run`` starts it with the current
snapshot, reports started once it serves, and stops it on the way out, whatever the way out
(leave, agent exit, cancellation). If it exits on its own it is restarted from the last applied
configuration after a backoff (1 s doubling to 30 s), counted as ``dataplane.restarts``.

``UNSUPPORTED`` lists, per engine, what the native proxy does that the engine's configuration
cannot say; the agent logs one warning per line at start and shows them in ``/v1/health``
(``gossipmesh status``). docs/DATAPLANES.md explains each.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from gossipmesh.config.schema import RouteConfig
from gossipmesh.dataplane.model import LocalInstance
from gossipmesh.dataplane.process import Child, DataplaneStartError
from gossipmesh.proxy.table import RouteTable

COALESCE_S = 0.2
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
START_TIMEOUT_S = 15.0
TICK_S = 1.0
# Unix socket paths must fit sun_path (108 bytes); the longest we make is RUN/e99999.sock.
MAX_RUN_DIR_CHARS = 90

UNSUPPORTED: dict[str, tuple[str, ...]] = {
    "haproxy": (
        "retry budget (retry.budget_percent, budget_min_per_s): every failed try is retried up to"
        " retry.attempts",
        "whole-request deadline (timeouts.request_ms): each try is bounded by per_try_ms only",
        "peak_ewma balancing: leastconn instead",
        "outlier max_ejected_percent and max_ejection_ms: a server marked down after"
        " consecutive_failures errors returns after one good check base_ejection_ms later",
        "retry.on_status other than 401 403 404 408 425 500 501 502 503 504",
        "traceparent: passed through unchanged, no span of its own",
        "two instances of one service at the same ADDRESS:PORT on different nodes: one is used",
        "an empty split destination's share goes to the next destination, not to all by weight",
    ),
    "nginx": (
        "endpoint changes reload nginx: open-source nginx has no runtime API",
        "each request to a remote endpoint passes through nginx twice (the mesh hop's"
        " x-gossipmesh-dest is added per chosen server by an internal hop)",
        "header match `present`: means present and not empty",
        "retry budget (retry.budget_percent, budget_min_per_s): every failed try is retried up to"
        " retry.attempts",
        "peak_ewma balancing: least_conn instead",
        "circuit breaker max_pending and max_requests: only max_connections, per server and"
        " worker (max_conns)",
        "outlier max_ejected_percent and max_ejection_ms: max_fails/fail_timeout instead",
        "retry.on_status other than 403 404 429 500 502 503 504",
        "traceparent: passed through unchanged, no span of its own",
        "per-service request metrics: /metrics has stub_status totals only",
    ),
}


@dataclass(frozen=True, slots=True)
class PlaneSettings:
    """What an external plane needs that does not change while the agent runs."""

    engine: str
    binary: str
    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    local: tuple[LocalInstance, ...]
    data_dir: Path | None  # None: a private temporary directory
    workers: int = 0  # nginx worker processes / HAProxy threads; 0: the engine's default


class Log(Protocol):
    def info(self, event: str, **fields: Any) -> None: ...

    def warn(self, event: str, **fields: Any) -> None: ...

    def error(self, event: str, **fields: Any) -> None: ...


def make_run_dir(data_dir: Path | None, engine: str) -> tuple[Path, bool]:
    """(the directory the engine's files and sockets live in, whether we must remove it)."""
    if data_dir is not None:
        run = data_dir / f"dataplane-{engine}"
        if len(str(run)) <= MAX_RUN_DIR_CHARS:
            run.mkdir(mode=0o700, parents=True, exist_ok=True)
            return run, False
    return Path(tempfile.mkdtemp(prefix=f"gossipmesh-{engine}-")), True


class ExternalPlane:
    """The common part: coalescing, lifecycle, restarts, counters and status."""

    engine = "external"

    def __init__(self, settings: PlaneSettings, log: Log, counters: Counter[str]) -> None:
        self.settings = settings
        self.log = log
        self.counters = counters
        self.run_dir, self._remove_run_dir = make_run_dir(settings.data_dir, settings.engine)
        self.child: Child | None = None
        self.last_error: str | None = None
        self.left_out: tuple[str, ...] = ()
        self.applied_version: int | None = None
        self._pending: tuple[RouteTable, tuple[RouteConfig, ...]] = (RouteTable(), ())
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._stopping = False

    # ---- what the sidecar calls -------------------------------------------------------------

    def update(self, table: RouteTable, routes: Iterable[RouteConfig]) -> None:
        """Sync: remember the newest snapshot; the applier takes it within ``COALESCE_S``."""
        self._pending = (table, tuple(routes))
        self._wake.set()

    async def run(
        self, *, task_status: trio.TaskStatus[ExternalPlane] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with self._lock:
                await self._start(*self._pending)
            for feature in UNSUPPORTED.get(self.engine, ()):
                self.log.warn("dataplane_unsupported", engine=self.engine, feature=feature)
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                nursery.start_soon(self._ticker)
                while True:
                    await self._wake.wait()
                    await trio.sleep(COALESCE_S)
                    self._wake = trio.Event()
                    async with self._lock:
                        table, routes = self._pending
                        failures = self.counters["dataplane.apply_failures"]
                        await self._apply(table, routes)
                        if (
                            self.applied_version == table.version
                            and self.counters["dataplane.apply_failures"] == failures
                        ):
                            self.last_error = None  # what it runs now is what it was given
        finally:
            self._stopping = True
            with trio.CancelScope(shield=True):
                await self._stop()

    def status(self) -> dict[str, Any]:
        child = self.child
        return {
            "engine": self.engine,
            "binary": self.settings.binary,
            "pid": child.pid if child is not None else None,
            "running": bool(child and child.running),
            "run_dir": str(self.run_dir),
            "applied_version": self.applied_version,
            "reloads": self.counters.get("dataplane.reloads", 0),
            "runtime_ops": self.counters.get("dataplane.runtime_ops", 0),
            "apply_failures": self.counters.get("dataplane.apply_failures", 0),
            "restarts": self.counters.get("dataplane.restarts", 0),
            "last_error": self.last_error,
            "left_out": list(self.left_out),
            "unsupported": list(UNSUPPORTED.get(self.engine, ())),
        }

    async def metrics(self) -> bytes:
        """Prometheus text for the engine's counters (empty when it has none to give)."""
        return b""

    # ---- engines override these ---------------------------------------------------------

    async def _start(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        raise NotImplementedError

    async def _apply(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        raise NotImplementedError

    async def _restart(self) -> None:
        """Start again from the last applied configuration (the process exited)."""
        raise NotImplementedError

    async def tick(self) -> None:
        """Housekeeping every ``TICK_S`` (under the same lock as changes)."""

    # ---- shared -------------------------------------------------------------------------

    def refused(self, what: str, detail: str) -> None:
        """A change the engine would not take: logged, counted, shown; the old config stays."""
        self.counters["dataplane.apply_failures"] += 1
        self.last_error = f"{what}: {detail}"
        self.log.error("dataplane_apply_failed", engine=self.engine, what=what, detail=detail)

    async def wait_started(self, ready: Any, what: str) -> None:
        """Poll ``ready()`` (async, truthy when serving) until it holds, or fail naming why."""
        assert self.child is not None
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                if not self.child.running:
                    raise DataplaneStartError(
                        f"--dataplane {self.engine}: {self.settings.binary} exited at start:"
                        f" {self.child.log_tail() or 'no output'}"
                    )
                try:
                    if await ready():
                        return
                except OSError:
                    pass
                await trio.sleep(0.05)
        raise DataplaneStartError(
            f"--dataplane {self.engine}: {what} not ready after {START_TIMEOUT_S:g} s:"
            f" {self.child.log_tail() or 'no output'}"
        )

    async def _watch(self) -> None:
        failures = 0
        while True:
            child = self.child
            if child is None:
                return
            code = await child.wait()
            if self._stopping:
                return
            if child is not self.child:
                continue  # replaced meanwhile: watch the new one
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            self.counters["dataplane.restarts"] += 1
            self.last_error = f"{self.engine} exited with status {code}: {child.log_tail()}"
            self.log.error(
                "dataplane_exited", engine=self.engine, status=code, restart_in_s=delay,
                output=child.log_tail(),
            )  # fmt: skip
            await trio.sleep(delay)
            async with self._lock:
                try:
                    await self._restart()
                    failures = 0
                    self.last_error = None
                except (DataplaneStartError, OSError) as exc:
                    failures += 1
                    self.last_error = str(exc)
                    self.log.error("dataplane_restart_failed", engine=self.engine, error=str(exc))

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(TICK_S)
            if self.child is not None and self.child.running:
                async with self._lock:
                    await self.tick()

    async def _stop(self) -> None:
        if self.child is not None:
            await self.child.stop()
            self.log.info("dataplane_stopped", engine=self.engine)
        if self._remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


__all__ = [
    "COALESCE_S",
    "UNSUPPORTED",
    "ExternalPlane",
    "Log",
    "PlaneSettings",
    "make_run_dir",
]
