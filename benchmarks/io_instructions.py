"""Instructions (valgrind cachegrind, user space) of two pieces of the proxy's I/O, each measured
as (I(2N) - I(N)) / N so start-up cancels out. Not a test; loopback only; bounded.

- ``tls``: one 300-byte message each way through a TLS socket pair in one process (a send and a
  ``recv_into`` on each end, a whole record always there): the cost of the TLS layer itself,
  ``TlsSocket`` (memory BIOs) of this tree, or of another tree with ``--source DIR`` (the
  ``ssl.SSLSocket`` path before 2026-12-04). The old path's extra read until EAGAIN (a raised
  ``SSLWantReadError`` per request) is not in this figure.
- ``wake``: one ping-pong message at one connection served by (a) a bare blocking epoll loop,
  (b) a trio task over a private edge-triggered epoll, the engine's shape (trio's ``epoll_wait``,
  the re-arm of its one-shot registration, the engine's ``poll(0)``, a scheduler pass), (c) the
  same task blocking briefly in its own epoll when ``trio.lowlevel.current_statistics()`` says
  nothing else is runnable or due, and (d) blocking there unconditionally (the floor of (c)).
  The client is a plain process outside valgrind.

    python benchmarks/io_instructions.py tls [--source DIR]
    python benchmarks/io_instructions.py wake
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

PORT = 18290
HERE = os.path.dirname(os.path.abspath(__file__))


def tls_pair() -> tuple[Any, Any]:
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "proxy"))
    from mtls_helpers import Pki, Wall

    from gossipmesh.proxy import tls
    from gossipmesh.proxy.mtls import make_context

    pki = Pki(Wall())
    roots = (pki.ca.cert_der,)
    sc = make_context(True, pki.credentials("n2", ["api"]).services["api"], roots,
                      tls.ALPN_PROTOCOLS)  # fmt: skip
    cc = make_context(False, pki.credentials("n1", ["web"]).services["web"], roots,
                      (tls.ALPN_HTTP,))  # fmt: skip
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    if hasattr(tls, "READ_BYTES"):  # memory BIOs
        s: Any = tls.TlsSocket(sc, a, True, None)
        c: Any = tls.TlsSocket(cc, b, False, "api")
    else:  # the SSLSocket path (the context makes its class)
        s = sc.wrap_socket(a, server_side=True, do_handshake_on_connect=False,
                           suppress_ragged_eofs=False)  # fmt: skip
        c = cc.wrap_socket(b, server_hostname="api", do_handshake_on_connect=False,
                           suppress_ragged_eofs=False)  # fmt: skip
    for _ in range(100):
        done = 0
        for x in (s, c):
            try:
                x.do_handshake()
                done += 1
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        if done == 2:
            return s, c
    raise SystemExit("no handshake")


def run_tls(n: int) -> None:
    s, c = tls_pair()
    buf = bytearray(32768)
    msg = b"x" * 300

    def read(x: Any) -> int:
        while True:
            try:
                return int(x.recv_into(buf))
            except (BlockingIOError, ssl.SSLWantReadError):
                continue

    for _ in range(n):
        c.send(msg)
        read(s)
        s.send(msg)
        read(c)


def run_wake(mode: str) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", PORT))
    ls.listen(1)
    os.write(1, b"ready\n")
    s, _ = ls.accept()
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(4096)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
    if mode == "epoll":
        while True:
            ep.poll(-1)
            n = s.recv_into(buf)
            if not n:
                return
            s.send(buf[:n])
    import trio

    stats = trio.lowlevel.current_statistics

    async def main() -> None:
        wait_readable = trio.lowlevel.wait_readable
        while True:
            events: list[tuple[int, int]] = []
            if mode == "direct-always":
                events = ep.poll(0.001, 128)
            elif mode == "direct":
                st = stats()
                if st.tasks_runnable == 0 and st.seconds_to_next_deadline > 0.002:
                    events = ep.poll(0.001, 128)
            if not events:
                await wait_readable(ep.fileno())
                events = ep.poll(0, 128)
            for _ in events:
                n = s.recv_into(buf)
                if not n:
                    return
                s.send(buf[:n])

    trio.run(main)


def ping_pong(n: int) -> None:
    with socket.create_connection(("127.0.0.1", PORT)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            s.send(b"x" * 200)
            s.recv(4096)


def instructions(argv: list[str], env: dict[str, str], client: int = 0) -> int:
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               f"--log-file={log.name}", sys.executable, __file__, *argv]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
        try:
            if client:
                assert proc.stdout is not None
                proc.stdout.readline()
                time.sleep(0.5)
                ping_pong(client)
            proc.wait(600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        m = re.search(r"I\s+refs:\s+([\d,]+)", log.read())
        if m is None:
            raise SystemExit("no instruction count")
        return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["tls", "wake", "run-tls", "run-wake"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--source", default=None, help="tree whose gossipmesh the tls case imports")
    ap.add_argument("--mode", default="trio")
    args = ap.parse_args()
    n = max(100, min(args.n, 50_000))
    if args.what == "run-tls":
        run_tls(n)
        return
    if args.what == "run-wake":
        run_wake(args.mode)
        return
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = os.path.abspath(args.source)
    if args.what == "tls":
        one = instructions(["run-tls", "--n", str(n)], env)
        two = instructions(["run-tls", "--n", str(2 * n)], env)
        print(f"tls ({args.source or 'this tree'}): {(two - one) / n:,.0f} instructions per round"
              " trip (two sends, two reads)")  # fmt: skip
        return
    for mode in ("epoll", "trio", "direct", "direct-always"):
        one = instructions(["run-wake", "--mode", mode], env, n)
        two = instructions(["run-wake", "--mode", mode], env, 2 * n)
        print(f"wake {mode:<14} {(two - one) / n:>8,.0f} instructions per message", flush=True)


if __name__ == "__main__":
    main()
