"""User-space instructions per proxied request, counted by valgrind: an A/B figure the neighbours'
load cannot move. Not a test; loopback only; every process started here is stopped on the way out.

Why: on a shared two-core machine ``proxy_cpu.py``'s CPU-seconds per request move by ±20 % between
rounds of the *same* code, so a 3 % change in the proxy's own cost is invisible there. Valgrind's
``cachegrind`` (no cache simulation) counts the instructions the proxy process executes, which
depend only on the code and the requests. It does not see the kernel's share (the syscalls, which
a refactoring of the Python does not change) nor cache misses; read it next to ``proxy_cpu.py``.

Method: the proxy of ``proxy_cpu.py`` (same features, same legs, nginx backend) runs under
cachegrind; a keep-alive client sends exactly N requests over ``--connections`` connections, then
the proxy is stopped; the same again with 2N. (I(2N) - I(N)) / N is the cost of one request with
start-up, imports and warm-up cancelled out. ``--baseline DIR`` measures a second source tree
(``git archive COMMIT gossipmesh | tar -x -C DIR``) the same way, alternating with ours.

Still not exact: how many requests one epoll wait serves, and how often the watchdog ticks per
request, follow the timing of the run; two runs of the same code differ by up to about 2 %.
``--repeat K`` measures K times and reports medians (and the median of the paired ratios).
``--syscalls`` counts the proxy's syscalls per request by name instead (``strace -f -c``, the
same N / 2N difference): the kernel's share, which instructions do not show. ``--cache-sim``
reports cachegrind's simulated I1/D1/LL misses per request (a model of this machine's caches).

    python benchmarks/proxy_instructions.py --requests 3000 --legs outbound mesh --repeat 3 \
        [--baseline DIR]

``--legs mtls`` counts the two-process hop with mutual TLS (mtls_cpu.py's sidecars).
``--handlers`` (the compiled build only) counts with callgrind only inside the engine's two event
handlers (``Conn.on_down``, ``UpReg.on_event``: a request's own work, without trio and the
wake-ups): unlike the whole process, that does not move with how many requests a wake-up serves,
which follows the timing (the per-process figures move by about 10 % a run on a loaded machine).
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

import mtls_cpu
from _procs import strace_counts
from proxy_cpu import (
    BACKEND_PORT,
    HOST,
    OUT_PORT,
    ROLES,
    launched,
    nginx_conf,
    proxy_argv,
    source_env,
    wait_port,
)

STARTUP_S = 120.0  # imports under valgrind are slow
# The compiled build's entry points of the engine's event handlers (mypyc's names).
HANDLERS = ("CPyPy_engine_conn___Conn___on_down", "CPyPy_engine___UpReg___on_event")
# ``mtls``: the two-process mesh hop with mutual TLS (mtls_cpu.py's sidecars: the agent's own
# credentials and peer checks), both processes counted, per hop.
LEGS = {**ROLES, "mtls": ("in", "out")}


def leg_argv(leg: str, role: str, workdir: str) -> list[str]:
    if leg != "mtls":
        return proxy_argv(role, 1, "epoll")
    ports = (OUT_PORT, mtls_cpu.IN_PORT, BACKEND_PORT, BACKEND_PORT)  # both instances: one nginx
    return [sys.executable, "-c", mtls_cpu.SIDECAR, role, HOST, workdir, *map(str, ports)]


def count_load(port: int, conns: int, total: int) -> None:
    """Exactly ``total`` keep-alive GETs spread over ``conns`` connections, each answered 200."""
    req = b"GET / HTTP/1.1\r\nHost: api\r\n\r\n"
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    sent = done = 0
    try:
        for _ in range(min(conns, total)):
            s = socket.create_connection((HOST, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks[s.fileno()] = s
            bufs[s.fileno()] = bytearray()
            ep.register(s.fileno(), select.EPOLLIN)
            s.send(req)
            sent += 1
        while done < total:
            events = ep.poll(60.0)
            if not events:
                raise SystemExit(f"no answer for 60 s after {done} of {total} requests")
            for fd, _ in events:
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
                    if sent < total:
                        s.send(req)
                        sent += 1
    finally:
        for s in socks.values():
            s.close()
        ep.close()


def counted(
    leg: str, requests: int, conns: int, source: str | None, tool: str
) -> dict[str, dict[str, int]]:
    """What each of the leg's proxy processes (by role) did from start to exit, serving
    ``requests``: ``{"instructions": n}`` under cachegrind, or calls per syscall name under
    ``strace -f -c``."""
    env, cwd = source_env(source)
    if leg == "mtls":
        env = {**(env or os.environ), "MTLS_SLOW": "1"}  # valgrind-slow handshakes
    with tempfile.TemporaryDirectory() as wd, contextlib.ExitStack() as stack:
        logs = []
        procs = []
        if leg == "mtls":  # the root both sidecars' certificates chain to
            subprocess.run(leg_argv(leg, "ca", wd), check=True, env=env, cwd=cwd)
        for role in LEGS[leg]:
            log = os.path.join(wd, f"{role}.log")
            logs.append(log)
            if tool == "strace":
                wrapper = ["strace", "-f", "-c", "-o", log]
            elif tool == "handlers":
                wrapper = [
                    "valgrind",
                    "--tool=callgrind",
                    *(f"--toggle-collect={name}" for name in HANDLERS),
                    f"--callgrind-out-file={wd}/{role}.cg",
                    f"--log-file={log}",
                ]
            else:
                wrapper = [
                    "valgrind",
                    "--tool=cachegrind",
                    f"--cache-sim={'yes' if tool == 'cachesim' else 'no'}",
                    f"--cachegrind-out-file={wd}/{role}.cg",
                    f"--log-file={log}",
                ]
            argv = [*wrapper, *leg_argv(leg, role, wd)]
            proc = stack.enter_context(launched(argv, stdout=subprocess.PIPE, env=env, cwd=cwd))
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != b"ready":
                raise SystemExit(f"proxy did not start: {line!r}")
            procs.append(proc)
        count_load(OUT_PORT, conns, requests)
        for proc in procs:
            # Only the proxy, not the whole group: valgrind runs it as the group leader's own
            # process; strace as its child (and strace itself would only detach on SIGTERM).
            target = proc.pid
            if tool == "strace":
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    target = int(f.read().split()[0])
            os.kill(target, signal.SIGTERM)
            proc.communicate(timeout=STARTUP_S)
        texts = {}
        for role, log in zip(LEGS[leg], logs, strict=True):
            with open(log) as f:
                texts[role] = f.read()
    return {role: parse_counts(text, tool) for role, text in texts.items()}


def parse_counts(text: str, tool: str) -> dict[str, int]:
    """The counts in one process's strace summary or cachegrind log."""
    if tool == "strace":
        return strace_counts(text)
    if tool == "handlers":
        m = re.search(r"Collected\s*:\s*([\d,]+)", text)
        if m is None or not int(m.group(1).replace(",", "")):
            raise SystemExit("no instructions in the handlers: --handlers needs the compiled build")
        return {"instructions": int(m.group(1).replace(",", ""))}
    m = re.search(r"I\s+refs:\s+([\d,]+)", text)
    if m is None:
        raise SystemExit(f"no instruction count in:\n{text[-2000:]}")
    out = {"instructions": int(m.group(1).replace(",", ""))}
    for name, value in re.findall(r"(I1 +misses|D +refs|D1 +misses|LL +misses):\s+([\d,]+)", text):
        out[" ".join(name.split())] = int(value.split()[0].replace(",", ""))
    return out


def per_request(
    leg: str, n: int, conns: int, source: str | None, tool: str
) -> dict[str, dict[str, float]]:
    """Counts per request of each process (by role) and of them all (``"all"``)."""
    one = counted(leg, n, conns, source, tool)
    two = counted(leg, 2 * n, conns, source, tool)
    out = {}
    for role in one:
        a, b = one[role], two[role]
        out[role] = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in sorted(set(a) | set(b))}
    total: dict[str, float] = {}
    for counts in out.values():
        for k, v in counts.items():
            total[k] = total.get(k, 0.0) + v
    out["all"] = total
    return out


def roles_note(counts: dict[str, dict[str, float]]) -> str:
    """Each process's instructions per request (each is one hop), when the leg has more than
    one."""
    roles = [r for r in counts if r != "all"]
    if len(roles) < 2:
        return ""
    each = ", ".join(f"{r} {counts[r]['instructions']:,.0f}" for r in roles)
    return f" (per process: {each})"


def counts_line(counts: dict[str, float], hops: int) -> str:
    busy = {k: v / hops for k, v in counts.items() if abs(v) / hops >= 0.005}
    return " ".join(f"{k}={v:.2f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="N (the second run sends 2N)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--legs", nargs="+", default=["outbound"], choices=sorted(LEGS))
    ap.add_argument("--baseline", default=None, help="source tree of a proxy to compare with")
    ap.add_argument("--repeat", type=int, default=1, help="measurements per proxy (max 9)")
    ap.add_argument(
        "--syscalls", action="store_true", help="count syscalls per request (strace) instead"
    )
    ap.add_argument(
        "--handlers",
        action="store_true",
        help="instructions inside the engine's event handlers only (compiled build, callgrind)",
    )
    ap.add_argument(
        "--cache-sim",
        action="store_true",
        help="simulated cache misses per request (cachegrind) instead",
    )
    args = ap.parse_args()
    repeat = max(1, min(args.repeat, 9))
    tool = "strace" if args.syscalls else "cachesim" if args.cache_sim else "valgrind"
    counter = "handlers" if args.handlers else "valgrind"  # what the instruction rows count
    unit = "handler instructions" if args.handlers else "instructions"
    program = "strace" if args.syscalls else "valgrind"
    if shutil.which(program) is None or shutil.which("nginx") is None:
        raise SystemExit(f"needs {program} and nginx")
    n = max(100, min(args.requests, 100_000))
    backend_server = (
        f"server {{ listen {HOST}:{BACKEND_PORT};"
        ' location / { return 200 "hello from the backend\\n"; } }'
    )
    with tempfile.TemporaryDirectory() as wd:
        conf = nginx_conf(wd, "backend", backend_server)
        with launched(["nginx", "-c", conf, "-p", wd]):
            wait_port(BACKEND_PORT)
            for leg in args.legs:
                hops = 1 if leg == "outbound" else 2
                if args.syscalls or args.cache_sim:
                    what = "syscalls" if args.syscalls else "cache (simulated)"
                    for label, src in (("ours", None), ("baseline", args.baseline)):
                        if label == "ours" or src is not None:
                            counts = per_request(leg, n, args.connections, src, tool)
                            for role, each in counts.items():
                                if role == "all":  # per hop: the processes' sum / hops
                                    line = f"{leg} {label}: {what} per hop-request: "
                                    line += counts_line(each, hops)
                                elif len(counts) > 2:  # per request of one process (one hop)
                                    line = f"{leg} {label} [{role}]: {what} per request: "
                                    line += counts_line(each, 1)
                                else:
                                    continue
                                print(line, flush=True)
                    continue
                ours: list[float] = []
                base: list[float] = []
                for r in range(repeat):
                    one = per_request(leg, n, args.connections, None, counter)
                    ours.append(one["all"]["instructions"] / hops)
                    line = f"{leg} #{r + 1}: {ours[-1]:,.0f} {unit} per hop-request"
                    line += roles_note(one)
                    if args.baseline is not None:
                        other = per_request(leg, n, args.connections, args.baseline, counter)
                        base.append(other["all"]["instructions"] / hops)
                        line += f"; baseline {base[-1]:,.0f}{roles_note(other)}"
                        line += f"; ratio {ours[-1] / base[-1]:.3f}"
                    print(line, flush=True)
                line = f"{leg} median: {statistics.median(ours):,.0f}"
                if base:
                    ratios = [a / b for a, b in zip(ours, base, strict=True)]
                    line += (
                        f"; baseline {statistics.median(base):,.0f}"
                        f"; ours / baseline {statistics.median(ratios):.3f}"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
