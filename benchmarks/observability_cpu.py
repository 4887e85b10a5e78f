"""What the per-request stream costs: requests per proxy CPU-second on the mesh leg (app -> outbound
-> inbound -> nginx backend, both gossipmesh listeners in one process; per hop: 2 x requests /
CPU-s) with access logging off, on at 100 % and at 1 % sampling, and with span export on at 1 %.
Not a test; bounded (every leg runs ``--seconds``), loopback only, every process started here is
stopped on the way out.

- ``off``: nothing listens (``RequestLog.on`` is False: the call sites skip it).
- ``log100`` / ``log1``: an ``AccessLog`` on both listeners into a file in a temporary directory
  (sampling 1.0 / 0.01, no rate limit in the way: 10^6 lines/s), its writer task running.
- ``spans1``: a ``SpanSink`` on both listeners, the OpenTelemetry SDK's ``BatchSpanProcessor``
  and OTLP/HTTP exporter to a receiver in this script (which answers 200 and counts), ratio
  0.01. The load sends no ``traceparent``: every trace starts at the outbound, sampled flag set.

Variants run in every round in a rotating order (so drift and neighbours spread over all of them);
the median per variant and its ratio to ``off`` are printed. The loss of ``off`` against the code
before the request log is ``benchmarks/proxy_cpu.py --legs mesh --baseline DIR`` (paired A/B).

    python benchmarks/observability_cpu.py --seconds 5 --rounds 3 [--variants off log100 ...]

``--instructions N`` counts instead the proxy process's user-space instructions per hop-request
under valgrind's cachegrind, as ``benchmarks/proxy_instructions.py`` does ((I(2N) - I(N)) / N,
start-up cancelled out): exact where CPU-seconds on a shared machine are not (the writer's and
the exporter's threads are in the count; the kernel's share of the file writes is not).

    python benchmarks/observability_cpu.py --instructions 3000 --rounds 2
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
from proxy_cpu import (  # noqa: E402
    BACKEND_PORT,
    HOST,
    IN_PORT,
    OUT_PORT,
    Result,
    children,
    launched,
    measure,
    nginx_conf,
    pin,
    wait_port,
)
from proxy_instructions import count_load  # noqa: E402

VARIANTS = ("off", "log100", "log1", "spans1")
STARTUP_S = 120.0  # imports under valgrind are slow

PROXY_CODE = r"""
import os, signal, sys, trio
from gossipmesh.config.schema import Destination, PathMatch, RouteConfig, validate_entity
from gossipmesh.proxy.record_sinks import AccessLog
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table

variant, backend, out_port, in_port, workdir, otlp = sys.argv[1], *map(int, sys.argv[2:5]), *sys.argv[5:7]
route = RouteConfig("api-route", (Destination("api"),), hosts=("api",), path=PathMatch("prefix", "/"))
eps = [Endpoint(n, "127.0.0.1", backend, inbound=("127.0.0.1", in_port)) for n in ("n1", "n2")]
ps = [
    Proxy(outbound=None, inbound=("127.0.0.1", in_port), local_services={"api": [("127.0.0.1", backend)]}),
    Proxy(outbound=("127.0.0.1", out_port), inbound=None),
]
# Generous timeouts: under valgrind (--instructions) a hop is some 50 times slower.
api = validate_entity("service", "api", {"timeouts": {"connect_ms": 60000, "request_ms": 300000,
                                                      "per_try_ms": 300000}})
table = build_route_table({"api": api}, {"api-route": route}, {"api": eps})
for p in ps:
    p.update_table(table)
sinks = []
if variant.startswith("log"):
    fd = os.open(os.path.join(workdir, variant + ".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sinks.append(AccessLog(fd, 1.0 if variant == "log100" else 0.01, 1_000_000))
elif variant == "spans1":
    from gossipmesh.proxy.spans import otlp_sink
    sinks.append(otlp_sink(otlp, "bench", 0.01))
for p in ps:
    for s in sinks:
        p.requests.add(s)

async def main():
    with trio.open_signal_receiver(signal.SIGTERM) as stop:
        async with trio.open_nursery() as n:
            for p in ps:
                await n.start(p.serve)
            for s in sinks:
                if isinstance(s, AccessLog):
                    n.start_soon(s.run)
            os.write(1, b"ready\n")
            async for _ in stop:
                break
            notes = []
            for s in sinks:
                if isinstance(s, AccessLog):
                    notes.append(f"lines pending={len(s.pending)} {s.counters}")
                else:
                    notes.append(f"spans exported={s.exported}")
            served = sum(sum(p.metrics.requests.values()) for p in ps)
            os.write(1, f"metrics hop-requests={served} {' '.join(notes)}\n".encode())
            n.cancel_scope.cancel()
trio.run(main)
"""


class Receiver:
    """An OTLP/HTTP endpoint that answers 200 and counts the bytes (in this process, so its CPU
    is not the proxy's)."""

    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                self.rfile.read(n)
                owner.posts += 1
                owner.bytes += n
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_variant(variant: str, workdir: str, otlp: str, args: argparse.Namespace) -> Result:
    argv = [*pin(args.proxy_cpu), sys.executable, "-c", PROXY_CODE, variant, str(BACKEND_PORT),
            str(OUT_PORT), str(IN_PORT), workdir, otlp]  # fmt: skip
    with launched(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != b"ready":
            raise SystemExit(f"proxy did not start: {line!r}")
        res = measure(variant, OUT_PORT, [proc.pid, *children(proc.pid)], 2, args)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        notes = [ln.removeprefix("metrics ") for ln in out.decode().splitlines()]
        res.note = "  [" + " | ".join(notes) + "]"
        return res


def instructions(variant: str, n: int, workdir: str, otlp: str, conns: int) -> int:
    """The proxy's instructions from start to exit serving ``n`` requests (cachegrind)."""
    log = os.path.join(workdir, f"cg-{variant}-{n}.log")
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
            f"--cachegrind-out-file={workdir}/cg.out", f"--log-file={log}",
            sys.executable, "-c", PROXY_CODE, variant, str(BACKEND_PORT), str(OUT_PORT),
            str(IN_PORT), workdir, otlp]  # fmt: skip
    with launched(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != b"ready":
            raise SystemExit(f"proxy did not start: {line!r}")
        count_load(OUT_PORT, conns, n)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=STARTUP_S)
    with open(log) as f:
        m = re.search(r"I\s+refs:\s+([\d,]+)", f.read())
    if m is None:
        raise SystemExit(f"no instruction count in {log}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per variant and round (max 60)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (max 10)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--client", choices=["wrk", "py"], default=None)
    ap.add_argument("--instructions", type=int, default=0, help="N: count instructions instead")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "py"
    backend_server = (
        f"server {{ listen {HOST}:{BACKEND_PORT};"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    print(f"client={args.client} c={args.connections} {args.seconds:g}s x {args.rounds} rounds,"
          f" mesh leg, proxy on CPU {args.proxy_cpu}, client+backend on CPU {args.client_cpu}")  # fmt: skip
    receiver = Receiver()
    per: dict[str, list[float]] = {}
    n = max(100, min(args.instructions, 100_000))
    try:
        with tempfile.TemporaryDirectory() as wd:
            conf = nginx_conf(wd, "backend", backend_server)
            with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
                wait_port(BACKEND_PORT)
                variants = list(args.variants)
                for r in range(args.rounds):
                    order = variants[r % len(variants) :] + variants[: r % len(variants)]
                    for v in order:
                        if args.instructions:
                            one = instructions(v, n, wd, receiver.url, args.connections)
                            two = instructions(v, 2 * n, wd, receiver.url, args.connections)
                            value = (two - one) / n / 2  # per hop-request
                            print(f"round {r + 1}: {v:<8} {value:>9,.0f} instructions per "
                                  "hop-request", flush=True)  # fmt: skip
                        else:
                            res = run_variant(v, wd, receiver.url, args)
                            print(f"round {r + 1}: {res.line()}", flush=True)
                            value = res.per_cpu_s
                        per.setdefault(v, []).append(value)
    finally:
        receiver.close()
    med = {k: statistics.median(v) for k, v in per.items()}
    base = med.get("off")
    unit = "instructions per hop-request" if args.instructions else "req per proxy CPU-s"
    for k in args.variants:
        ratio = f"  = {med[k] / base:.3f} of off" if base else ""
        print(f"median {k:<8} {med[k]:>9,.0f} {unit}{ratio}")
    print(f"OTLP receiver: {receiver.posts} exports, {receiver.bytes:,} bytes")


if __name__ == "__main__":
    main()
