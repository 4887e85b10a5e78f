"""The external proxy as the agent's child: started, watched, stopped, never left behind.

Theory of operation
-------------------
The child is started with ``subprocess.Popen`` in the trio thread itself, not through
``trio.lowlevel.open_process`` (which forks from a worker thread): the child asks the kernel for
``SIGTERM`` when its parent *thread* dies (``PR_SET_PDEATHSIG``), and the trio thread lives as
long as the agent. So an agent killed with ``SIGKILL`` still takes its HAProxy or nginx master
with it, and both masters stop their workers on ``SIGTERM``. Waiting uses a pidfd (Linux 5.3):
``wait_readable`` on it, no thread and no polling.

``stop`` sends ``SIGTERM``, waits ``grace_s``, then ``SIGKILL``s; it is called from ``finally``
blocks under a shielded cancel scope, so a cancelled agent still stops its child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from functools import partial
from pathlib import Path

import trio

from gossipmesh.errors import DataplaneStartError

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 5.0


def find_binary(engine: str, override: str | None = None) -> str:
    """The path of ``engine``'s binary, or DataplaneStartError saying how to install it."""
    found = shutil.which(override or engine)
    if found is None:
        package = {"haproxy": "haproxy", "nginx": "nginx-light"}.get(engine, engine)
        raise DataplaneStartError(
            f"--dataplane {engine}: no {override or engine} binary on PATH"
            f" (install it, e.g. `apt-get install {package}`, or use --dataplane native)"
        )
    return found


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before prctl took effect: then don't outlive it.
    if os.getppid() != parent:
        os._exit(1)


class Child:
    """One child process; its output goes to ``log_path`` (None: the agent's own stdout and
    stderr). ``pass_fds``: descriptors it inherits (a proxy worker's control channel).
    ``own_session``: not in the agent's process group, so a terminal's Ctrl-C reaches only the
    agent, which then stops the child itself."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path | None,
        pass_fds: tuple[int, ...] = (),
        own_session: bool = False,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.pass_fds = pass_fds
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with contextlib.ExitStack() as stack:
            log = None if self.log_path is None else stack.enter_context(open(self.log_path, "ab"))
            self.proc = subprocess.Popen(  # noqa: S603 - argv is ours, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
                close_fds=True,
                pass_fds=self.pass_fds,
                start_new_session=self.own_session,
            )
        self._pidfd = os.pidfd_open(self.proc.pid)

    async def wait(self) -> int:
        """Until the child exits; its exit status."""
        assert self.proc is not None and self._pidfd is not None
        while self.proc.poll() is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self.proc.returncode

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(grace_s):
                await self.wait()
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with trio.move_on_after(grace_s):
                    await self.wait()
        self.close()

    def close(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the child wrote, joined on one line (for one-line errors)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
        # HAProxy's [ALERT] and nginx's [emerg] lines say what went wrong; notices do not.
        alerts = [ln for ln in kept if "[ALERT]" in ln or "[emerg]" in ln]
        return " | ".join((alerts or kept)[-lines:])


async def check_command(argv: list[str], timeout_s: float = 30.0) -> tuple[bool, str]:
    """Run a config check (``haproxy -c``, ``nginx -t``): (passed, its output on one line)."""
    with trio.move_on_after(timeout_s) as scope:
        done = await trio.run_process(
            argv, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
    if scope.cancelled_caught:
        return False, f"{argv[0]} did not finish its check in {timeout_s:g} s"
    text = (done.stdout + done.stderr).decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return done.returncode == 0, " | ".join(lines[-6:])


__all__ = ["STOP_GRACE_S", "Child", "DataplaneStartError", "check_command", "find_binary"]
