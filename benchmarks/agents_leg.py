"""The two-agent leg of proxy_cpu.py (``--legs agents``): two real ``gossipmesh agent`` processes,
A's outbound -> *mTLS* -> B's inbound -> the backend (benchmarks/gossip_legs.py), both agents on
the proxy CPU with everything else they run (SWIM, config sync, health checks); per hop, both
agents' CPU. Not a test; bounded; loopback only; every process started here is stopped.

It is judged against two nginx -> nginx chains in the same round: the plaintext one (the issue's
0.36x) and the one with TLS 1.3 and client certificates on the hop (mtls_cpu.py's configs: the
like-for-like comparison, since the agents' hop is always mTLS).

Standalone, ``--syscalls`` counts each agent's syscalls per request under load (``strace -f -c``
attached to one agent for ``--seconds`` of wrk at ``--connections``): the A/B the neighbours'
load cannot move. ``--wakeups`` counts, in both agents at once, how often trio's scheduler
woke up (one ``epoll_wait`` each) and which tasks ran how often per request (a trio Instrument
added to the agent's ``trio.run`` by a wrapper: the agent's code is not changed). To count
another source tree, run this from that tree (the agents import ``gossipmesh`` from the working
directory first):

``--spread --workers N`` runs both agents with ``--proxy-workers N`` and reports, after
``--seconds`` of wrk, how the requests spread over each agent's processes (the ``worker`` label
of its ``/metrics``) and each process's RSS: counts and bytes, which the neighbours cannot move.

    python benchmarks/agents_leg.py --seconds 5 --syscalls
    python benchmarks/agents_leg.py --seconds 5 --spread --workers 2
    python benchmarks/agents_leg.py --seconds 30 --idle --workers 2   # CPU of each idle process
    python benchmarks/agents_leg.py --seconds 5 --wakeups --connections 1
    cd /tmp/base && PYTHONPATH=/tmp/base python /path/to/benchmarks/agents_leg.py --syscalls
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gossip_legs  # noqa: E402  (the agents' start-up, shared with benchmarks/proxy.py)
from _procs import Proc, strace_counts, wait_until  # noqa: E402
from proxy_cpu import (  # noqa: E402
    BACKEND_PORT,
    HOST,
    Result,
    children,
    cpu_split,
    launched,
    measure,
    nginx_conf,
    pin,
    wait_port,
    wrk_load,
)

# ``python -c WAKEUPS DIR agent ...``: the agent with a trio Instrument counting scheduler passes
# (after_io_wait: one epoll_wait each) and task steps by task name; SIGUSR2 writes the counts so
# far to DIR/<pid>.json.
WAKEUPS = r"""
import json, os, runpy, signal, sys, trio
out = sys.argv.pop(1)
if sys.argv[1:2] != ["-m"]:
    # ``gossipmesh agent`` (the CLI) execs ``python -m gossipmesh.agent`` (agent/launch.py):
    # exec this wrapper again in its place, with the same arguments.
    code = open("/proc/self/cmdline", "rb").read().split(b"\0")[2].decode()
    real_execv = os.execv
    os.execv = lambda path, argv: real_execv(path, [argv[0], "-c", code, out, *argv[1:]])
    sys.argv[0] = "gossipmesh"
    runpy.run_module("gossipmesh", run_name="__main__", alter_sys=True)
    raise SystemExit("the CLI did not exec the agent")

class Count(trio.abc.Instrument):
    def __init__(self):
        self.passes = 0
        self.steps = {}
    def after_io_wait(self, timeout):
        self.passes += 1
    def before_task_step(self, task):
        self.steps[task.name] = self.steps.get(task.name, 0) + 1

count = Count()
real_run = trio.run
def run(*args, **kw):
    kw["instruments"] = [*kw.get("instruments", ()), count]
    return real_run(*args, **kw)
trio.run = run
def dump(signum, frame):
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as f:
        json.dump({"passes": count.passes, "steps": count.steps}, f)
signal.signal(signal.SIGUSR2, dump)
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def start_agents(
    workdir: str,
    python: list[str] | None = None,
    workers: int = 1,
    cpus: str = "1",
    sidecars: int = 2,
) -> tuple[list[Proc], str, int, str]:
    """(agents, host, port, Host header) of the two-sidecar leg (``sidecars=1``: the one-agent
    leg, outbound -> local backend), routable (and with ``workers`` > 1 every proxy worker
    serving) when it returns; ``python``: the command standing for ``python -m gossipmesh``;
    ``cpus``: the agents' ``taskset -c`` list."""
    extra = ["--proxy-workers", str(workers)] if workers > 1 else []
    legs = gossip_legs.legs(BACKEND_PORT, python or (), extra, cpus)
    label, url, authority, start = legs[sidecars - 1]
    procs = start(workdir)
    host, port = url.split("//")[1].rstrip("/").split(":")
    if workers > 1:
        for ip in (gossip_legs.A_IP, gossip_legs.B_IP)[:sidecars]:
            if not wait_until(partial(all_up, ip, workers), 60):
                raise RuntimeError(f"the agent on {ip} does not have {workers} workers serving")
    return procs, host, int(port), authority


def all_up(admin_ip: str, workers: int) -> bool:
    return workers_up(admin_ip) == workers


def workers_up(admin_ip: str) -> int:
    """How many proxy processes the agent's ``/v1/health`` says serve (0: cannot tell)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        url = f"http://{admin_ip}:7947/v1/health"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(json.loads(resp.read())["proxy_workers"]["up"])
    return 0


def run_agents(args: argparse.Namespace, workers: int = 1, sidecars: int = 2) -> Result:
    """One measured round of the two agents (their CPU and their workers', per hop), each with
    ``workers`` proxy processes, on ``--agents-cpus``; ``sidecars=1``: one agent, its outbound
    through its own inbound (mTLS) to the backend it hosts, counted as one hop."""
    cpus = args.agents_cpus if args.agents_cpus is not None else str(args.proxy_cpu)
    with tempfile.TemporaryDirectory(prefix="proxy-cpu-agents-") as wd:
        procs, host, port, authority = start_agents(wd, None, workers, cpus, sidecars)
        try:
            pids = [p.popen.pid for p in procs if p.popen is not None]
            pids += [c for pid in list(pids) for c in children(pid)]
            label = "gossipmesh" if workers == 1 else f"gm x{workers}"
            note = f"  [{'mTLS hop, ' if sidecars == 2 else ''}agents on CPU {cpus}]"
            return measure(label, port, pids, sidecars, args, note, host, authority)
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


@contextlib.contextmanager
def warm_agents(
    args: argparse.Namespace, what: str, agent_cmd: list[str] | None = None, workers: int = 1
) -> Iterator[tuple[list[Proc], str, int, str, str]]:
    """The nginx backend and the two agents, started, warmed by one second of load, and stopped
    on the way out: (agents, host, port, authority, work directory)."""
    backend = (
        f"server {{ listen {HOST}:{BACKEND_PORT};"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    with tempfile.TemporaryDirectory(prefix=f"agents-{what}-") as wd:
        conf = nginx_conf(wd, "backend", backend)
        with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
            wait_port(BACKEND_PORT)
            python = None if agent_cmd is None else [*agent_cmd, wd]
            cpus = args.agents_cpus or "1"
            procs, host, port, authority = start_agents(wd, python, workers, cpus)
            try:
                wrk_load(port, args.connections, 1.0, args.client_cpu, host, authority)  # warm
                yield procs, host, port, authority, wd
            finally:
                for p in reversed(procs):
                    p.stop()


def syscalls(args: argparse.Namespace) -> None:
    with warm_agents(args, "syscalls") as (procs, host, port, authority, _):
        for p in procs:  # A (outbound) first, then B (inbound)
            assert p.popen is not None
            n, calls = traced(p.popen.pid, host, port, authority, args)
            busy = sorted(((v / n, k) for k, v in calls.items() if v / n >= 0.005), reverse=True)
            counts = " ".join(f"{k}={v:.2f}" for v, k in busy)
            print(f"agent {p.name} ({n} requests, c={args.connections}): syscalls per"
                  f" request: {counts}", flush=True)  # fmt: skip


def snapshot(procs: list[Proc], out: str) -> dict[str, dict]:
    """Each agent's counts so far (by name), written on SIGUSR2 (WAKEUPS)."""
    files = {}
    for p in procs:
        assert p.popen is not None
        path = os.path.join(out, f"{p.popen.pid}.json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        p.popen.send_signal(signal.SIGUSR2)
        files[p.name] = path
    deadline = time.monotonic() + 10
    got: dict[str, dict] = {}
    while len(got) < len(files) and time.monotonic() < deadline:
        for name, path in files.items():
            if name not in got and os.path.exists(path):
                with contextlib.suppress(ValueError), open(path) as f:
                    got[name] = json.load(f)
        time.sleep(0.05)
    if len(got) < len(files):
        raise SystemExit("an agent did not write its counts")
    return got


def wakeups(args: argparse.Namespace) -> None:
    with warm_agents(args, "wakeups", [sys.executable, "-c", WAKEUPS]) as (
        procs,
        host,
        port,
        authority,
        wd,
    ):
        before = snapshot(procs, wd)
        n = wrk_load(port, args.connections, args.seconds, args.client_cpu, host, authority)
        after = snapshot(procs, wd)
    for name in sorted(after):
        a, b = before[name], after[name]
        passes = (b["passes"] - a["passes"]) / n
        steps = {k: (v - a["steps"].get(k, 0)) / n for k, v in b["steps"].items()}
        busy = sorted(((v, k) for k, v in steps.items() if v >= 0.005), reverse=True)
        print(f"agent {name} ({n} requests, c={args.connections}): per request"
              f" {passes:.2f} scheduler passes (epoll_wait), {sum(steps.values()):.2f} task steps:"
              + "".join(f"\n    {v:.3f} {k}" for v, k in busy), flush=True)  # fmt: skip


def spread(args: argparse.Namespace) -> None:
    with warm_agents(args, "spread", None, args.workers) as (procs, host, port, authority, _):
        n = wrk_load(port, args.connections, args.seconds, args.client_cpu, host, authority)
        print(f"{n} requests in {args.seconds:g} s of wrk -c{args.connections}, "
              f"--proxy-workers {args.workers}", flush=True)  # fmt: skip
        for p, ip, direction in zip(procs, (gossip_legs.A_IP, gossip_legs.B_IP),
                                    ("outbound", "inbound"), strict=True):  # fmt: skip
            assert p.popen is not None
            with urllib.request.urlopen(f"http://{ip}:7947/metrics", timeout=5) as resp:
                text = resp.read().decode()
            per: dict[str, float] = {}
            for line in text.splitlines():
                if line.startswith("gossipmesh_proxy_requests_total{") and (
                    f'direction="{direction}"' in line
                ):
                    worker = line.split('worker="')[1].split('"')[0] if "worker=" in line else "0"
                    per[worker] = per.get(worker, 0) + float(line.rsplit(" ", 1)[1])
            rss = {pid: rss_kib(pid) for pid in [p.popen.pid, *children(p.popen.pid)]}
            print(f"agent {p.name} ({direction}): requests by worker "
                  + " ".join(f"{w}={int(v)}" for w, v in sorted(per.items()))
                  + "; RSS KiB by process " + " ".join(f"{pid}={kib}" for pid, kib in rss.items()),
                  flush=True)  # fmt: skip


def idle(args: argparse.Namespace) -> None:
    """Each process's CPU, in ms per second, over ``--seconds`` without load (after the warm-up
    and 3 s of quiet): what the agents and their workers cost when nobody calls."""
    with warm_agents(args, "idle", None, args.workers) as (procs, *_):
        time.sleep(3.0)
        pids = [q for p in procs if p.popen for q in (p.popen.pid, *children(p.popen.pid))]
        before = {pid: sum(cpu_split([pid])) for pid in pids}
        time.sleep(args.seconds)
        for p in procs:
            assert p.popen is not None
            mine = [p.popen.pid, *children(p.popen.pid)]
            ms = [(sum(cpu_split([q])) - before.get(q, 0.0)) / args.seconds * 1000 for q in mine]
            print(f"agent {p.name}, --proxy-workers {args.workers}: idle CPU ms per s, agent then "
                  "workers: " + " ".join(f"{x:.2f}" for x in ms), flush=True)  # fmt: skip


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="load per agent (max 60)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--syscalls", action="store_true", help="count syscalls (strace)")
    ap.add_argument("--wakeups", action="store_true", help="count trio wake-ups and task steps")
    ap.add_argument("--spread", action="store_true", help="requests and RSS per proxy worker")
    ap.add_argument("--idle", action="store_true", help="CPU of each process with no load")
    ap.add_argument("--workers", type=int, default=2, help="--proxy-workers for --spread")
    ap.add_argument("--agents-cpus", default=None, help="taskset -c list (default 1)")
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    if args.idle:
        idle(args)
        return
    if args.spread:
        if not 1 <= args.workers <= 64 or shutil.which("wrk") is None:
            raise SystemExit("--spread needs wrk and --workers 1..64")
        spread(args)
        return
    if args.wakeups:
        wakeups(args)
        return
    if not args.syscalls:
        raise SystemExit("CPU-seconds: python benchmarks/proxy_cpu.py --legs agents")
    if shutil.which("strace") is None or shutil.which("wrk") is None:
        raise SystemExit("needs strace and wrk")
    with contextlib.suppress(KeyboardInterrupt):
        syscalls(args)


if __name__ == "__main__":
    main()
