"""User-space instructions per HTTP/2 request through the sidecar, counted by valgrind: the A/B
figure for the HTTP/2 path that the neighbours' load cannot move (benchmarks/h2_cpu.py's
CPU-seconds move by +-20 % between rounds of the same code on a shared machine). Not a test;
loopback only; every process started here is stopped on the way out.

Method, as benchmarks/proxy_instructions.py: the proxy of ``h2_cpu.py`` (same legs, nginx h2c
backend) runs under cachegrind (no cache simulation); h2load sends exactly N requests, then the
proxy is stopped; the same again with 2N; (I(2N) - I(N)) / N is one request's cost with start-up
and warm-up cancelled out. h2load runs ``-c1 -m1`` by default (one stream at a time: how many
requests one wake-up serves then does not follow the timing of the run); ``--streams 16
--connections 4`` measures the benchmark's shape, less exactly. ``--baseline DIR`` measures a
second source tree (``git archive COMMIT gossipmesh | tar -x -C DIR``) the same way.

    python benchmarks/h2_instructions.py --requests 300 --legs outbound mesh [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from h2_cpu import BACKEND_PORT, IN_PORT, OUT_PORT, PROXY_CODE  # noqa: E402
from proxy_cpu import HOST, launched, nginx_conf, wait_port  # noqa: E402

STARTUP_S = 120.0  # imports under valgrind are slow


def counted(leg: str, n: int, args: argparse.Namespace, source: str | None) -> int:
    """Instructions the proxy process executed from start to exit, serving ``n`` requests."""
    env = dict(os.environ)
    cwd = None
    if source is not None:
        env["PYTHONPATH"] = cwd = os.path.abspath(source)  # and run there: see proxy_cpu.py
    with tempfile.TemporaryDirectory() as wd:
        log = os.path.join(wd, "cg.log")
        argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                f"--cachegrind-out-file={wd}/cg.out", f"--log-file={log}",
                sys.executable, "-c", PROXY_CODE, leg,
                str(BACKEND_PORT), str(OUT_PORT), str(IN_PORT)]  # fmt: skip
        with launched(argv, stdout=subprocess.PIPE, env=env, cwd=cwd) as proc:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != b"ready":
                raise SystemExit(f"proxy did not start: {line!r}")
            load = ["h2load", "-t1", f"-c{args.connections}", f"-m{args.streams}", f"-n{n}",
                    f"http://{HOST}:{OUT_PORT}/"]  # fmt: skip
            out = subprocess.run(load, capture_output=True, text=True, timeout=STARTUP_S * 5)
            m = re.search(r"(\d+) succeeded", out.stdout)
            if m is None or int(m.group(1)) != n:
                raise SystemExit(f"h2load did not get {n} answers:\n{out.stdout}")
            os.kill(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=STARTUP_S)
        with open(log) as f:
            text = f.read()
    m = re.search(r"I\s+refs:\s+([\d,]+)", text)
    if m is None:
        raise SystemExit(f"no instruction count in {log}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="N (the second run sends 2N)")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--streams", type=int, default=1, help="concurrent streams per connection")
    ap.add_argument("--legs", nargs="+", default=["outbound"], choices=["outbound", "mesh"])
    ap.add_argument("--baseline", default=None, help="source tree of a proxy to compare with")
    args = ap.parse_args()
    for tool in ("valgrind", "nginx", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    n = max(50, min(args.requests, 20_000))
    backend = (
        f"server {{ listen {HOST}:{BACKEND_PORT} http2; http2_max_concurrent_streams 1000;"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    print(f"h2load c={args.connections} m={args.streams}, N={n} and 2N requests under cachegrind")
    with tempfile.TemporaryDirectory() as wd:
        conf = nginx_conf(wd, "h2backend", backend)
        with launched(["nginx", "-c", conf, "-p", wd]):
            wait_port(BACKEND_PORT)
            for leg in args.legs:
                hops = 2 if leg == "mesh" else 1
                per: dict[str, float] = {}
                sources = {"gossipmesh": None}
                if args.baseline is not None:
                    sources["baseline"] = args.baseline
                for name, source in sources.items():
                    one = counted(leg, n, args, source)
                    two = counted(leg, 2 * n, args, source)
                    per[name] = (two - one) / n / hops
                    print(f"{leg} {name:<12} {per[name]:>12,.0f} instructions per hop-request",
                          flush=True)  # fmt: skip
                if "baseline" in per:
                    print(f"{leg} gossipmesh / baseline {per['gossipmesh'] / per['baseline']:.3f}")


if __name__ == "__main__":
    main()
