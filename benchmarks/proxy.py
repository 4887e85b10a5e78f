"""Data-plane throughput and latency: gossipmesh's sidecar proxy against nginx and HAProxy as plain
reverse proxies, with wrk as the load generator, all on this machine in one run.

Layout on 2 cores, as fair as two cores allow: the proxy under test is pinned to CPU 1 (so its
req/s *is* req/s per proxy core); wrk (one thread) and the nginx backend share CPU 0. For the
direct case the backend gets CPU 1. The mesh path (two gossipmesh proxies, sidecar to sidecar)
puts both proxies on CPU 1, so its figure is "per core" for the whole mesh hop.

    python benchmarks/proxy.py --duration 10 --connections 1 50

Prints req/s and p50/p99 for each leg and each as a ratio to nginx. Every process started here is
stopped on the way out; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
import gossip_legs  # noqa: E402
from _procs import Proc, wait_until  # noqa: E402

BACKEND_PORT = 18080
NGINX_PROXY_PORT = 18081
HAPROXY_PORT = 18082
BODY = "hello from the backend\n"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _nginx_conf(workdir: str, name: str, server_block: str) -> str:
    path = os.path.join(workdir, f"{name}.conf")
    with open(path, "w") as conf:
        conf.write(
            f"""
worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/{name}-body;
  proxy_temp_path {workdir}/{name}-proxy;
  fastcgi_temp_path {workdir}/{name}-fcgi;
  uwsgi_temp_path {workdir}/{name}-uwsgi;
  scgi_temp_path {workdir}/{name}-scgi;
  keepalive_requests 1000000;
  {server_block}
}}
"""
        )
    return path


def start_backend(workdir: str, cpu: int) -> Proc:
    conf = _nginx_conf(
        workdir,
        "backend",
        f"""server {{ listen 127.0.0.1:{BACKEND_PORT}; location / {{ return 200 "{BODY.strip()}\\n"; }} }}""",
    )
    proc = Proc("backend", ["taskset", "-c", str(cpu), "nginx", "-c", conf, "-p", workdir])
    proc.start()
    return proc


def start_nginx_proxy(workdir: str, cpu: int) -> Proc:
    conf = _nginx_conf(
        workdir,
        "nginxproxy",
        f"""upstream backend {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 64; }}
  server {{ listen 127.0.0.1:{NGINX_PROXY_PORT};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }} }}""",
    )
    proc = Proc("nginx-proxy", ["taskset", "-c", str(cpu), "nginx", "-c", conf, "-p", workdir])
    proc.start()
    return proc


def start_haproxy(workdir: str, cpu: int) -> Proc:
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as cfg:
        cfg.write(
            f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{HAPROXY_PORT}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{BACKEND_PORT}
"""
        )
    proc = Proc("haproxy", ["taskset", "-c", str(cpu), "haproxy", "-db", "-f", path])
    proc.start()
    return proc


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str, connections: int, duration_s: int, cpu: int, host_header: str | None
) -> WrkResult:
    argv = [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if host_header:
        argv += ["-H", f"Host: {host_header}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration_s + 30)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    # The distribution's lines ("     99%  1.20ms"), not the thread stats' "+/- Stdev" column
    # (which can read "99%" too when a run is that steady).
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, text)
        if match:
            errors += sum(int(g) for g in match.groups())
    return WrkResult(rps, p50, p99, errors)


@dataclass
class Leg:
    label: str
    url: str
    host_header: str | None
    start: Callable[[str], list[Proc]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (1-120)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--only", action="append", help="run only legs whose label contains this")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120 or any(not 1 <= c <= 1000 for c in args.connections):
        parser.error("--duration must be 1-120 and --connections 1-1000")
    for tool in ("wrk", "nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt-get install wrk nginx haproxy util-linux)")

    legs = [
        Leg("direct", f"http://127.0.0.1:{BACKEND_PORT}/", None, lambda w: []),
        Leg(
            "nginx",
            f"http://127.0.0.1:{NGINX_PROXY_PORT}/",
            None,
            lambda w: [start_nginx_proxy(w, 1)],
        ),
        Leg("haproxy", f"http://127.0.0.1:{HAPROXY_PORT}/", None, lambda w: [start_haproxy(w, 1)]),
        *(Leg(*leg) for leg in gossip_legs.legs(BACKEND_PORT)),
    ]
    if args.only:
        legs = [
            leg for leg in legs if any(o in leg.label for o in args.only) or leg.label == "nginx"
        ]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as workdir:
        for leg in legs:
            backend_cpu = 1 if leg.label == "direct" else 0
            procs = [start_backend(workdir, backend_cpu)]
            try:
                if not wait_until(lambda: _port_open("127.0.0.1", BACKEND_PORT), 10):
                    raise RuntimeError("backend nginx did not start")
                procs += leg.start(workdir)
                host, port = re.match(r"http://([\d.]+):(\d+)/", leg.url).groups()  # type: ignore[union-attr]
                if not wait_until(partial(_port_open, host, int(port)), 30):
                    raise RuntimeError(f"{leg.label} did not start listening")
                run_wrk(leg.url, 10, 2, 0, leg.host_header)  # warm-up
                for conns in args.connections:
                    res = run_wrk(leg.url, conns, args.duration, 0, leg.host_header)
                    results.append({"leg": leg.label, "connections": conns, **res.__dict__})
                    print(
                        f"{leg.label:<28} -c{conns:<4} {res.requests_per_s:>10.0f} req/s  "
                        f"p50 {res.p50_ms:7.3f} ms  p99 {res.p99_ms:7.3f} ms  errors {res.errors}",
                        flush=True,
                    )
            finally:
                for proc in reversed(procs):
                    proc.stop()
    print()
    print(
        f"{'leg':<28}{'conns':>6}{'req/s':>11}{'x nginx':>9}{'p50 ms':>9}{'x':>6}{'p99 ms':>9}{'x':>6}"
    )
    for conns in args.connections:
        ref = next((r for r in results if r["leg"] == "nginx" and r["connections"] == conns), None)
        for r in (r for r in results if r["connections"] == conns):
            if ref is None:
                continue
            print(
                f"{r['leg']:<28}{conns:>6}{r['requests_per_s']:>11.0f}"
                f"{r['requests_per_s'] / ref['requests_per_s']:>8.2f}x"
                f"{r['p50_ms']:>9.3f}{r['p50_ms'] / ref['p50_ms']:>6.2f}"
                f"{r['p99_ms']:>9.3f}{r['p99_ms'] / ref['p99_ms']:>6.2f}"
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"date": time.strftime("%Y-%m-%d"), "results": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
