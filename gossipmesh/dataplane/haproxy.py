"""HAProxy as the sidecar's data plane: started, fed through its runtime API, reloaded seamlessly.

Theory of operation
-------------------
HAProxy runs as ``haproxy -W -S RUN/master.sock -f RUN/haproxy.cfg``: a master that holds the
listening sockets and a worker that serves. Each coalesced snapshot is laid out
(``model.layout``, one server per dest) and compared with the layout HAProxy runs
(``diff.classify``):

- **Endpoint changes** (a dest added or removed, a weight, an address) become runtime-API
  commands to the current worker (``haproxy_api.server_commands``): ``add server`` + ``enable
  health`` + ``enable server``; ``set server … weight``; ``set server … addr``; a removal sets
  the server to ``maint`` (no new request goes there; requests in flight finish) and it is deleted
  (``del server``) as soon as HAProxy agrees that nothing is attached to it any more (tried after
  every change and every second). A dest that comes back before its deletion is revived in
  place. No reload, so the worker, its connections, counters and health state stay.
- **Structural changes** (routes, service settings, a backend appearing or going) need a new
  configuration: it is rendered with every current server in it, checked with ``haproxy -c``
  (refused: logged and counted, the running config stays), moved into place and applied with
  the master CLI's ``reload``: the master starts a new worker on the same listening sockets and
  the old one finishes its requests (``-x`` / fd passing: no connection is refused). The supervisor
  waits until ``show proc`` shows the reload done.

A runtime command HAProxy rejects is a bug or a race we did not foresee; it is logged and the
change falls back to a reload, which converges from whatever state the worker is in.

Metrics: ``@1 show stat`` at scrape time, turned into the native proxy's families
(``stats.haproxy_metrics``). They restart from zero after a reload (a new worker), which
Prometheus counters tolerate.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import trio

from gossipmesh.config.schema import RouteConfig
from gossipmesh.dataplane import haproxy_api as api
from gossipmesh.dataplane.diff import ServerOp, classify
from gossipmesh.dataplane.haproxy_config import (
    CONFIG_FILE,
    MASTER_SOCKET,
    Plan,
    Rendered,
    backend_name,
    render,
)
from gossipmesh.dataplane.model import Layout, layout
from gossipmesh.dataplane.plane import ExternalPlane, Log, PlaneSettings
from gossipmesh.dataplane.process import Child, DataplaneStartError, check_command
from gossipmesh.dataplane.stats import haproxy_metrics
from gossipmesh.proxy.table import RouteTable

RELOAD_TIMEOUT_S = 15.0
PURGE_INTERVAL_S = 1.0


class HAProxyPlane(ExternalPlane):
    engine = "haproxy"

    def __init__(self, settings: PlaneSettings, log: Log, counters: Counter[str]) -> None:
        super().__init__(settings, log, counters)
        self.layout: Layout | None = None
        self.generation = 0
        self.worker_pid: int | None = None
        # Servers set to maint, waiting for ``del server``: (backend name, dest).
        self.maint: set[tuple[str, str]] = set()

    @property
    def master_socket(self) -> str:
        return str(self.run_dir / MASTER_SOCKET)

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["worker_pid"] = self.worker_pid
        out["skipped_endpoints"] = list(self.layout.skipped) if self.layout else []
        out["servers_awaiting_delete"] = len(self.maint)
        return out

    async def metrics(self) -> bytes:
        if self.layout is None or self.child is None or not self.child.running:
            return b""
        try:
            text = await api.command(self.master_socket, "@1 show stat")
        except (OSError, trio.TooSlowError):
            return b""
        return haproxy_metrics(api.parse_stat_csv(text), self.layout, self.settings.local)

    # ---- configuration ------------------------------------------------------------------

    def _layout(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> Layout:
        return layout(table, routes, unique_dests=True)

    def _render(self, lay: Layout) -> Rendered:
        s = self.settings
        plan = Plan(lay, s.local, s.outbound, s.inbound, str(self.run_dir), self.generation,
                    s.workers)  # fmt: skip
        rendered = render(plan)
        self.left_out = rendered.left_out
        return rendered

    async def _write_checked(self, lay: Layout) -> str | None:
        """Write the next configuration and check it; None when it is in place, else why not."""
        self.generation += 1
        rendered = self._render(lay)
        for name, text in rendered.files.items():
            if name != CONFIG_FILE:
                (self.run_dir / name).write_text(text)
        candidate = self.run_dir / (CONFIG_FILE + ".next")
        candidate.write_text(rendered.files[CONFIG_FILE])
        ok, output = await check_command([self.settings.binary, "-c", "-q", "-f", str(candidate)])
        if not ok:
            return output or "haproxy -c failed"
        candidate.replace(self.config_path)
        self._remove_old_maps()
        return None

    def _remove_old_maps(self) -> None:
        keep = {f"services-{self.generation}.map", f"services-{self.generation - 1}.map"}
        for path in self.run_dir.glob("services-*.map"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # ---- lifecycle ----------------------------------------------------------------------

    async def _start(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        lay = self._layout(table, routes)
        problem = await self._write_checked(lay)
        if problem is not None:
            raise DataplaneStartError(f"--dataplane haproxy: the generated config fails: {problem}")
        await self._spawn()
        self.layout = lay
        self.maint.clear()
        self.applied_version = table.version

    async def _spawn(self) -> None:
        Path(self.master_socket).unlink(missing_ok=True)
        argv = [self.settings.binary, "-W", "-S", f"{self.master_socket},mode,600",
                "-f", str(self.config_path)]  # fmt: skip
        self.child = Child(argv, self.run_dir / "haproxy.log")
        self.child.start()
        await self.wait_started(self._worker_up, "the HAProxy worker")
        self.log.info("dataplane_start", engine="haproxy", pid=self.child.pid,
                      worker=self.worker_pid, config=str(self.config_path))  # fmt: skip

    async def _worker_up(self) -> bool:
        procs = api.parse_show_proc(await api.command(self.master_socket, "show proc"))
        worker = api.current_worker(procs)
        self.worker_pid = worker.pid if worker is not None else None
        return worker is not None

    async def _restart(self) -> None:
        if self.child is not None:
            self.child.close()
        await self._spawn()
        self.maint.clear()  # the new worker read the file: it has exactly the applied servers

    # ---- applying -----------------------------------------------------------------------

    async def _apply(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        lay = self._layout(table, routes)
        local = self.settings.local
        change = classify(self.layout, lay, local, local)
        if change.reload:
            self.log.info(
                "dataplane_reload", engine="haproxy", why="; ".join(change.reload_reasons)
            )
            await self._reload(lay, table.version)
        elif change.ops:
            if await self._runtime(change.ops):
                self.layout = lay
                self.applied_version = table.version
            else:
                await self._reload(lay, table.version)
        else:
            self.layout = lay
            self.applied_version = table.version
        await self._purge()

    async def _runtime(self, ops: tuple[ServerOp, ...]) -> bool:
        """Carry out ``ops`` through the runtime API; False (after logging) if HAProxy refused."""
        assert self.layout is not None
        for op in ops:
            name = backend_name(op.backend)
            backend = self.layout.backend(op.backend)
            assert backend is not None  # classify only returns ops for backends both layouts have
            revive = (name, op.server.dest) in self.maint
            for line in api.server_commands(op, backend.settings, revive):
                try:
                    problem = api.command_failed(await api.command(self.master_socket, line))
                except (OSError, trio.TooSlowError) as exc:
                    problem = f"runtime API unreachable: {exc}"
                if problem is not None:
                    self.log.warn("dataplane_runtime_refused", engine="haproxy", command=line,
                                  answer=problem)  # fmt: skip
                    self.counters["dataplane.runtime_refused"] += 1
                    return False
            if op.kind == "remove":
                self.maint.add((name, op.server.dest))
            elif op.kind == "add":
                self.maint.discard((name, op.server.dest))
            self.counters["dataplane.runtime_ops"] += 1
        return True

    async def _purge(self) -> None:
        """Delete servers in maint that HAProxy now lets go of."""
        for name, dest in sorted(self.maint):
            try:
                answer = await api.command(self.master_socket, api.delete_command(name, dest))
            except (OSError, trio.TooSlowError):
                return
            if api.command_failed(answer) is None or "No such server" in answer:
                self.maint.discard((name, dest))

    async def tick(self) -> None:
        if self.maint:
            await self._purge()

    async def _reload(self, lay: Layout, version: int) -> None:
        problem = await self._write_checked(lay)
        if problem is not None:
            self.refused("haproxy -c", problem)
            return
        try:
            before = api.parse_show_proc(await api.command(self.master_socket, "show proc"))
            master = next(p for p in before if p.kind == "master")
            await api.command(self.master_socket, "reload")
            done = await self._reloaded(master.reloads, master.failed)
        except (OSError, trio.TooSlowError, StopIteration) as exc:
            self.refused("reload", f"master CLI: {exc!r}")
            return
        if done is not None:
            self.refused("reload", done)
            return
        self.counters["dataplane.reloads"] += 1
        self.layout = lay
        self.maint.clear()
        self.applied_version = version
        self.last_error = None

    async def _reloaded(self, reloads: int, failed: int) -> str | None:
        """Wait for the master to finish the reload; None on success, else why it did not."""
        with trio.move_on_after(RELOAD_TIMEOUT_S):
            while True:
                await trio.sleep(0.05)
                try:
                    procs = api.parse_show_proc(await api.command(self.master_socket, "show proc"))
                except OSError:
                    continue  # the master re-executes itself: its socket comes back
                master = next((p for p in procs if p.kind == "master"), None)
                if master is None or master.reloads <= reloads:
                    continue
                if master.failed > failed:
                    return f"the new worker failed to start: {self._tail()}"
                worker = api.current_worker(procs)
                if worker is not None:
                    self.worker_pid = worker.pid
                    return None
        return f"not done after {RELOAD_TIMEOUT_S:g} s: {self._tail()}"

    def _tail(self) -> str:
        return self.child.log_tail() if self.child is not None else ""


__all__ = ["HAProxyPlane"]
