"""Per-core cost of the proxy's hot path: requests per proxy CPU-second, against nginx in the same
run. Not a test; bounded (every leg runs ``--seconds``), loopback only, and every process started
here is stopped on the way out.

Why CPU-seconds: the machine's two cores are shared with other work, so wall-clock req/s mostly
measures the neighbours. The proxy's own utime+stime (from /proc) per request is what one core
of proxy costs; nginx (one worker) is measured the same way in the same run for the ratio.

Layout: the nginx backend and the load generator on CPU 0, the proxy under test on CPU 1 (when
``taskset`` exists). Load comes from wrk (one thread) when installed, else a small epoll client.

Legs, each with the mesh features on (a route matched by host and path prefix, a two-endpoint
least-request P2C pick, x-request-id and traceparent generated, x-forwarded-for, metrics):

- ``outbound``: app -> gossipmesh outbound -> backend, against app -> nginx -> backend.
- ``mesh``: app -> outbound -> inbound -> backend, both gossipmesh listeners in one process (the
  figure is per proxy *hop*: 2 x requests / CPU-s), against two nginx proxies in a chain (both
  workers' CPU).
- ``split``: the same path with the outbound and the inbound listener in two processes, as two
  sidecars run it (plaintext mesh hop, no agent around them; both processes' CPU, per hop).
- ``agents``: the same path through two real ``gossipmesh agent`` processes (benchmarks/
  gossip_legs.py: A's outbound -> B's inbound, *mTLS* on the hop as agents always run it, SWIM,
  config sync and health checks alongside), both agents' CPU, per hop; against the plaintext
  nginx chain and the chain with TLS 1.3 and client certificates on the hop (mtls_cpu.py's
  configs; both ratios print: benchmarks/agents_leg.py). Not with ``--baseline``. With
  ``--workers N`` each round also runs both agents with ``--proxy-workers N`` (``gm xN``).
- ``agent``: one real agent: its outbound -> its own inbound over mTLS (a local call meets the
  service's policies too: ``catalog.local_via_inbound``) -> the backend it hosts, counted as one
  hop against one nginx (so the ratio is not comparable to the others); ``--workers N`` as for
  ``agents``. With ``--agents-cpus 0,1`` this is the figure that shows whether one agent's proxy
  scales past one core.

For both, ``--agents-cpus 0,1`` runs the agents on both cores instead of ``--proxy-cpu``: how
their scaling over two cores is measured (wall req/s and req per CPU-second).

    python benchmarks/proxy_cpu.py --seconds 5 --rounds 3 --legs outbound mesh split [--workers N]
        [--engine epoll|tasks] [--baseline DIR]

``--baseline DIR`` also runs the proxy from another checkout's source tree (``DIR`` holds its
``gossipmesh`` package, e.g. ``git archive COMMIT gossipmesh | tar -x -C DIR``) in every round
(before ours in odd rounds, after it in even ones) and prints the median of the per-round
ratios to it: a paired A/B comparison that the neighbours' load disturbs less than two separate
runs would. On a shared machine it is still noisy; benchmarks/proxy_instructions.py is exact.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

HOST = "127.0.0.1"
BACKEND_PORT = 18190
OUT_PORT = 18191
IN_PORT = 18192
NGINX_PORT = 18193
NGINX2_PORT = 18194
STARTUP_S = 10.0

PROXY_CODE = r"""
import os, signal, sys, trio
from gossipmesh.config.schema import Destination, PathMatch, RouteConfig
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.server import Proxy, serve_workers
from gossipmesh.proxy.table import Endpoint, build_route_table

leg, backend, out_port, in_port, workers = sys.argv[1], *map(int, sys.argv[2:6])
engine = sys.argv[6]
route = RouteConfig("api-route", (Destination("api"),), hosts=("api",), path=PathMatch("prefix", "/"))

def proxies(worker):
    reuse = workers > 1
    m = lambda: ProxyMetrics(worker=str(worker) if reuse else "")
    if leg == "outbound":
        eps = [Endpoint(n, "127.0.0.1", backend) for n in ("n1", "n2")]
        ps = [Proxy(outbound=("127.0.0.1", out_port), inbound=None, metrics=m(), reuse_port=reuse,
                    engine=engine)]
    else:  # "mesh": both listeners here; "in" / "out": one of them (the "split" leg)
        eps = [Endpoint(n, "127.0.0.1", backend, inbound=("127.0.0.1", in_port)) for n in ("n1", "n2")]
        ps = []
        if leg != "out":
            ps.append(Proxy(outbound=None, inbound=("127.0.0.1", in_port), metrics=m(),
                            reuse_port=reuse, local_services={"api": [("127.0.0.1", backend)]},
                            engine=engine))
        if leg != "in":
            ps.append(Proxy(outbound=("127.0.0.1", out_port), inbound=None, metrics=m(),
                            reuse_port=reuse, engine=engine))
    table = build_route_table({}, {"api-route": route}, {"api": eps})
    for p in ps:
        p.update_table(table)
    return ps

def report(ps):
    reqs = {}
    for p in ps:
        for key, n in p.metrics.requests.items():  # (svc, route, [dest, node,] status, dir)
            svc, rt, status, direction = key[0], key[1], key[-2], key[-1]
            k = f"{direction}:{svc}:{rt or '-'}:{status}"
            reqs[k] = reqs.get(k, 0) + n
    return " ".join(f"{k}={n}" for k, n in sorted(reqs.items()))

def run(worker):
    ps = proxies(worker)
    async def main():
        with trio.open_signal_receiver(signal.SIGTERM) as stop:
            async with trio.open_nursery() as n:
                for p in ps:
                    await n.start(p.serve)
                os.write(1, b"ready\n")  # one write: workers share the pipe
                async for _ in stop:
                    break
                os.write(1, f"metrics {report(ps)}\n".encode())
                n.cancel_scope.cancel()
    trio.run(main)

if workers > 1:
    sys.exit(serve_workers(workers, run))
run(0)
"""


@dataclass
class Result:
    name: str
    requests: int
    wall_s: float
    user_s: float
    sys_s: float
    hops: int
    note: str = ""

    @property
    def per_cpu_s(self) -> float:
        return self.requests * self.hops / max(self.user_s + self.sys_s, 1e-9)

    def line(self) -> str:
        per_req = 1e6 / max(self.requests * self.hops, 1)
        return (
            f"{self.name:<12} {self.requests / self.wall_s:>9,.0f} req/s wall"
            f"  {self.per_cpu_s:>9,.0f} req per proxy CPU-s"
            f"  (user {self.user_s * per_req:5.1f} us + sys {self.sys_s * per_req:5.1f} us"
            f" per hop-request){self.note}"
        )


def pin(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) <= cpu:
        return []
    return ["taskset", "-c", str(cpu)]


def wait_port(port: int) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {HOST}:{port} after {STARTUP_S} s")


def nginx_conf(workdir: str, name: str, server: str) -> str:
    conf = os.path.join(workdir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(
            f"worker_processes 1; daemon off; pid {workdir}/{name}.pid;"
            f" error_log {workdir}/{name}.err warn;\n"
            "events { worker_connections 4096; }\n"
            "http { access_log off; keepalive_requests 1000000;\n"
            f"  client_body_temp_path {workdir}/{name}-b; proxy_temp_path {workdir}/{name}-p;\n"
            f"  fastcgi_temp_path {workdir}/{name}-f; uwsgi_temp_path {workdir}/{name}-u;\n"
            f"  scgi_temp_path {workdir}/{name}-s;\n  {server} }}\n"
        )
    return conf


def _nginx_proxy_server(listen: int, to: int) -> str:
    return (
        f"upstream be{listen} {{ server {HOST}:{to}; keepalive 64; }}"
        f" server {{ listen {HOST}:{listen}; location / {{ proxy_pass http://be{listen};"
        ' proxy_http_version 1.1; proxy_set_header Connection ""; } }'
    )


@contextlib.contextmanager
def launched(argv: list[str], **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group; on the way out stop the whole group."""
    proc = subprocess.Popen(argv, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def children(pid: int) -> list[int]:
    """Every descendant pid (nginx workers, SO_REUSEPORT proxy workers)."""
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out.append(int(c))
                    out.extend(children(int(c)))
    return out


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds summed over ``pids``."""
    tck = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11]) / tck
        system += int(fields[12]) / tck
    return user, system


# -- load generators --------------------------------------------------------------------------


def wrk_load(
    port: int, conns: int, seconds: float, cpu: int | None, host: str = HOST, authority: str = "api"
) -> int:
    argv = [
        *pin(cpu),
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "-H",
        f"Host: {authority}",
    ]
    out = subprocess.run(
        [*argv, f"http://{host}:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    m = re.search(r"(\d+) requests in", out)
    if m is None:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return int(m.group(1))


def py_load(port: int, conns: int, seconds: float, host: str = HOST, authority: str = "api") -> int:
    """Keep-alive GETs on ``conns`` connections; counts complete content-length responses."""
    req = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % authority.encode()
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    done = 0
    try:
        for _ in range(conns):
            s = socket.create_connection((host, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks[s.fileno()] = s
            bufs[s.fileno()] = bytearray()
            ep.register(s.fileno(), select.EPOLLIN)
            s.send(req)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for fd, _ in ep.poll(0.5):
                s = socks[fd]
                data = s.recv(65536)
                if not data:
                    raise SystemExit("proxy closed a connection")
                b = bufs[fd]
                b += data
                while True:
                    i = b.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    if not b.startswith(b"HTTP/1.1 200 "):
                        raise SystemExit(f"unexpected response {bytes(b[:i])!r}")
                    cl = int(b[:i].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(b) < i + 4 + cl:
                        break
                    del b[: i + 4 + cl]
                    done += 1
                    s.send(req)
    finally:
        for s in socks.values():
            s.close()
        ep.close()
    return done


# -- one leg ----------------------------------------------------------------------------------


def print_medians(leg: str, per: dict[str, list[float]]) -> None:
    """Each system's median over the rounds against nginx's, and, with a baseline tree, the
    paired per-round ratio gossipmesh / baseline (the figure the machine's load cannot move)."""
    med = {k: statistics.median(v) for k, v in per.items()}
    tls = med.get("nginx-tls")  # the agents leg: nginx with TLS on the hop too
    for k, v in med.items():
        also = f"  = {v / tls:.2f}x nginx-tls" if tls else ""
        print(
            f"{leg} median {k:<12} {v:>9,.0f} req per proxy CPU-s  = {v / med['nginx']:.2f}x nginx"
            + also
        )
    if "baseline" in per:
        paired = [a / b for a, b in zip(per["gossipmesh"], per["baseline"], strict=True)]
        print(
            f"{leg} gossipmesh / baseline per round: "
            + " ".join(f"{x:.3f}" for x in paired)
            + f"  median {statistics.median(paired):.3f}"
        )


def measure(
    name: str,
    port: int,
    pids: list[int],
    hops: int,
    args: argparse.Namespace,
    note: str = "",
    host: str = HOST,
    authority: str = "api",
) -> Result:
    conns, seconds = args.connections, args.seconds
    if args.client == "wrk":
        wrk_load(port, conns, 1.0, args.client_cpu, host, authority)  # warm up pools, caches
    else:
        py_load(port, conns, 1.0, host, authority)
    u0, s0 = cpu_split(pids)
    t0 = time.monotonic()
    if args.client == "wrk":
        n = wrk_load(port, conns, seconds, args.client_cpu, host, authority)
    else:
        n = py_load(port, conns, seconds, host, authority)
    wall = time.monotonic() - t0
    u1, s1 = cpu_split(pids)
    return Result(name, n, wall, u1 - u0, s1 - s0, hops, note)


# The proxy processes of each leg, in the order they start (the inbound side first).
ROLES = {"outbound": ("outbound",), "mesh": ("mesh",), "split": ("in", "out")}


def proxy_argv(role: str, workers: int, engine: str) -> list[str]:
    """PROXY_CODE as one process of ``role`` ("outbound", "mesh", "in" or "out")."""
    return [
        sys.executable,
        "-c",
        PROXY_CODE,
        role,
        str(BACKEND_PORT),
        str(OUT_PORT),
        str(IN_PORT),
        str(workers),
        engine,
    ]


def source_env(source: str | None) -> tuple[dict[str, str] | None, str | None]:
    """(env, cwd) that run PROXY_CODE from the source tree ``source`` (None: this checkout)."""
    if source is None:
        return None, None
    # Run from the source tree too: ``python -c`` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, so from a checkout's root ours would shadow it.
    cwd = os.path.abspath(source)
    return {**os.environ, "PYTHONPATH": cwd}, cwd


def run_gossipmesh(
    leg: str, workers: int, args: argparse.Namespace, source: str | None = None
) -> Result:
    env, cwd = source_env(source)
    cpu = pin(args.proxy_cpu if workers == 1 else None)
    with contextlib.ExitStack() as stack:
        procs = []
        for role in ROLES[leg]:
            proc = stack.enter_context(
                launched(
                    [*cpu, *proxy_argv(role, workers, args.engine)],
                    stdout=subprocess.PIPE,
                    env=env,
                    cwd=cwd,
                )
            )
            assert proc.stdout is not None
            for _ in range(workers):
                line = proc.stdout.readline().strip()
                if line != b"ready":
                    raise SystemExit(f"proxy did not start: {line!r}")
            procs.append(proc)
        pids = [pid for proc in procs for pid in (proc.pid, *children(proc.pid))]
        hops = 1 if leg == "outbound" else 2
        label = "gossipmesh" if workers == 1 else f"gm x{workers}"
        if source is not None:
            label = "baseline"
        res = measure(label, OUT_PORT, pids, hops, args)
        notes: list[str] = []
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # each worker prints its request counters and exits
            out, _ = proc.communicate(timeout=10)
            notes.extend(ln.removeprefix("metrics ") for ln in out.decode().splitlines())
        res.note = "  [" + " | ".join(notes) + "]"
        return res


def run_nginx(leg: str, workdir: str, args: argparse.Namespace) -> Result:
    with contextlib.ExitStack() as stack:
        pids = []
        chain = [(NGINX_PORT, BACKEND_PORT)]
        if leg not in ("outbound", "agent"):
            chain = [(NGINX_PORT, NGINX2_PORT), (NGINX2_PORT, BACKEND_PORT)]
        for i, (listen, to) in enumerate(chain):
            conf = nginx_conf(workdir, f"proxy{i}", _nginx_proxy_server(listen, to))
            proc = stack.enter_context(
                launched([*pin(args.proxy_cpu), "nginx", "-c", conf, "-p", workdir])
            )
            wait_port(listen)
            deadline = time.monotonic() + STARTUP_S
            while not children(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # the master listens before it forks its worker
            workers = children(proc.pid)
            if not workers:
                raise SystemExit("nginx started no worker")
            pids.append(proc.pid)
            pids.extend(workers)
        return measure("nginx", NGINX_PORT, pids, len(chain), args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per leg and round (max 60)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (max 10)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument(
        "--legs", nargs="+", default=["outbound"], choices=[*sorted(ROLES), "agent", "agents"]
    )
    ap.add_argument("--workers", type=int, default=1, help="also run N SO_REUSEPORT workers")
    ap.add_argument("--client", choices=["wrk", "py"], default=None)
    ap.add_argument(
        "--engine", choices=["epoll", "tasks"], default="epoll", help="Proxy(engine=...)"
    )
    ap.add_argument("--baseline", default=None, help="source tree of a proxy to compare with")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument(
        "--agents-cpus",
        default=None,
        help="taskset -c list for the agents leg (default: --proxy-cpu)",
    )
    args = ap.parse_args()
    if {"agent", "agents"} & set(args.legs) and args.baseline is not None:
        # The agents run `python -m gossipmesh` from the working directory: a baseline tree
        # would not be the one they import, and the figures would be mislabelled.
        ap.error("--legs agents takes no --baseline (run it from each tree instead)")
    if not 1 <= args.workers <= 64:
        ap.error("--workers must be 1..64")
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "py"
    backend_server = (
        f"server {{ listen {HOST}:{BACKEND_PORT};"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    print(
        f"client={args.client} c={args.connections} {args.seconds:g}s x {args.rounds} rounds,"
        f" proxy on CPU {args.proxy_cpu}, client+backend on CPU {args.client_cpu},"
        f" engine={args.engine}"
    )
    with tempfile.TemporaryDirectory() as wd:
        conf = nginx_conf(wd, "backend", backend_server)
        with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
            wait_port(BACKEND_PORT)
            for leg in args.legs:
                per: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    runs = [partial(run_gossipmesh, leg, 1, args)]
                    if leg in ("agent", "agents"):
                        import agents_leg  # agent processes (and nginx with TLS on the hop)

                        sidecars = 2 if leg == "agents" else 1
                        runs = [partial(agents_leg.run_agents, args, 1, sidecars)]
                        if leg == "agents":
                            runs.append(partial(agents_leg.run_nginx_tls, wd, args))
                        if args.workers > 1:  # the same agents with --proxy-workers N
                            runs.append(
                                partial(agents_leg.run_agents, args, args.workers, sidecars)
                            )
                    elif args.baseline is not None:
                        # Alternate which of the two runs first, so order effects cancel.
                        runs.insert(r % 2, partial(run_gossipmesh, leg, 1, args, args.baseline))
                    results = [run() for run in runs]
                    results.append(run_nginx(leg, wd, args))
                    if args.workers > 1 and leg not in ("agent", "agents"):
                        results.append(run_gossipmesh(leg, args.workers, args))
                    for res in results:
                        print(f"{leg} round {r + 1}: {res.line()}", flush=True)
                        per.setdefault(res.name, []).append(res.per_cpu_s)
                print_medians(leg, per)


if __name__ == "__main__":
    main()
