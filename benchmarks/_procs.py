"""Shared plumbing for the benchmarks: start agent processes on loopback, timestamp their log
lines as they arrive (Serf's own log stamps only have second resolution), read RSS, and stop
everything we started on the way out, whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Proc:
    name: str
    argv: Sequence[str]
    popen: subprocess.Popen[bytes] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in self.popen.stdout:
            stamp = time.monotonic()
            with self._lock:
                self.lines.append((stamp, raw.decode("utf-8", "replace").rstrip()))

    def first_match(self, predicate: Callable[[str], bool], after: float) -> float | None:
        with self._lock:
            for stamp, line in self.lines:
                if stamp >= after and predicate(line):
                    return stamp
        return None

    def rss_kib(self) -> int:
        assert self.popen is not None
        with open(f"/proc/{self.popen.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
                self.popen.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=2)


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; bounded by construction."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def loopback(index: int) -> str:
    """The loopback address of agent ``index`` (0-based): 127.0.0.2, 127.0.0.3, ... 127.0.1.x."""
    n = index + 2
    return f"127.0.{n // 256}.{n % 256}"


def strace_counts(text: str) -> dict[str, int]:
    """Calls per syscall name in one ``strace -c`` summary."""
    calls = {}
    for row in text.splitlines():
        cols = row.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
            calls[cols[-1]] = int(cols[3])
    return calls
