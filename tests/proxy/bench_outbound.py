"""A small, bounded load loop for the proxy's hot path (not a test; the wrk benchmark lives in
benchmarks/). Starts an nginx backend, one proxy process, and an epoll client in this process,
then reports req/s and req/s per proxy CPU-second (from /proc), which is what "per core" means
when the machine is shared.

    python tests/proxy/bench_outbound.py --seconds 5 --connections 50 [--hops 2]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

BACKEND_PORT = 18190
OUT_PORT = 18191
IN_PORT = 18192

PROXY_CODE = """
import sys, trio
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table
hops, backend, out_port, in_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def main():
    async with trio.open_nursery() as n:
        if hops == 1:
            ep = Endpoint("local", "127.0.0.1", backend)
            p = Proxy(outbound=("127.0.0.1", out_port), inbound=None)
            p.update_table(build_route_table({}, {}, {"api": [ep]}))
            await n.start(p.serve)
        else:
            b = Proxy(outbound=None, inbound=("127.0.0.1", in_port),
                      local_services={"api": [("127.0.0.1", backend)]})
            await n.start(b.serve)
            ep = Endpoint("b", "127.0.0.1", backend, inbound=("127.0.0.1", in_port))
            a = Proxy(outbound=("127.0.0.1", out_port), inbound=None)
            a.update_table(build_route_table({}, {}, {"api": [ep]}))
            await n.start(a.serve)
        print("ready", flush=True)
trio.run(main)
"""


def nginx(workdir: str, proxy: bool = False) -> subprocess.Popen[bytes]:
    name = "proxy" if proxy else "backend"
    conf = os.path.join(workdir, f"{name}.conf")
    if proxy:
        server = (
            f"upstream be {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 64; }}"
            f" server {{ listen 127.0.0.1:{OUT_PORT}; location / {{ proxy_pass http://be;"
            ' proxy_http_version 1.1; proxy_set_header Connection ""; } }'
        )
    else:
        server = (
            f"server {{ listen 127.0.0.1:{BACKEND_PORT};"
            ' location / { return 200 "hello from the backend\\n"; } }'
        )
    with open(conf, "w") as f:
        f.write(
            f"""worker_processes 1; daemon off; pid {workdir}/{name}.pid; error_log {workdir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {workdir}/b; proxy_temp_path {workdir}/p; fastcgi_temp_path {workdir}/f;
  uwsgi_temp_path {workdir}/u; scgi_temp_path {workdir}/s;
  {server} }}
"""
        )
    return subprocess.Popen(["nginx", "-c", conf, "-p", workdir])


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def load(port: int, conns: int, seconds: float) -> int:
    req = b"GET / HTTP/1.1\r\nHost: api\r\n\r\n"
    ep = select.epoll()
    socks = {}
    bufs: dict[int, bytearray] = {}
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks[s.fileno()] = s
        bufs[s.fileno()] = bytearray()
        ep.register(s.fileno(), select.EPOLLIN)
        s.send(req)
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for fd, _ in ep.poll(0.5):
            s = socks[fd]
            data = s.recv(65536)
            if not data:
                raise SystemExit("proxy closed a connection")
            b = bufs[fd]
            b += data
            # Responses are small and content-length framed; count complete ones.
            while True:
                i = b.find(b"\r\n\r\n")
                if i < 0:
                    break
                cl = int(b[:i].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(b) < i + 4 + cl:
                    break
                del b[: i + 4 + cl]
                done += 1
                s.send(req)
    for s in socks.values():
        s.close()
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--hops", type=int, default=1, choices=[1, 2])
    ap.add_argument("--nginx-proxy", action="store_true", help="measure nginx as the proxy instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as wd:
        backend = nginx(wd)
        if args.nginx_proxy:
            proxy = nginx(wd, proxy=True)
            time.sleep(0.5)
            with open(f"/proc/{proxy.pid}/task/{proxy.pid}/children") as f:
                worker = int(f.read().split()[0])
        else:
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PROXY_CODE,
                    str(args.hops),
                    str(BACKEND_PORT),
                    str(OUT_PORT),
                    str(IN_PORT),
                ],
                stdout=subprocess.PIPE,
            )
            worker = proxy.pid
        try:
            if not args.nginx_proxy:
                assert proxy.stdout is not None
                assert proxy.stdout.readline().strip() == b"ready"
            time.sleep(0.3)
            load(OUT_PORT, args.connections, 0.5)  # warm up
            cpu0 = cpu_seconds(worker)
            u0, s0 = cpu_split(worker)
            t0 = time.monotonic()
            n = load(OUT_PORT, args.connections, args.seconds)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(worker) - cpu0
            u1, s1 = cpu_split(worker)
            print(
                f"{'nginx' if args.nginx_proxy else 'gossipmesh'} hops={args.hops} c={args.connections}: {n / wall:,.0f} req/s wall, "
                f"proxy cpu {cpu:.2f}s of {wall:.2f}s -> {n / max(cpu, 1e-9):,.0f} req/s per proxy core"
                f" (user {u1 - u0:.2f}s, sys {s1 - s0:.2f}s)"
            )
        finally:
            proxy.terminate()
            backend.terminate()
            proxy.wait(5)
            backend.wait(5)


if __name__ == "__main__":
    main()
