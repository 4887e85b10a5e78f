"""Helpers to run real agents as subprocesses on 127.0.0.x and poll them through the admin API.

Every process started here is stopped by the fixture that owns it (SIGKILL at teardown if still
running). Waits poll with a bounded deadline; nothing sleeps for a fixed guess.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gossipmesh.client import AdminClient, AgentUnreachable

T = TypeVar("T")

# A generous deadline for anything a healthy cluster does in a few seconds (join, detect, spread,
# start an agent). It only bounds a wait: the wait ends as soon as the condition holds, and one
# that hits the deadline fails naming what it waited for. Timing goals live in benchmarks/.
SETTLE_S = 60.0


def free_port_on(hosts: list[str]) -> int:
    """A port free for UDP and TCP on every host, and the next one free for TCP (admin API)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        try:
            socks = []
            for host in hosts:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind((host, port))
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, port + 1))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


def wait_until(
    what: str, fn: Callable[[], T | None], timeout_s: float, interval_s: float = 0.1
) -> tuple[T, float]:
    """Poll ``fn`` until it returns something truthy; return it and the seconds it took."""
    start = time.monotonic()
    last: Any = None
    while True:
        try:
            last = fn()
        except AgentUnreachable as exc:
            last = exc
        else:
            if last:
                return last, time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(
                f"timed out after {timeout_s:.1f}s waiting for {what}; last: {last}"
            )
        time.sleep(interval_s)


class AgentProc:
    def __init__(
        self, name: str, ip: str, port: int, root: Path, args: list[str], proxy: bool = False
    ) -> None:
        self.name = name
        # Agents on one host would all want the default outbound listener 127.0.0.1:4140, so the
        # proxy is off unless a test asks for it (and then passes its own --outbound/--inbound).
        self.proxy = proxy
        self.ip = ip
        self.port = port
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AdminClient(f"{ip}:{port + 1}", timeout_s=10, agent_data_dir=self.data_dir)

    @property
    def gossip(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def admin(self) -> str:
        return f"{self.ip}:{self.port + 1}"

    def start(self, extra: list[str] | None = None) -> AgentProc:
        assert self.proc is None or self.proc.poll() is not None
        cmd = [
            sys.executable,
            "-m",
            "gossipmesh",
            "agent",
            "--name",
            self.name,
            "--bind",
            self.gossip,
            "--admin",
            self.admin,
            "--data-dir",
            str(self.data_dir),
            "--profile",
            "local",
            *([] if self.proxy else ["--no-proxy"]),
            *self.args,
            *(extra or []),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_until(f"{self.name} admin API", self._ready, timeout_s=SETTLE_S)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
        return self.client.request("GET", "/v1/self")[0] == 200

    def members(self) -> dict[str, str]:
        data = self.client.members()
        return {m["name"]: m["state"] for m in data}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Procs:
    """Owns agent subprocesses; ``close`` kills whatever still runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agents: list[AgentProc] = []

    def new(self, name: str, ip: str, port: int, args: list[str], proxy: bool = False) -> AgentProc:
        agent = AgentProc(name, ip, port, self.root, args, proxy)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()


def loopback_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


requires_loopback_aliases = pytest.mark.skipif(
    not loopback_ok() or os.name != "posix", reason="needs 127.0.0.0/8 on lo (Linux)"
)
