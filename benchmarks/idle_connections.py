"""Memory of an agent holding many idle client connections, and after they close.

One real ``gossipmesh agent`` (pinned to CPU 1, as the other proxy benchmarks pin the proxy)
registers an nginx backend (CPU 0) as its local service ``bench``. This script raises its own
descriptor limit, then opens ``--connections`` client connections to the agent's listeners:
half to the outbound listener, each carrying one keep-alive request and then idling; half to
the inbound listener, bare (no byte sent, as a port scan or a slow client would). It reads the
agent's RSS (``/proc/PID/status`` VmRSS) before, once every connection is open, and after they
are all closed and the agent's ``/metrics`` says so (and ``SETTLE_S`` later), for ``--storms``
rounds. Goal (issue 13):
RSS back within 20 % of where it started. Not a test; loopback only; bounded; every process
started here is stopped on the way out.

    unshare -n sh -c 'ip link set lo up && python benchmarks/idle_connections.py \\
        --connections 10000 --storms 2 [--baseline DIR]'

``--baseline DIR`` runs the same rounds against an agent started from another source tree
(``DIR`` holds its ``gossipmesh`` package, e.g. ``git archive COMMIT gossipmesh | tar -x -C
DIR``), after ours.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from _procs import Proc, wait_until  # noqa: E402
from proxy import BACKEND_PORT, start_backend  # noqa: E402

IP = "127.0.0.2"
OUTBOUND, INBOUND, ADMIN = 4140, 4143, 7947
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# After the last connection closed: the proxy trims memory after a storm at most every 10 s
# (gossipmesh/proxy/memory.py), so "after" is read once one may have run.
SETTLE_S = 12.0


def start_agent(workdir: str, source: str | None) -> Proc:
    data_dir = os.path.join(workdir, "agent" if source is None else "agent-baseline")
    os.makedirs(data_dir, exist_ok=True)
    conf = os.path.join(data_dir, "agent.toml")
    with open(conf, "w") as f:
        f.write(f'[[service]]\nname = "bench"\nport = {BACKEND_PORT}\naddress = "127.0.0.1"\n')
    argv = [
        "taskset", "-c", "1", sys.executable, "-m", "gossipmesh", "agent", "--name", "a",
        "--bind", f"{IP}:7946", "--admin", f"{IP}:{ADMIN}", "--outbound", f"{IP}:{OUTBOUND}",
        "--inbound", f"{IP}:{INBOUND}", "--data-dir", data_dir, "--profile", "local",
        "--config", conf, "--log-level", "warn",
    ]  # fmt: skip
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = source
        argv = ["sh", "-c", f'cd "{source}" && exec "$@"', "sh", *argv]
    proc = Proc("agent", argv)
    proc.start(env)
    return proc


def agent_pid(proc: Proc) -> int:
    """The python process (``sh`` and ``taskset`` exec into it, so it is the same pid)."""
    assert proc.popen is not None
    return proc.popen.pid


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(name: str, label: str) -> float:
    try:
        with urllib.request.urlopen(f"http://{IP}:{ADMIN}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def open_connections() -> float:
    """Client connections the agent holds now (old agents: by direction)."""
    a = metric("gossipmesh_proxy_open_connections", 'direction="outbound"')
    b = metric("gossipmesh_proxy_open_connections", 'direction="inbound"')
    return a + b


def get_once() -> bool:
    try:
        with socket.create_connection((IP, OUTBOUND), timeout=5) as s:
            s.sendall(REQUEST)
            return s.recv(65536).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def storm(n: int) -> tuple[list[socket.socket], float]:
    """Open ``n`` connections (half keep-alive after one request, half bare); seconds taken."""
    began = time.monotonic()
    socks: list[socket.socket] = []
    for i in range(n):
        if i < n // 2:
            s = socket.create_connection((IP, OUTBOUND), timeout=10)
            s.sendall(REQUEST)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        else:
            s = socket.create_connection((IP, INBOUND), timeout=10)
        socks.append(s)
    return socks, time.monotonic() - began


def run(label: str, workdir: str, source: str | None, n: int, storms: int) -> None:
    proc = start_agent(workdir, source)
    try:
        if not wait_until(get_once, 60, 0.2):
            raise RuntimeError(f"{label}: the agent never answered through its outbound listener")
        for _ in range(200):
            get_once()
        pid = agent_pid(proc)
        time.sleep(1.0)
        before = rss_mib(pid)
        print(f"{label}: RSS before {before:.1f} MiB", flush=True)
        for k in range(1, storms + 1):
            socks, took = storm(n)
            held = open_connections()
            during = rss_mib(pid)
            for s in socks:
                s.close()
            wait_until(lambda: open_connections() == 0, 30, 0.2)
            time.sleep(SETTLE_S)
            after = rss_mib(pid)
            print(
                f"{label}: storm {k}: {n} opened in {took:.1f} s, {held:.0f} held by the agent; "
                f"RSS during {during:.1f} MiB, after {after:.1f} MiB "
                f"({(after - before) / before * 100:+.1f} % of before)",
                flush=True,
            )
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="per storm (2-30000)")
    parser.add_argument("--storms", type=int, default=2, help="rounds (1-5)")
    parser.add_argument("--baseline", help="source tree of an agent to compare with")
    args = parser.parse_args()
    if not 2 <= args.connections <= 30_000 or not 1 <= args.storms <= 5:
        parser.error("--connections must be 2-30000 and --storms 1-5")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        parser.error(f"the hard descriptor limit ({hard}) is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as workdir:
        backend = start_backend(workdir, 0)
        try:
            if not wait_until(lambda: _port_open("127.0.0.1", BACKEND_PORT), 10):
                raise RuntimeError("backend nginx did not start")
            run("ours", workdir, None, args.connections, args.storms)
            if args.baseline:
                run("baseline", workdir, os.path.abspath(args.baseline), args.connections,
                    args.storms)  # fmt: skip
        finally:
            backend.stop()
    return 0


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
