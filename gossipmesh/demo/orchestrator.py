"""Processes, temporary files, the lock and the ports: everything the demo must leave as it found.

Theory of operation
-------------------
The demo owns three kinds of resource, and each has one owner object with one way out:

- **The lock** (``DemoLock``): an ``flock`` on ``$TMPDIR/gossipmesh-demo-net<ID>.lock`` holding
  the owner's pid, one per network namespace (``<ID>``: its inode on Linux; no suffix where there
  is none to read): the ports the demo needs are per namespace, so a demo in another namespace (a
  container, ``unshare -n``) competes for nothing and must not block this one. The kernel
  releases the lock when the process dies, however it dies, so a crashed demo never blocks the
  next one. The owner unlinks the file on exit while still holding the lock;
  a contender re-checks after locking that the path still names the inode it locked, so it never
  "holds" a lock on a file already unlinked.
- **Ports** (``preflight``): every address the agents and apps will bind is tried first, *before*
  anything is started, so "port in use" is one clear message with nothing to clean up. TCP is
  tried with SO_REUSEADDR like the real listeners (a TIME_WAIT leftover is not "in use").
- **Processes and the temp dir** (``Orchestrator``): children are started in their own session
  (own process group: a terminal's Ctrl-C reaches only the demo, which then stops them in order)
  with ``PR_SET_PDEATHSIG`` = SIGKILL on Linux, so even a SIGKILLed demo takes them along.
  ``close`` sends SIGTERM to every group (agents leave gracefully), waits up to a deadline, then
  SIGKILLs the groups that remain, and finally removes the temp dir. It is idempotent and is
  always reached (``with``), including on Ctrl-C.

Every wait polls an HTTP endpoint with a deadline; nothing sleeps for a guessed time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from gossipmesh.client import AdminClient, AgentUnreachable, ConfigSigner
from gossipmesh.demo.pki import DemoPki, make_pki
from gossipmesh.demo.plan import CLUSTER, PROFILE, Instance, Node, Plan

T = TypeVar("T")

LOCK_PREFIX = "gossipmesh-demo"
TEMP_PREFIX = "gossipmesh-demo-"
STOP_GRACE_S = 4.0  # SIGTERM -> SIGKILL: an agent's graceful leave takes well under a second
START_TIMEOUT_S = 45.0  # python + imports of N agents on 2 shared cores
_PR_SET_PDEATHSIG = 1


class DemoError(Exception):
    """A reason the demo cannot run; the message is the one line the CLI prints (exit 1)."""


def network_namespace() -> str | None:
    """This process's network namespace (the inode of /proc/self/ns/net), or None off Linux."""
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return None


def lock_path(tmp_dir: Path | None = None) -> Path:
    """The demo lock of this network namespace, in ``tmp_dir`` (default: the system temp dir)."""
    ns = network_namespace()
    name = f"{LOCK_PREFIX}.lock" if ns is None else f"{LOCK_PREFIX}-net{ns}.lock"
    return (tmp_dir if tmp_dir is not None else Path(tempfile.gettempdir())) / name


class DemoLock:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else lock_path()
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise DemoError(
                    f"another gossipmesh demo is already running (pid {holder}, lock "
                    f"{self.path}); wait for it to finish or stop it with Ctrl-C"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner unlinked it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise DemoError(f"could not take the demo lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # still locked by us: nobody else can be using this inode
        os.close(self._fd)
        self._fd = None


def preflight(plan: Plan) -> None:
    """Raise DemoError naming the first address that cannot be bound; bind nothing for good."""
    for node in plan.nodes:
        for ip, port, proto in node.ports():
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as s:
                if proto == "tcp":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((ip, port))
                    if proto == "tcp":
                        s.listen(1)
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise DemoError(
                            f"cannot use {ip}: the demo needs {plan.nodes[0].ip}-{plan.nodes[-1].ip}"
                            " on the loopback interface (Linux has all of 127.0.0.0/8; on macOS "
                            f"add them with `sudo ifconfig lo0 alias {ip}`)"
                        ) from None
                    raise DemoError(
                        f"port {ip}:{port}/{proto} is in use (another gossipmesh agent or demo?); "
                        "the demo needs it free, nothing was started"
                    ) from None


def _pdeathsig() -> None:
    """In the child, before exec: die with SIGKILL when the demo dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Child:
    name: str  # "n2" for an agent, "n2-api-v1" for an app
    node: str
    kind: str  # agent | app
    proc: subprocess.Popen[bytes]
    log_path: Path
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Orchestrator:
    plan: Plan
    progress: Callable[[str], None]
    root: Path = field(init=False)
    key: str = field(init=False, default="")
    pki: DemoPki | None = field(init=False, default=None)
    # What each agent said about its own certificate (GET /v1/self "node_cert") once it was up.
    node_certs: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))

    # ---- start ------------------------------------------------------------------------------

    def _spawn(self, name: str, node: str, kind: str, argv: list[str]) -> Child:
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own process group; the terminal's ^C is ours to handle
                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
                close_fds=True,
            )
        child = Child(name, node, kind, proc, log_path)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start every app and agent, then wait until the mesh is whole and healthy."""
        from gossipmesh.crypto import generate_key  # the key format --encrypt expects

        self.key = generate_key()
        key_file = self.root / "gossip.key"  # a key on a command line would be visible in ps
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.key + "\n")
        self.progress(f"temp dir {self.root}; fresh AES-256 key in {key_file.name}")
        self.pki = pki = make_pki(self.root, self.plan)
        self.progress(f"CA {pki.root_fingerprint[:16]} in ca/: {len(pki.node_dirs)} node "
                      f"certificates, operator key {pki.operator_file.name}")  # fmt: skip
        for node in self.plan.nodes:
            for inst in node.instances:
                self._spawn(inst.name, node.name, "app", self._app_argv(node, inst))
        seed = self.plan.nodes[0]
        for node in self.plan.nodes:
            toml = self.root / f"{node.name}.toml"
            toml.write_text(node.agent_toml())
            argv = [sys.executable, "-m", "gossipmesh", "agent", "--name", node.name,
                    "--bind", node.gossip, "--admin", node.admin,
                    "--outbound", node.outbound, "--inbound", node.inbound,
                    "--data-dir", str(self.data_dir(node)), "--config", str(toml),
                    "--encrypt-file", str(key_file), "--tls-dir", str(pki.node_dirs[node.name]),
                    "--cluster", CLUSTER, "--profile", PROFILE,
                    "--enable-fault-injection", "--log-level", "warn"]  # fmt: skip
            if node is not seed:
                argv += ["--join", seed.gossip]  # retried with backoff until the seed answers
            self._spawn(node.name, node.name, "agent", argv)
        self.progress(f"started {len(self.plan.nodes)} agents and "
                      f"{sum(len(n.instances) for n in self.plan.nodes)} app processes")  # fmt: skip
        for node in self.plan.nodes:
            self.wait(
                f"{node.name} admin API", functools.partial(self._ready, node), START_TIMEOUT_S
            )
        self.wait("every agent to see every member alive", self._all_alive, START_TIMEOUT_S)
        self.progress("mesh joined: every agent lists every member alive, each with its own "
                      "node certificate")  # fmt: skip

    def _app_argv(self, node: Node, inst: Instance) -> list[str]:
        return [sys.executable, "-m", "gossipmesh.demo.apps", "--role", inst.role,
                "--instance", inst.name, "--version", inst.version,
                "--listen", f"{inst.ip}:{inst.port}", "--sidecar", node.outbound,
                "--run-dir", str(self.root)]  # fmt: skip

    def signer(self) -> ConfigSigner:
        """The demo operator's signer: every config write of the demo is signed with it."""
        if self.pki is None:
            raise DemoError("no operator key before the demo's CA is made (start() makes it)")
        return self.pki.signer()

    def client(self, node: Node, timeout_s: float = 3.0) -> AdminClient:
        """The node's admin API, with the token its agent keeps in its data dir."""
        return AdminClient(node.admin, timeout_s=timeout_s, agent_data_dir=self.data_dir(node))

    def data_dir(self, node: Node) -> Path:
        return self.root / node.name

    def agent(self, node: Node) -> Child:
        return next(c for c in self.children if c.kind == "agent" and c.node == node.name)

    def _ready(self, node: Node) -> bool:
        child = self.agent(node)
        if not child.running:
            raise DemoError(
                f"agent {node.name} exited with {child.proc.returncode}:\n{child.log_tail()}"
            )
        status, facts = self.client(node).request("GET", "/v1/self")
        if status != 200:
            return False
        cert = facts.get("node_cert") or {}
        if cert.get("playground") is not False or self.pki is None:
            raise DemoError(f"agent {node.name} does not run with the demo's node certificate "
                            f"({cert.get('spiffe_id')}, playground {cert.get('playground')})")  # fmt: skip
        self.node_certs[node.name] = {k: cert.get(k) for k in ("spiffe_id", "fingerprint",
                                                               "playground")}  # fmt: skip
        return True

    def _all_alive(self) -> bool:
        want = {n.name for n in self.plan.nodes}
        return all(self.members(n) == dict.fromkeys(want, "alive") for n in self.plan.nodes)

    def members(self, node: Node) -> dict[str, str]:
        data = self.client(node).members()
        return {m["name"]: m["state"] for m in data}

    def wait(
        self, what: str, fn: Callable[[], T | None], timeout_s: float, interval_s: float = 0.1
    ) -> T:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                got = fn()
            except (AgentUnreachable, OSError) as exc:
                got, last = None, exc
            else:
                last = got
            if got:
                return got
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last})")
            time.sleep(interval_s)

    # ---- events -----------------------------------------------------------------------------

    def kill_node(self, node: Node) -> list[int]:
        """SIGKILL the node's agent and its apps, like a host losing power. Returns the pids."""
        pids = []
        now = time.monotonic()
        for child in self.children:
            if child.node == node.name and child.running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.killed_at = now
                pids.append(child.pid)
        return pids

    # ---- stop -------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def close(self) -> None:
        """Stop every process group (TERM, then KILL after STOP_GRACE_S), remove the temp dir."""
        if self._closed:
            return
        self._closed = True
        for child in self.children:
            if child.running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for child in self.children:
            # Only a group whose leader we have not reaped: a reaped pid may be reused.
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def demo_resources(plan: Plan, progress: Callable[[str], None]) -> Iterator[Orchestrator]:
    """Lock, check ports, then yield an Orchestrator; everything is undone on the way out."""
    lock = DemoLock()
    lock.acquire()
    try:
        preflight(plan)
        with Orchestrator(plan, progress) as orch:
            yield orch
    finally:
        lock.release()


def stderr_progress(stream: TextIO = sys.stderr) -> Callable[[str], None]:
    start = time.monotonic()

    def say(line: str) -> None:
        stream.write(f"[{time.monotonic() - start:5.1f}s] {line}\n")
        stream.flush()

    return say
