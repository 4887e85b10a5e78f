"""HTTP/2 through the sidecar: requests per proxy CPU-second with h2load, against nginx's
HTTP/2 proxying (``grpc_pass``, its only HTTP/2 upstream) in the same run. Not a test; bounded
(every leg runs ``--seconds``), loopback only, every process started here stopped on the way
out. CPU pinning and the per-CPU-second figure as in benchmarks/proxy_cpu.py: the backend and
h2load on CPU 0, the proxy under test on CPU 1.

The backend is nginx serving h2c (prior knowledge) a small body; h2load opens ``--connections``
HTTP/2 connections with ``--streams`` concurrent streams each (h2c prior knowledge).
``--client grpc``: a grpcio client keeps connections x streams unary calls in flight on one
channel, against a grpcio backend (benchmarks/grpc_load.py), the same proxies in between.

- ``outbound``: h2load -> gossipmesh outbound -> backend (h2c), against h2load -> nginx
  (``listen ... http2``, ``grpc_pass``) -> backend.
- ``mesh``: h2load -> outbound -> inbound -> backend (both listeners in one process, the hop
  between them HTTP/2 over plaintext), per proxy hop (2 x requests / CPU-s), against two nginx
  in a chain.

    python benchmarks/h2_cpu.py --seconds 5 --rounds 3 --legs outbound mesh [--baseline DIR]

``--baseline DIR`` also runs the proxy from another source tree (``DIR`` holds its
``gossipmesh`` package, e.g. ``git archive COMMIT gossipmesh | tar -x -C DIR``) in every round,
before ours in odd rounds and after it in even ones, and prints the median of the per-round
ratios: a paired comparison the neighbours' load disturbs less than two separate runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial

sys.path.insert(0, os.path.dirname(__file__))
from proxy_cpu import (  # noqa: E402
    HOST,
    STARTUP_S,
    Result,
    children,
    cpu_split,
    launched,
    nginx_conf,
    pin,
    print_medians,
    wait_port,
)

BACKEND_PORT = 18290
OUT_PORT = 18291
IN_PORT = 18292
NGINX_PORT = 18293
NGINX2_PORT = 18294
GRPC_LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpc_load.py")

PROXY_CODE = r"""
import os, signal, sys, trio
from gossipmesh.config.schema import Destination, PathMatch, RouteConfig
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table

leg, backend, out_port, in_port = sys.argv[1], *map(int, sys.argv[2:5])
route = RouteConfig("api-route", (Destination("api"),), path=PathMatch("prefix", "/"))
if leg == "outbound":
    eps = [Endpoint(n, "127.0.0.1", backend) for n in ("n1", "n2")]
    ps = [Proxy(outbound=("127.0.0.1", out_port), inbound=None)]
else:
    eps = [Endpoint(n, "127.0.0.1", backend, inbound=("127.0.0.1", in_port)) for n in ("n1", "n2")]
    ps = [Proxy(outbound=None, inbound=("127.0.0.1", in_port),
                local_services={"api": [("127.0.0.1", backend)]}),
          Proxy(outbound=("127.0.0.1", out_port), inbound=None)]
table = build_route_table({}, {"api-route": route}, {"api": eps})
for p in ps:
    p.update_table(table)

async def main():
    with trio.open_signal_receiver(signal.SIGTERM) as stop:
        async with trio.open_nursery() as n:
            for p in ps:
                await n.start(p.serve)
            os.write(1, b"ready\n")
            async for _ in stop:
                break
            reqs = {}
            for p in ps:
                for labels, k in p.metrics.requests.items():  # (..., status, direction)
                    key = f"{labels[-1]}:{labels[-2]}"
                    reqs[key] = reqs.get(key, 0) + k
            os.write(1, ("metrics " + " ".join(f"{k}={v}" for k, v in sorted(reqs.items())) + "\n").encode())
            n.cancel_scope.cancel()
trio.run(main)
"""


def h2load(port: int, args: argparse.Namespace, seconds: float) -> int:
    argv = [
        *pin(args.client_cpu), "h2load", "-t1", f"-c{args.connections}", f"-m{args.streams}",
        f"-D{max(1, round(seconds))}", f"http://{HOST}:{port}/",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
    if m is None:
        raise SystemExit(f"cannot read h2load output:\n{out}")
    done, ok = int(m.group(3)), int(m.group(4))
    if ok < done:
        raise SystemExit(f"h2load saw failures:\n{out}")
    return ok


def grpc_calls(port: int, args: argparse.Namespace, seconds: float) -> int:
    """``--client grpc``: a grpcio client (benchmarks/grpc_load.py) with connections x streams
    unary calls in flight on one channel; the number of calls that succeeded."""
    inflight = args.connections * args.streams
    argv = [*pin(args.client_cpu), sys.executable, GRPC_LOAD, "client", str(port),
            str(seconds), str(inflight)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"ok (\d+) failed (\d+)", out)
    if m is None or int(m.group(2)):
        raise SystemExit(f"grpc client saw failures or did not finish:\n{out}")
    return int(m.group(1))


def measure(name: str, port: int, pids: list[int], hops: int, args: argparse.Namespace) -> Result:
    load = grpc_calls if args.client == "grpc" else h2load
    load(port, args, 1.0)  # warm up connections and caches
    u0, s0 = cpu_split(pids)
    t0 = time.monotonic()
    n = load(port, args, args.seconds)
    wall = time.monotonic() - t0
    u1, s1 = cpu_split(pids)
    return Result(name, n, wall, u1 - u0, s1 - s0, hops)


def run_gossipmesh(leg: str, args: argparse.Namespace, source: str | None = None) -> Result:
    argv = [*pin(args.proxy_cpu), sys.executable, "-c", PROXY_CODE, leg,
            str(BACKEND_PORT), str(OUT_PORT), str(IN_PORT)]  # fmt: skip
    env = dict(os.environ)
    cwd = None
    if source is not None:
        # Run from the source tree too: ``python -c`` puts the working directory first on
        # sys.path, ahead of PYTHONPATH, so from a checkout's root ours would shadow it.
        env["PYTHONPATH"] = cwd = os.path.abspath(source)
    with launched(argv, stdout=subprocess.PIPE, env=env, cwd=cwd) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != b"ready":
            raise SystemExit(f"proxy did not start: {line!r}")
        name = "gossipmesh" if source is None else "baseline"
        res = measure(name, OUT_PORT, [proc.pid], 2 if leg == "mesh" else 1, args)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        res.note = "  [" + out.decode().strip().removeprefix("metrics ") + "]"
        return res


def nginx_h2_proxy(listen: int, to: int) -> str:
    return (
        f"upstream be{listen} {{ server {HOST}:{to}; keepalive 64; }}"
        f" server {{ listen {HOST}:{listen} http2; http2_max_concurrent_streams 1000;"
        f" location / {{ grpc_pass grpc://be{listen}; }} }}"
    )


def run_nginx(leg: str, workdir: str, args: argparse.Namespace) -> Result:
    with contextlib.ExitStack() as stack:
        pids: list[int] = []
        chain = [(NGINX_PORT, BACKEND_PORT)]
        if leg == "mesh":
            chain = [(NGINX_PORT, NGINX2_PORT), (NGINX2_PORT, BACKEND_PORT)]
        for i, (listen, to) in enumerate(chain):
            conf = nginx_conf(workdir, f"h2proxy{i}", nginx_h2_proxy(listen, to))
            proc = stack.enter_context(
                launched([*pin(args.proxy_cpu), "nginx", "-c", conf, "-p", workdir])
            )
            wait_port(listen)
            deadline = time.monotonic() + STARTUP_S
            while not children(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            pids += [proc.pid, *children(proc.pid)]
        return measure("nginx", NGINX_PORT, pids, len(chain), args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per leg and round (max 60)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (max 10)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    ap.add_argument("--legs", nargs="+", default=["outbound"], choices=["outbound", "mesh"])
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="source tree of a proxy to compare with")
    ap.add_argument(
        "--client",
        choices=["h2load", "grpc"],
        default="h2load",
        help="grpc: a grpcio client and a grpcio backend (benchmarks/grpc_load.py)",
    )
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    backend = (
        f"server {{ listen {HOST}:{BACKEND_PORT} http2; http2_max_concurrent_streams 1000;"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    print(
        f"{args.client} c={args.connections} m={args.streams} {args.seconds:g}s x {args.rounds}"
        f" rounds, proxy on CPU {args.proxy_cpu}, client+backend on CPU {args.client_cpu}"
    )
    with tempfile.TemporaryDirectory() as wd:
        conf = nginx_conf(wd, "h2backend", backend)
        serve = [*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]
        if args.client == "grpc":
            serve = [*pin(args.client_cpu), sys.executable, GRPC_LOAD, "server", str(BACKEND_PORT)]
        with launched(serve):
            wait_port(BACKEND_PORT)
            for leg in args.legs:
                per: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    runs = [partial(run_gossipmesh, leg, args)]
                    if args.baseline is not None:
                        # Alternate which of the two runs first, so order effects cancel.
                        runs.insert(r % 2, partial(run_gossipmesh, leg, args, args.baseline))
                    runs.append(partial(run_nginx, leg, wd, args))
                    for run in runs:
                        res = run()
                        print(f"{leg} round {r + 1}: {res.line()}", flush=True)
                        per.setdefault(res.name, []).append(res.per_cpu_s)
                print_medians(leg, per)


if __name__ == "__main__":
    main()
