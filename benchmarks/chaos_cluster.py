"""The chaos harness's processes: per host one gossipmesh agent (mTLS, signed config, fault
injection on its namespace's own loopback admin API) and one sample app behind it.

Every process starts with ``ip netns exec HOST-NS ...`` from the harness's main thread, with
``PR_SET_PDEATHSIG`` = SIGKILL, so even a harness killed with SIGKILL takes its children along;
``ChaosNet.destroy`` kills whatever is left in the namespaces anyway.

Each agent runs under libfaketime (Debian's ``faketime`` package) reading its offset from a file
(``+0`` until the nemesis writes another), with the monotonic clock left alone: the wall clock of
one host jumps, as an NTP step would, while timers keep ticking. (libfaketime 0.9.10 with the
monotonic clock untouched breaks ``time.sleep`` -- EINVAL -- which the agent does not use on the
paths the harness exercises.)
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chaos_net import Host, enter_netns

from gossipmesh.client import AdminClient, ConfigSigner

T = TypeVar("T")

GOSSIP_PORT = 7946
ADMIN = "127.0.0.1:7947"  # each namespace has its own loopback
OUTBOUND = "127.0.0.1:4140"
APP_PORT = 8080
SERVICE = "echo"
CLUSTER = "chaos"
LIBFAKETIME_DIRS = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                    "/usr/lib/faketime")  # fmt: skip
READY_S = 60.0  # bound on one agent's start (admin API answering)

# How the mesh treats the sample service: short timeouts and retries so that a killed upstream
# costs a retry, not a failed request; outlier detection takes it out of rotation quickly.
ECHO_SERVICE: dict[str, Any] = {
    "timeouts": {"connect_ms": 300, "per_try_ms": 1500, "request_ms": 6000},
    "retry": {"attempts": 4, "budget_percent": 50, "budget_min_per_s": 20},
    "outlier_detection": {"consecutive_failures": 2, "base_ejection_ms": 5000},
}


class ClusterError(RuntimeError):
    pass


def find_libfaketime() -> str | None:
    for d in LIBFAKETIME_DIRS:
        lib = Path(d) / "libfaketime.so.1"
        if lib.exists():
            return str(lib)
    return None


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def popen_in(
    ns: str, argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - main thread only, see module doc
        )


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(RSS KiB, open file descriptors) of ``pid``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


@dataclass
class HostProcs:
    """One host's agent and app, and a thread pool living in the host's namespace."""

    host: Host
    root: Path
    peers: list[str]  # gossip addresses of the others, for --join
    key_file: Path
    tls_dir: Path
    libfaketime: str | None
    agent: subprocess.Popen[bytes] | None = None
    app: subprocess.Popen[bytes] | None = None
    agent_starts: int = 0
    pool: concurrent.futures.ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.dir = self.root / self.host.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock_file = self.dir / "faketime.rc"
        self.clock_file.write_text("+0\n")
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=self.host.name, initializer=enter_netns,
            initargs=(self.host.ns,),
        )  # fmt: skip
        (self.dir / "agent.toml").write_text(
            f'[[service]]\nname = "{SERVICE}"\naddress = "{self.host.ip}"\nport = {APP_PORT}\n'
            f'tags = ["{self.host.name}"]\n'
            'check = { http = "/health", interval = "1s", timeout = "500ms" }\n'
        )

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def gossip(self) -> str:
        return f"{self.host.ip}:{GOSSIP_PORT}"

    def client(self, timeout_s: float = 5.0) -> AdminClient:
        """An admin client; use it only on ``pool`` threads (they live in the namespace)."""
        return AdminClient(ADMIN, timeout_s=timeout_s, agent_data_dir=self.data_dir)

    def in_ns(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        return self.pool.submit(fn).result(timeout=timeout_s)

    def members(self, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        """The agent's member list (``/v1/members``), from any thread."""
        return self.in_ns(lambda: self.client(timeout_s).members(), timeout_s=timeout_s + 5)

    def config(self, prefix: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The agent's config under ``prefix`` (``/v1/config``), from any thread."""
        return self.in_ns(lambda: self.client(timeout_s).config(prefix), timeout_s=timeout_s + 5)

    # ---- the app ----------------------------------------------------------------------------

    def start_app(self) -> None:
        argv = [sys.executable, str(Path(__file__).with_name("chaos_app.py")),
                self.host.ip, str(APP_PORT), self.host.name]  # fmt: skip
        self.app = popen_in(self.host.ns, argv, self.dir / "app.log")

    def kill_app(self) -> None:
        if self.app is not None and self.app.poll() is None:
            self.app.kill()
            self.app.wait(timeout=10)

    # ---- the agent --------------------------------------------------------------------------

    def start_agent(self, wait: bool = True) -> None:
        if self.agent is not None and self.agent.poll() is None:
            raise ClusterError(f"{self.host.name}: agent already running")
        argv = [sys.executable, "-m", "gossipmesh", "agent", "--config", str(self.dir / "agent.toml"),
                "--name", self.host.name, "--bind", self.gossip, "--admin", ADMIN,
                "--outbound", OUTBOUND, "--data-dir", str(self.data_dir),
                "--encrypt-file", str(self.key_file), "--tls-dir", str(self.tls_dir),
                "--cluster", CLUSTER, "--profile", "local", "--enable-fault-injection",
                "--log-level", "warn"]  # fmt: skip
        for peer in self.peers:
            argv += ["--join", peer]
        env = dict(os.environ)
        if self.libfaketime is not None:
            env.update(
                LD_PRELOAD=self.libfaketime,
                FAKETIME_TIMESTAMP_FILE=str(self.clock_file),
                FAKETIME_DONT_FAKE_MONOTONIC="1",
                FAKETIME_CACHE_DURATION="1",
            )
        self.agent = popen_in(self.host.ns, argv, self.dir / "agent.log", env)
        self.agent_starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = READY_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.agent is None or self.agent.poll() is not None:
                raise ClusterError(f"{self.host.name}: agent exited\n{self.log_tail()}")
            try:
                if self.in_ns(lambda: self.client(2.0).request("GET", "/v1/self")[0]) == 200:
                    return
            except Exception:  # noqa: BLE001 - not up yet: any failure means "try again"
                pass
            time.sleep(0.2)
        raise ClusterError(f"{self.host.name}: agent not ready in {timeout_s:.0f} s")

    @property
    def agent_pid(self) -> int | None:
        return self.agent.pid if self.agent is not None and self.agent.poll() is None else None

    def kill_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGCONT)  # a paused agent dies too
            self.agent.kill()
            self.agent.wait(timeout=10)

    def pause_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGSTOP)

    def resume_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGCONT)

    def wipe_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def set_clock_offset(self, offset_s: float) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+.0f}\n")
        tmp.replace(self.clock_file)  # libfaketime never reads half a file

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.dir / "agent.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        self.kill_agent()
        self.kill_app()
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Pki:
    node_dirs: dict[str, Path]  # host name -> its --tls-dir
    operator_file: Path


def make_pki(root: Path, names: list[str]) -> Pki:
    """A CA, one node certificate per host and an operator key, as ``gossipmesh ca init``,
    ``ca issue-node`` and ``ca issue-operator`` make them (the same library calls)."""
    from gossipmesh.identity import (
        CaCredentials,
        NodeCredentials,
        OperatorCredentials,
        save_ca,
        save_node,
        save_operator,
    )

    now_ms = int(time.time() * 1000)
    ca = CaCredentials.generate(CLUSTER, now_ms=now_ms)
    save_ca(root / "ca", ca)
    node_dirs = {}
    for name in names:
        node_dirs[name] = root / "nodes" / name
        save_node(node_dirs[name], NodeCredentials.issue(ca, name, now_ms=now_ms))
    operator_file = root / "operator.pem"
    save_operator(operator_file, OperatorCredentials.issue(ca, "chaos-operator", now_ms=now_ms))
    return Pki(node_dirs, operator_file)


def write_config(hp: HostProcs, items: dict[str, dict[str, Any] | None], signer: ConfigSigner,
                 timeout_s: float = 10.0) -> dict[str, Any]:  # fmt: skip
    """A signed config write through ``hp``'s agent (prepare, sign, commit: what ``gossipmesh
    config apply`` does); returns the agent's acknowledgement."""
    return hp.in_ns(
        lambda: hp.client(timeout_s).config_apply(items, signer), timeout_s=timeout_s + 5
    )
