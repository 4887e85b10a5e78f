"""nginx as the sidecar's data plane: every change a new file, tested, then a graceful reload.

Theory of operation
-------------------
nginx runs as the agent's child with its own prefix, pid file, temp directories and sockets in
the run directory (``nginx -p RUN -c RUN/nginx.conf``, ``daemon off`` in the file). Each
coalesced snapshot is rendered (``nginx_config.render``); an identical text changes nothing.
Otherwise the text goes to ``nginx.conf.next`` and ``nginx -t`` checks it; a failing check is
logged, counted and shown, and nginx keeps serving the old file (it is never touched). A passing
file replaces ``nginx.conf`` and the master gets ``SIGHUP`` (what ``nginx -s reload`` sends, minus
the extra process and the pid-file lookup): it starts workers with the new configuration and
lets the old ones finish their requests. The reload is done when a new worker pid appears.

Unix sockets: nginx does not remove a socket file when a reload drops its listener, and a later
bind to that path would then fail; socket files the next configuration binds that the running
one does not are removed before the reload, and all of them before a (re)start.

Metrics: the ``stub_status`` page on ``RUN/status.sock`` at scrape time (``stats.py``).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from gossipmesh.config.schema import RouteConfig
from gossipmesh.dataplane.model import layout
from gossipmesh.dataplane.nginx_config import (
    CONFIG_FILE,
    STATUS_PATH,
    STATUS_SOCKET,
    Plan,
    render,
)
from gossipmesh.dataplane.plane import ExternalPlane, Log, PlaneSettings
from gossipmesh.dataplane.process import Child, DataplaneStartError, check_command
from gossipmesh.dataplane.stats import nginx_metrics, parse_stub_status
from gossipmesh.proxy.table import RouteTable

RELOAD_TIMEOUT_S = 15.0
OLD_WORKERS_WAIT_S = 1.0
STATUS_TIMEOUT_S = 5.0
MAX_STATUS_BYTES = 65536
_UNIX_LISTEN = re.compile(r"^\s*listen unix:(\S+);", re.MULTILINE)


def worker_pids(master: int) -> set[int]:
    """The master's children (its workers, and the cache processes if any)."""
    out: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{master}/task"):
            with open(f"/proc/{master}/task/{tid}/children") as f:
                out.update(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


async def unix_http_get(path: str, target: str) -> tuple[int, bytes]:
    """A tiny HTTP/1.0 GET over a unix socket (nginx's status page)."""
    try:
        return await _get(path, target)
    except trio.BrokenResourceError as exc:
        raise OSError(f"{path}: {exc}") from exc


async def _get(path: str, target: str) -> tuple[int, bytes]:
    with trio.fail_after(STATUS_TIMEOUT_S):
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while len(data) < MAX_STATUS_BYTES:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, body


class NginxPlane(ExternalPlane):
    engine = "nginx"

    def __init__(self, settings: PlaneSettings, log: Log, counters: Counter[str]) -> None:
        super().__init__(settings, log, counters)
        self.text: str | None = None  # the configuration nginx runs

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def status_socket(self) -> str:
        return str(self.run_dir / STATUS_SOCKET)

    def status(self) -> dict[str, Any]:
        out = super().status()
        pid = self.child.pid if self.child is not None else None
        out["worker_pids"] = sorted(worker_pids(pid)) if pid else []
        return out

    async def metrics(self) -> bytes:
        if self.child is None or not self.child.running:
            return b""
        try:
            status, body = await unix_http_get(self.status_socket, STATUS_PATH)
        except (OSError, trio.TooSlowError):
            return b""
        if status != 200:
            return b""
        return nginx_metrics(parse_stub_status(body.decode(errors="replace")))

    # ---- configuration ------------------------------------------------------------------

    def _render(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> str:
        s = self.settings
        user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
        plan = Plan(layout(table, routes), s.local, s.outbound, s.inbound, str(self.run_dir),
                    s.workers, user)  # fmt: skip
        rendered = render(plan)
        self.left_out = rendered.left_out
        return rendered.text

    async def _check(self, text: str) -> str | None:
        """Write ``text`` beside the live file and ``nginx -t`` it; None if it passed."""
        (self.run_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
        candidate = self.run_dir / (CONFIG_FILE + ".next")
        candidate.write_text(text)
        ok, output = await check_command(
            [self.settings.binary, "-t", "-q", "-p", f"{self.run_dir}/", "-c", str(candidate)]
        )
        return None if ok else (output or "nginx -t failed")

    def _clear_sockets(self, text: str, keep: str | None) -> None:
        """Remove the socket files ``text`` binds, except those ``keep`` (running) binds too."""
        running = set(_UNIX_LISTEN.findall(keep)) if keep else set()
        for path in set(_UNIX_LISTEN.findall(text)) - running:
            Path(path).unlink(missing_ok=True)

    # ---- lifecycle ----------------------------------------------------------------------

    async def _start(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        text = self._render(table, routes)
        problem = await self._check(text)
        if problem is not None:
            raise DataplaneStartError(f"--dataplane nginx: the generated config fails: {problem}")
        (self.run_dir / (CONFIG_FILE + ".next")).replace(self.config_path)
        self.text = text
        self.applied_version = table.version
        await self._spawn()

    async def _spawn(self) -> None:
        assert self.text is not None
        self._clear_sockets(self.text, None)
        argv = [self.settings.binary, "-p", f"{self.run_dir}/", "-c", str(self.config_path),
                "-e", str(self.run_dir / "error.log")]  # fmt: skip
        self.child = Child(argv, self.run_dir / "nginx.log")
        self.child.start()
        await self.wait_started(self._serving, "nginx")
        self.log.info("dataplane_start", engine="nginx", pid=self.child.pid,
                      config=str(self.config_path))  # fmt: skip

    async def _serving(self) -> bool:
        status, _ = await unix_http_get(self.status_socket, STATUS_PATH)
        return status == 200

    async def _restart(self) -> None:
        if self.child is not None:
            self.child.close()
        await self._spawn()

    async def _apply(self, table: RouteTable, routes: tuple[RouteConfig, ...]) -> None:
        text = self._render(table, routes)
        if text == self.text:
            self.applied_version = table.version
            return
        problem = await self._check(text)
        if problem is not None:
            self.refused("nginx -t", problem)
            return
        assert self.child is not None and self.child.proc is not None
        master = self.child.proc.pid
        before = worker_pids(master)
        self._clear_sockets(text, self.text)
        (self.run_dir / (CONFIG_FILE + ".next")).replace(self.config_path)
        self.child.proc.send_signal(signal.SIGHUP)
        with trio.move_on_after(RELOAD_TIMEOUT_S):
            while not worker_pids(master) - before:
                await trio.sleep(0.02)
            # The old workers stop accepting when the master tells them to leave, just after
            # the new ones start; give them a moment (one finishing a long request may stay).
            with trio.move_on_after(OLD_WORKERS_WAIT_S):
                while worker_pids(master) & before:
                    await trio.sleep(0.02)
            self.text = text
            self.applied_version = table.version
            self.counters["dataplane.reloads"] += 1
            self.last_error = None
            return
        self.refused("reload", f"no new worker after {RELOAD_TIMEOUT_S:g} s: {self._error_tail()}")

    def _error_tail(self) -> str:
        try:
            lines = (self.run_dir / "error.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(ln for ln in lines[-3:])


__all__ = ["NginxPlane", "unix_http_get", "worker_pids"]
