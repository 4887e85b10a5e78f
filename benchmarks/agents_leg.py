"""The two-agent leg of proxy_cpu.py (``--legs agents``): two real ``gossipmesh agent`` processes,
A's outbound -> *mTLS* -> B's inbound -> the backend (benchmarks/gossip_legs.py), both agents on
the proxy CPU with everything else they run (SWIM, config sync, health checks); per hop, both
agents' CPU. Not a test; bounded; loopback only; every process started here is stopped.

It is judged against two nginx -> nginx chains in the same round: the plaintext one (the issue's
0.36x) and the one with TLS 1.3 and client certificates on the hop (mtls_cpu.py's configs: the
like-for-like comparison, since the agents' hop is always mTLS).

Standalone, ``--syscalls`` counts each agent's syscalls per request under load (``strace -f -c``
attached to one agent for ``--seconds`` of wrk at ``--connections``): the A/B the neighbours'
load cannot move. To count another source tree, run this from that tree (the agents import
``gossipmesh`` from the working directory first):

    python benchmarks/agents_leg.py --seconds 5 --syscalls
    cd /tmp/base && PYTHONPATH=/tmp/base python /path/to/benchmarks/agents_leg.py --syscalls
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gossip_legs  # noqa: E402  (the agents' start-up, shared with benchmarks/proxy.py)
from _procs import Proc, strace_counts  # noqa: E402
from proxy_cpu import (  # noqa: E402
    BACKEND_PORT,
    HOST,
    Result,
    children,
    launched,
    measure,
    nginx_conf,
    pin,
    wait_port,
    wrk_load,
)


def start_agents(workdir: str) -> tuple[list[Proc], str, int, str]:
    """(agents, host, port, Host header) of the two-sidecar leg, routable when it returns."""
    label, url, authority, start = gossip_legs.legs(BACKEND_PORT)[1]
    procs = start(workdir)
    host, port = url.split("//")[1].rstrip("/").split(":")
    return procs, host, int(port), authority


def run_agents(args: argparse.Namespace) -> Result:
    """One measured round of the two agents (their CPU, per hop)."""
    with tempfile.TemporaryDirectory(prefix="proxy-cpu-agents-") as wd:
        procs, host, port, authority = start_agents(wd)
        try:
            pids = [p.popen.pid for p in procs if p.popen is not None]
            pids += [c for pid in list(pids) for c in children(pid)]
            return measure("gossipmesh", port, pids, 2, args, "  [mTLS hop]", host, authority)
        finally:
            for p in reversed(procs):
                p.stop()


def run_nginx_tls(workdir: str, args: argparse.Namespace) -> Result:
    """nginx -> TLS 1.3 with client certificates -> nginx -> the backend (mtls_cpu.py's configs,
    made once per workdir), both nginx on the proxy CPU; per hop."""
    import mtls_cpu

    if not os.path.exists(os.path.join(workdir, "ng-root.crt")):
        mtls_cpu.nginx_pki(workdir)
    return mtls_cpu.run_nginx_tls(workdir, args, backends=(BACKEND_PORT,))


# -- syscalls per request ------------------------------------------------------------------------


def traced(pid: int, host: str, port: int, authority: str, args: argparse.Namespace) -> tuple:
    """(requests, syscall counts) of ``pid`` (all its threads) during ``--seconds`` of wrk."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-o", log.name, "-p", str(pid)], stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(1.0)  # attached to every thread before the load starts
            n = wrk_load(port, args.connections, args.seconds, args.client_cpu, host, authority)
        finally:
            tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
            tracer.wait(30)
        return n, strace_counts(log.read())


def syscalls(args: argparse.Namespace) -> None:
    backend = (
        f"server {{ listen {HOST}:{BACKEND_PORT};"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    with tempfile.TemporaryDirectory(prefix="agents-syscalls-") as wd:
        conf = nginx_conf(wd, "backend", backend)
        with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
            wait_port(BACKEND_PORT)
            procs, host, port, authority = start_agents(wd)
            try:
                wrk_load(port, args.connections, 1.0, args.client_cpu, host, authority)  # warm
                for p in procs:  # A (outbound) first, then B (inbound)
                    assert p.popen is not None
                    n, calls = traced(p.popen.pid, host, port, authority, args)
                    busy = sorted(((v / n, k) for k, v in calls.items() if v / n >= 0.005),
                                  reverse=True)  # fmt: skip
                    counts = " ".join(f"{k}={v:.2f}" for v, k in busy)
                    print(f"agent {p.name} ({n} requests, c={args.connections}): syscalls per"
                          f" request: {counts}", flush=True)  # fmt: skip
            finally:
                for p in reversed(procs):
                    p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="load per agent (max 60)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--syscalls", action="store_true", help="count syscalls (strace)")
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    if not args.syscalls:
        raise SystemExit("CPU-seconds: python benchmarks/proxy_cpu.py --legs agents")
    if shutil.which("strace") is None or shutil.which("wrk") is None:
        raise SystemExit("needs strace and wrk")
    with contextlib.suppress(KeyboardInterrupt):
        syscalls(args)


if __name__ == "__main__":
    main()
