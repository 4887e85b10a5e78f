"""The two-sidecar mesh hop per proxy CPU-second with each data plane, in one run: gossipmesh's
native proxy, HAProxy and nginx as ``--dataplane`` runs them, and a plain two-nginx chain as the
reference. Not a test; bounded (every leg runs ``--seconds``), loopback only, and every process
started here is stopped on the way out.

    wrk -> sidecar A (outbound) -> sidecar B (inbound) -> nginx backend (two instances)

Each sidecar is its own process group (native: one ``Proxy`` per process; HAProxy: master and
worker, one thread; nginx: master and one worker), configured by the same code the agent uses
(``gossipmesh.dataplane`` renders the HAProxy and nginx files from the same route table the
native proxy gets: a route by host and path prefix, two weighted endpoints behind B's inbound
listener, the mesh fields). The figure is per hop: 2 x requests / (CPU of A + B). Layout as in
proxy_cpu.py: wrk and the backend on CPU 0, the sidecars on CPU 1.

    python benchmarks/dataplane_cpu.py --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.dirname(__file__))
from proxy_cpu import (  # noqa: E402
    HOST,
    STARTUP_S,
    Result,
    children,
    launched,
    measure,
    nginx_conf,
    pin,
    run_nginx,
    wait_port,
)

from gossipmesh.config.schema import Destination, PathMatch, RouteConfig  # noqa: E402
from gossipmesh.dataplane import haproxy_config as hc  # noqa: E402
from gossipmesh.dataplane import nginx_config as nc  # noqa: E402
from gossipmesh.dataplane.model import Layout, LocalInstance, layout, local_instances  # noqa: E402
from gossipmesh.proxy.table import Endpoint, build_route_table  # noqa: E402

BACKENDS = (18190, 18195)  # proxy_cpu.py's backend port, and a second instance
OUT_PORT = 18191
IN_PORT = 18192
ROUTE = RouteConfig(
    "api-route", (Destination("api"),), hosts=("api",), path=PathMatch("prefix", "/")
)

NATIVE = r"""
import os, signal, sys, trio
from gossipmesh.config.schema import Destination, PathMatch, RouteConfig
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table

role, host = sys.argv[1], sys.argv[2]
out_port, in_port, b1, b2 = map(int, sys.argv[3:7])
route = RouteConfig("api-route", (Destination("api"),), hosts=("api",), path=PathMatch("prefix", "/"))
eps = [Endpoint(f"n{i}", host, p, inbound=(host, in_port)) for i, p in enumerate((b1, b2))]
if role == "out":
    proxy = Proxy(outbound=(host, out_port), inbound=None)
else:
    proxy = Proxy(outbound=None, inbound=(host, in_port), local_services={"api": [(host, b1), (host, b2)]})
proxy.update_table(build_route_table({}, {"api-route": route}, {"api": eps}))

async def main():
    with trio.open_signal_receiver(signal.SIGTERM) as stop:
        async with trio.open_nursery() as n:
            await n.start(proxy.serve)
            os.write(1, b"ready\n")
            async for _ in stop:
                break
            n.cancel_scope.cancel()

trio.run(main)
"""


def plans() -> tuple[Layout, tuple[LocalInstance, ...]]:
    eps = [Endpoint(f"n{i}", HOST, p, inbound=(HOST, IN_PORT)) for i, p in enumerate(BACKENDS)]
    lay = layout(
        build_route_table({}, {"api-route": ROUTE}, {"api": eps}), [ROUTE], unique_dests=True
    )
    local = local_instances({"api": [(HOST, p) for p in BACKENDS]})
    return lay, local


@contextlib.contextmanager
def native_sidecars(cpu: int | None) -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        pids = []
        for role in ("in", "out"):
            argv = [*pin(cpu), sys.executable, "-c", NATIVE, role, HOST, str(OUT_PORT),
                    str(IN_PORT), *map(str, BACKENDS)]  # fmt: skip
            proc = stack.enter_context(launched(argv, stdout=subprocess.PIPE))
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SystemExit(f"native {role} sidecar did not start")
            pids.append(proc.pid)
        yield pids


@contextlib.contextmanager
def haproxy_sidecars(workdir: str, cpu: int | None) -> Iterator[list[int]]:
    lay, local = plans()
    with contextlib.ExitStack() as stack:
        pids = []
        for role in ("in", "out"):
            run = os.path.join(workdir, f"haproxy-{role}")
            os.makedirs(run, exist_ok=True)
            plan = hc.Plan(lay, local if role == "in" else (),
                           (HOST, OUT_PORT) if role == "out" else None,
                           (HOST, IN_PORT) if role == "in" else None, run, threads=1)  # fmt: skip
            for name, text in hc.render(plan).files.items():
                with open(os.path.join(run, name), "w") as f:
                    f.write(text)
            argv = [*pin(cpu), "haproxy", "-W", "-S", f"{run}/{hc.MASTER_SOCKET}", "-f",
                    f"{run}/{hc.CONFIG_FILE}"]  # fmt: skip
            log = open(os.path.join(run, "haproxy.log"), "wb")  # noqa: SIM115 - the child's
            proc = stack.enter_context(launched(argv, stdout=log, stderr=log))
            wait_port(OUT_PORT if role == "out" else IN_PORT)
            _wait_children(proc.pid, "haproxy")
            pids += [proc.pid, *children(proc.pid)]
        yield pids


@contextlib.contextmanager
def nginx_sidecars(workdir: str, cpu: int | None) -> Iterator[list[int]]:
    lay, local = plans()
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    with contextlib.ExitStack() as stack:
        pids = []
        for role in ("in", "out"):
            run = os.path.join(workdir, f"nginx-{role}")
            os.makedirs(os.path.join(run, "tmp"), exist_ok=True)
            plan = nc.Plan(lay, local if role == "in" else (),
                           (HOST, OUT_PORT) if role == "out" else None,
                           (HOST, IN_PORT) if role == "in" else None, run, 1, user)  # fmt: skip
            with open(os.path.join(run, nc.CONFIG_FILE), "w") as f:
                f.write(nc.render(plan).text)
            argv = [*pin(cpu), "nginx", "-p", f"{run}/", "-c", f"{run}/{nc.CONFIG_FILE}", "-e",
                    f"{run}/error.log"]  # fmt: skip
            proc = stack.enter_context(launched(argv))
            wait_port(OUT_PORT if role == "out" else IN_PORT)
            _wait_children(proc.pid, "nginx")
            pids += [proc.pid, *children(proc.pid)]
        yield pids


def _wait_children(pid: int, what: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the master listens before it forks its worker
    if not children(pid):
        raise SystemExit(f"{what} started no worker")


def leg(name: str, sidecars: Callable[[], contextlib.AbstractContextManager[list[int]]],
        args: argparse.Namespace) -> Result:  # fmt: skip
    with sidecars() as pids:
        return measure(name, OUT_PORT, pids, 2, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per leg and round (max 60)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (max 10)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    args.client = "wrk" if shutil.which("wrk") else "py"
    for binary in ("nginx", "haproxy"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is not installed")
    print(f"client={args.client} c={args.connections} {args.seconds:g}s x {args.rounds} rounds,"
          f" sidecars on CPU {args.proxy_cpu}, client+backend on CPU {args.client_cpu}")  # fmt: skip
    backend = " ".join(
        f'server {{ listen {HOST}:{p}; location / {{ return 200 "hello from the backend\\n"; }} }}'
        for p in BACKENDS
    )
    per: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as wd:
        conf = nginx_conf(wd, "backend", backend)
        with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
            for p in BACKENDS:
                wait_port(p)
            cpu = args.proxy_cpu
            legs: list[tuple[str, Callable[[], contextlib.AbstractContextManager[list[int]]]]] = [
                ("dp-native", lambda: native_sidecars(cpu)),
                ("dp-haproxy", lambda: haproxy_sidecars(wd, cpu)),
                ("dp-nginx", lambda: nginx_sidecars(wd, cpu)),
            ]
            for r in range(args.rounds):
                order = legs[r % len(legs) :] + legs[: r % len(legs)]  # rotate: order effects
                results = [leg(name, make, args) for name, make in order]
                results.append(run_nginx("mesh", wd, args))  # plain chain: the reference
                for res in results:
                    print(f"round {r + 1}: {res.line()}", flush=True)
                    per.setdefault(res.name, []).append(res.per_cpu_s)
    med = {k: statistics.median(v) for k, v in per.items()}
    for k, v in med.items():
        print(f"median {k:<10} {v:>9,.0f} hop-requests per proxy CPU-s = {v / med['nginx']:.2f}x"
              " a plain nginx hop")  # fmt: skip


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
