"""What an idle agent's heap holds at N members, by the code that allocated it (tracemalloc).

Starts N secured agents with their proxies on, the way ``membership.py --rss-members N --proxy``
does (same argv, same CA and gossip key), but one agent (``--traced``, the middle one by default) runs with ``PYTHONTRACEMALLOC`` and a
``sitecustomize`` (in a temp dir put on its ``PYTHONPATH``) that takes one snapshot ``--after``
seconds after its interpreter started, once the cluster has converged and idled. Prints the
traced total, the largest allocation sites grouped by file and by line, and the live objects
of the largest types (``gc.get_objects``), so every retained structure has a name and an owner.

    unshare -n sh -c 'ip link set lo up && python benchmarks/agent_heap.py --members 100'

tracemalloc costs memory of its own (its traces are not in the totals it reports) and counts
only what Python's allocators hand out: memory a C library mallocs (OpenSSL, sqlite's page
cache) appears as RSS, not here; ``agent_rss.py`` gives the RSS and the smaps split. Every process
started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _procs import Proc, loopback, wait_until  # noqa: E402
from membership import PROXY_MARK, SYSTEMS, make_secure  # noqa: E402

_PYMALLOC_LINE = re.compile(r"^# (arenas|bytes in|Total)|^Total")
HOOK = """\
import os, sys, threading, time
_out = os.environ.get("GM_HEAP_DUMP")
if _out and "--flags-fd" in sys.argv:  # the agent process, after the CLI's exec
    def _dump():
        time.sleep(float(os.environ["GM_HEAP_AFTER"]))
        import collections, gc, tracemalloc
        gc.collect()
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(_out)
        counts, sizes = collections.Counter(), collections.Counter()
        for o in gc.get_objects():
            name = f"{type(o).__module__}.{type(o).__qualname__}"
            counts[name] += 1
            sizes[name] += sys.getsizeof(o)
        coros = collections.Counter(o.__qualname__ for o in gc.get_objects()
                                    if type(o).__name__ == "coroutine")
        with open(_out + ".types", "w") as f:
            for name, size in sizes.most_common(40):
                f.write(f"{size} {counts[name]} {name}\\n")
            f.write("\\nsuspended coroutines (trio tasks and what they await), by function:\\n")
            for name, count in coros.most_common(30):
                f.write(f"{count:>5} {name}\\n")
        objs = gc.get_objects()

        def chain(o, depth=5):  # who holds o, and who holds that, ... (first referrer each)
            names = []
            for _ in range(depth):
                refs = [r for r in gc.get_referrers(o) if r is not objs and r is not names
                        and type(r).__name__ != "frame"]
                if not refs:
                    break
                o = refs[0]
                names.append(getattr(o, "__qualname__", "") if callable(o) else type(o).__qualname__)
            return names

        big = []  # large buffers and who holds them: (size, kind, holder chain)
        for o in objs:
            for r in gc.get_referents(o):
                if isinstance(r, (bytes, bytearray, memoryview)) and sys.getsizeof(r) > 8192:
                    big.append((sys.getsizeof(r), type(r).__name__, type(o).__qualname__, o))
        big.sort(key=lambda b: -b[0])
        big = [(size, kind, holder, chain(o)) for size, kind, holder, o in big[:40]]
        with open(_out + ".big", "w") as f:
            for size, kind, holder, up in big:
                f.write(f"{size} {kind} in {holder} < {' < '.join(up)}\\n")
        # pymalloc's arenas, pools and blocks (it writes to fd 2: pointed at a file meanwhile)
        with open(_out + ".pymalloc", "w") as f:
            saved = os.dup(2)
            os.dup2(f.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        import ctypes  # glibc's malloc: the brk heap in use and free, and mmapped blocks

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks",
                        "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                        "keepcost")]
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        mi = libc.mallinfo2()
        with open(_out + ".mallinfo", "w") as f:
            f.write(f"glibc malloc: brk heap {mi.arena >> 10} KiB, in use {mi.uordblks >> 10} KiB, "
                    f"free {mi.fordblks >> 10} KiB; mmapped {mi.hblkhd >> 10} KiB in {mi.hblks}\\n")
        with open(_out + ".rss", "w") as f:
            f.write(open("/proc/self/status").read())
    threading.Thread(target=_dump, daemon=True, name="heap-dump").start()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument(
        "--after", type=float, default=0.0, help="seconds (default: 0.6 per member + 40)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=1,
        help="tracemalloc frames per trace; 0: no tracemalloc (then the malloc figures, which "
        "tracemalloc's own traces distort, are the agent's)",
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-proxy", action="store_true")
    parser.add_argument("--keep", help="copy the tracemalloc snapshot to this file")
    parser.add_argument(
        "--traced",
        type=int,
        default=-1,
        help="which agent (default: the middle one; 0 is the seed)",
    )
    args = parser.parse_args()
    n = args.members
    after = args.after or 0.6 * n + 40
    traced = args.traced if args.traced >= 0 else n // 2
    system = SYSTEMS["gossipmesh"]
    with tempfile.TemporaryDirectory(prefix="agent-heap-") as workdir:
        make_secure(workdir, n)
        if not args.no_proxy:
            Path(workdir, PROXY_MARK).touch()
        hook_dir = Path(workdir, "hook")
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        dump = os.path.join(workdir, "heap.snapshot")
        env = {**os.environ, "PYTHONPATH": str(hook_dir), "GM_HEAP_DUMP": dump,
               "GM_HEAP_AFTER": str(after)}  # fmt: skip
        if args.frames:
            env["PYTHONTRACEMALLOC"] = str(args.frames)
        procs = [Proc(f"n{i}", system.argv(i, n, workdir)) for i in range(n)]
        try:
            for i, proc in enumerate(procs):
                proc.start(env=env if i == traced else None)
                # the seed must be listening before the others try to join it
                time.sleep(3.0 if i == 0 else 0.05 if n <= 30 else 0.3)
            if not wait_until(lambda: os.path.exists(dump + ".rss"), after + 300, poll_s=1):
                print("\n".join(line for _, line in procs[traced].lines[-20:]))
                raise SystemExit("no snapshot from n0")
            alive = system.alive_count(traced)
            time.sleep(1.0)  # the reader thread has the _debugmallocstats lines
            rss = [p.rss_kib() for i, p in enumerate(procs) if i != traced]
        finally:
            for proc in procs:
                proc.stop()
        snapshot = tracemalloc.Snapshot.load(dump) if args.frames else None
        if args.keep and snapshot is not None:
            snapshot.dump(args.keep)
        types = Path(dump + ".types").read_text()
        big = Path(dump + ".big").read_text()
        mallinfo = Path(dump + ".mallinfo").read_text()
        mallocstats = [line for line in Path(dump + ".pymalloc").read_text().splitlines()
                       if _PYMALLOC_LINE.match(line)]  # fmt: skip
        status = Path(dump + ".rss").read_text()
    rss.sort()
    n0_rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    print(f"n{traced} at {loopback(traced)} saw {alive} alive; its RSS {n0_rss.split(None, 1)[1]}; "
          f"others' median RSS {rss[len(rss) // 2] / 1024:.1f} MiB" if rss else "")  # fmt: skip
    if snapshot is not None:
        print_snapshot(snapshot, args.top)
    print("\nlive objects tracked by gc, by type (bytes by sys.getsizeof, count):")
    print(types)
    print("pymalloc (sys._debugmallocstats; nothing under tracemalloc):\n" + "\n".join(mallocstats))
    print(mallinfo)
    print("\nbuffers over 8 KiB held by gc-tracked objects (bytes, type, holder):")
    print(big)
    return 0


def print_snapshot(snapshot: tracemalloc.Snapshot, top: int) -> None:
    stats = snapshot.statistics("filename")
    total = sum(s.size for s in stats)
    print(f"\ntraced: {total / 2**20:.2f} MiB in {sum(s.count for s in stats)} blocks")
    print(f"\nby file (KiB, blocks; top {top}):")
    for stat in stats[:top]:
        name = stat.traceback[0].filename
        print(f"{stat.size / 1024:>9.1f} {stat.count:>7}  {_short(name)}")
    print(f"\nby line (KiB, blocks; top {top}):")
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        print(f"{stat.size / 1024:>9.1f} {stat.count:>7}  {_short(frame.filename)}:{frame.lineno}")


def _short(path: str) -> str:
    for mark in ("site-packages/", "/gossipmesh/", "/lib/python3"):
        if mark in path:
            return (
                path.split(mark, 1)[1]
                if mark != "/gossipmesh/"
                else "gossipmesh/" + path.split(mark, 1)[1]
            )
    return path


if __name__ == "__main__":
    raise SystemExit(main())
