"""Where one idle agent's memory goes: its RSS, what it imported, and what each library costs.

Starts one agent the way an operator does (``gossipmesh agent``, proxy on unless ``--no-proxy``)
on a loopback address, lets it settle, then prints:

- its VmRSS and the ``/proc/PID/smaps`` split: anonymous memory (the heap: objects, bytecode of
  every imported module) and file-backed mappings grouped by file (``.so`` extension modules, the
  interpreter and libc);
- the modules it imported (from ``PYTHONPROFILEIMPORTTIME``, which survives the CLI's ``exec``
  of ``python -m gossipmesh.agent``), grouped by top-level package;
- for each top-level package outside gossipmesh, the RSS a fresh interpreter gains by importing it
  alone (``--cost``; overlaps between packages are counted in each, so the column does not add up
  to the total);
- the ladder (``--ladder``): one fresh interpreter, started with the agent's interpreter options,
  imports the modules the agent imported, in the agent's order, group by group (trio with what it
  brings, then cryptography, the other libraries, the rest of the standard library, gossipmesh's
  own), and prints its RSS after each: the steps add up, from the bare interpreter to the agent's
  imports, and the running agent above them is the agent's state.

    unshare -n sh -c 'ip link set lo up && python benchmarks/agent_rss.py --cost'

The measurement is of one agent alone (no members); ``membership.py --rss-members 100`` measures
the median over 100 joined agents. Every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(__file__))
from _procs import Proc, wait_until  # noqa: E402

IMPORT_HEADER = "import time: self [us] | cumulative | imported package"


def agent_argv(workdir: str, proxy: bool, extra: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "gossipmesh", "agent", "--name", "n0",
            "--bind", "127.0.0.2:7946", "--admin", "127.0.0.2:7947",
            "--data-dir", os.path.join(workdir, "data"), "--profile", "lan"]  # fmt: skip
    argv += ["--outbound", "127.0.0.2:4140"] if proxy else ["--no-proxy"]
    return argv + extra


def smaps_account(pid: int) -> tuple[int, dict[str, int]]:
    """(anonymous KiB, {mapped file or [name]: RSS KiB})."""
    by_file: dict[str, int] = defaultdict(int)
    anon = 0
    current = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                current = head[5] if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:":
                by_file[current] += int(head[1])
            elif head[0] == "Anonymous:":
                anon += int(head[1])
    return anon, dict(by_file)


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{name}:"):
                return line.split()[1]
    return "?"


def imported_modules(stderr_lines: list[str]) -> list[str]:
    """The module names the agent process (after the CLI's exec) imported, in order."""
    starts = [i for i, line in enumerate(stderr_lines) if line.strip().endswith(IMPORT_HEADER)]
    if not starts:
        return []
    names = []
    for line in stderr_lines[starts[-1] + 1 :]:
        if line.startswith("import time:") and "|" in line:
            names.append(line.rsplit("|", 1)[1].strip())
    return names


def rss_after_import(module: str) -> int:
    code = (
        f"import {module}\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmRSS:'): print(line.split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


LADDER = (
    ("trio (with ssl, attrs, idna, ctypes, logging, ...)", lambda m: m.split(".")[0] == "trio"),
    ("cryptography (with email, bcrypt, cffi)", lambda m: m.split(".")[0] == "cryptography"),
    ("other libraries", lambda m: m.split(".")[0] not in sys.stdlib_module_names
     and not m.startswith("gossipmesh")),
    ("the rest of the standard library", lambda m: not m.startswith("gossipmesh")),
    ("gossipmesh", lambda m: True),
)  # fmt: skip
LADDER_PROBE = """\
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
steps = [("interpreter (with site)", rss(), len(sys.modules))]
for label, names in json.loads(sys.stdin.read()):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a platform's alternative (nt, msvcrt) the agent only tried
            pass
    steps.append((label, rss(), len(sys.modules)))
print(json.dumps(steps))
"""


def ladder(modules: list[str]) -> list[tuple[str, int, int]]:
    """(step, RSS KiB after it, modules loaded) importing ``modules`` group by group."""
    import json

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from gossipmesh.agent.launch import INTERPRETER_OPTIONS

    left = [m for m in modules if m not in sys.builtin_module_names and m != "__main__"]
    groups = []
    for label, belongs in LADDER:
        groups.append((label, [m for m in left if belongs(m)]))
        left = [m for m in left if not belongs(m)]
    out = subprocess.run([sys.executable, *INTERPRETER_OPTIONS, "-c", LADDER_PROBE],
                         input=json.dumps(groups), capture_output=True, text=True, check=True)  # fmt: skip
    return [tuple(step) for step in json.loads(out.stdout)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-proxy", action="store_true", help="run the agent with --no-proxy")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="idle seconds after the start before sampling"
    )
    parser.add_argument("--cost", action="store_true", help="RSS of importing each package alone")
    parser.add_argument("--ladder", action="store_true", help="cumulative RSS of the imports")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--modules", action="store_true", help="list every imported module")
    parser.add_argument("agent_flags", nargs="*", help="more agent flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agent-rss-") as workdir:
        proc = Proc("n0", agent_argv(workdir, not args.no_proxy, args.agent_flags))
        proc.start(env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        try:
            started = '"event":"proxy_start"' if not args.no_proxy else '"event":"agent_start"'
            wait_until(lambda: proc.first_match(lambda line: started in line, 0) is not None, 120)
            time.sleep(args.settle)  # idle after start
            assert proc.popen is not None
            if proc.popen.poll() is not None:
                print("\n".join(line for _, line in proc.lines[-20:]))
                raise SystemExit("the agent exited")
            rss = proc.rss_kib()
            threads = _status_field(proc.popen.pid, "Threads")
            anon, by_file = smaps_account(proc.popen.pid)
        finally:
            proc.stop()
        modules = imported_modules([line for _, line in proc.lines])
    print(f"VmRSS {rss / 1024:.1f} MiB; anonymous {anon / 1024:.1f} MiB; "
          f"file-backed {(rss - anon) / 1024:.1f} MiB; threads {threads}")  # fmt: skip
    print(f"\nlargest mappings (RSS KiB, top {args.top}):")
    for name, kib in sorted(by_file.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{kib:>8}  {name}")
    tops = Counter(name.split(".")[0] for name in modules)
    print(f"\n{len(modules)} modules imported, by top-level package:")
    print(", ".join(f"{top} {count}" for top, count in tops.most_common()))
    if args.modules:
        print("\n".join(modules))
    if args.ladder:
        print("\ncumulative RSS of a fresh interpreter importing the agent's modules, by group:")
        previous = 0
        for label, kib, count in ladder(modules):
            print(
                f"{kib / 1024:>7.1f} MiB  {(kib - previous) / 1024:>+6.1f}  {count:>4} modules  {label}"
            )
            previous = kib
        print(f"{rss / 1024:>7.1f} MiB  {(rss - previous) / 1024:>+6.1f}  the running agent")
    if args.cost:
        base = rss_after_import("sys")
        print(
            f"\nRSS a fresh interpreter ({base / 1024:.1f} MiB) gains importing each alone (KiB):"
        )
        costs = []
        for top in tops:
            if top in ("gossipmesh", "") or top.startswith("_") or top in sys.builtin_module_names:
                continue
            try:
                costs.append((rss_after_import(top) - base, top))
            except subprocess.CalledProcessError:
                continue
        for kib, top in sorted(costs, reverse=True)[: args.top]:
            print(f"{kib:>8}  {top}")
        print(f"{rss_after_import('gossipmesh.agent.main') - base:>8}  gossipmesh.agent.main (all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
