"""SO_REUSEPORT workers: several processes serve one port, each with its own trio loop, and stop
cleanly when the parent is told to; metrics can carry a worker label."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from gossipmesh.proxy.metrics import ProxyMetrics

WORKER_CODE = r"""
import sys, trio
from gossipmesh.proxy.server import Proxy, serve_workers

port = int(sys.argv[1])

def run(i):
    async def main():
        p = Proxy(outbound=("127.0.0.1", port), inbound=None, reuse_port=True)
        async with trio.open_nursery() as n:
            await n.start(p.serve)
            # One write: the two workers share the pipe, and print() may write its pieces apart.
            sys.stdout.write(f"ready {i}\n")
            sys.stdout.flush()
    trio.run(main)

sys.exit(serve_workers(2, run))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: nosuch\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_two_workers_share_a_port_and_stop_on_sigterm() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_CODE, str(port)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready = {proc.stdout.readline().split()[1] for _ in range(2)}
        assert ready == {b"0", b"1"}  # both bound the same port
        for _ in range(20):
            assert _get(port).startswith(b"HTTP/1.1 404 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # no worker failed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the port is free again: every worker is gone
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a worker still listens after the stop")


def test_worker_label_on_every_sample() -> None:
    m = ProxyMetrics(worker="3")
    m.observe("api", "", 200, "outbound", 1_000_000)
    text = m.render().decode()
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert samples and all('worker="3"' in ln for ln in samples)
    assert (
        'gossipmesh_proxy_requests_total{destination="",direction="outbound",node="",route=""'
        in text
    )
