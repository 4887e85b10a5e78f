"""Failure-detection time and idle memory: gossipmesh agents against HashiCorp Serf, same machine,
same run, same timing (1 s probe interval, LAN profile).

For each system: start N agents on 127.0.0.2, 127.0.0.3, ... joined through the first; wait until
every agent sees N alive; then, ``--kills`` times, SIGKILL one agent (never the seed) and time from
the kill until *every* survivor has logged that member as failed. Serf is timed by the moment each
agent logs ``serf: EventMemberFailed`` (its event handlers fire a second later, after Serf's event
hold); gossipmesh by its agent's one-line ``member_failed`` log event. Any failure logged for a member
that was not killed is a false positive and is reported. The victim is restarted (same name) and
the cluster allowed to settle before the next kill. Finally the idle RSS of every agent is sampled
at N members (and at ``--rss-members``).

    python benchmarks/membership.py --agents 20 --kills 5 --rss-members 100
    python benchmarks/membership.py --skip-detection --only gossipmesh --rss-members 100 --proxy

gossipmesh runs secured by default (since issue 11): a CA made in the temp dir, a node certificate
per agent (``--tls-dir``) and a gossip key (``--encrypt-file``), so every alive claim and
accusation is signed and checked against a real certificate chain; ``--playground`` runs it as a
loopback playground instead (the same signatures, under self-issued certificates).

Every process started here is stopped on the way out; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _procs import Proc, loopback, wait_until  # noqa: E402

GOSSIP_PORT = 7946
SERF_RPC_PORT = 7373
GM_ADMIN_PORT = 7947


@dataclass
class System:
    label: str
    argv: Callable[[int, int, str], list[str]]  # (index, n, workdir) -> argv
    alive_count: Callable[[int], int]  # index -> alive members seen by that agent
    failed: Callable[[str, str], bool]  # (log line, member name) -> True if it logs that failure


def _serf_argv(i: int, n: int, workdir: str) -> list[str]:
    argv = [
        "serf",
        "agent",
        f"-node=n{i}",
        f"-bind={loopback(i)}:{GOSSIP_PORT}",
        f"-rpc-addr={loopback(i)}:{SERF_RPC_PORT}",
        "-profile=lan",
        "-log-level=info",
    ]
    if i != 0:
        argv.append(f"-join={loopback(0)}:{GOSSIP_PORT}")
    return argv


def _probe(argv: list[str], timeout_s: float) -> str | None:
    """Run a status command; None when it fails or is slow (a busy agent is "not yet")."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    return out.stdout if out.returncode == 0 else None


def _serf_alive(i: int) -> int:
    rpc = f"-rpc-addr={loopback(i)}:{SERF_RPC_PORT}"
    text = _probe(["serf", "members", rpc, "-status=alive"], 5)
    return 0 if text is None else len([line for line in text.splitlines() if line.strip()])


def _serf_failed(line: str, member: str) -> bool:
    return "EventMemberFailed" in line and f" {member} " in f"{line} "


GM_CLUSTER = "bench"
SECURE_DIR = "pki"  # in the workdir: the CA, one node dir per agent, the gossip key
PROXY_MARK = "with-proxy"  # in the workdir: gossipmesh agents run their proxy (--proxy)


def make_secure(workdir: str, n: int) -> None:
    """What an operator does before a secured cluster starts (``gossipmesh ca init``, ``ca
    issue-node`` per node, ``keygen``), through the same library calls, into ``workdir/pki``."""
    from gossipmesh.crypto import generate_key
    from gossipmesh.identity import CaCredentials, NodeCredentials, save_ca, save_node
    from gossipmesh.identity.files import KEY_MODE, write_atomic

    root = os.path.join(workdir, SECURE_DIR)
    now_ms = int(time.time() * 1000)
    ca = CaCredentials.generate(GM_CLUSTER, now_ms=now_ms)
    save_ca(Path(root, "ca"), ca)
    for i in range(n):
        node_dir = Path(root, f"n{i}")
        if not node_dir.exists():
            save_node(node_dir, NodeCredentials.issue(ca, f"n{i}", now_ms=now_ms))
    write_atomic(Path(root, "gossip.key"), (generate_key() + "\n").encode(), KEY_MODE)


def _gm_argv(i: int, n: int, workdir: str) -> list[str]:
    """``--no-proxy`` unless ``workdir/PROXY_MARK`` exists (``--proxy``): then each agent runs its
    sidecar, outbound on HOST:4140 and inbound on the default port, HOST its own loopback."""
    data_dir = os.path.join(workdir, f"gm{i}")
    secure = os.path.join(workdir, SECURE_DIR)
    argv = [
        sys.executable,
        "-m",
        "gossipmesh",
        "agent",
        "--name",
        f"n{i}",
        "--bind",
        f"{loopback(i)}:{GOSSIP_PORT}",
        "--admin",
        f"{loopback(i)}:{GM_ADMIN_PORT}",
        "--data-dir",
        data_dir,
        "--profile",
        "lan",
    ]
    if os.path.exists(os.path.join(workdir, PROXY_MARK)):  # one loopback address per agent
        argv += ["--outbound", f"{loopback(i)}:4140"]
    else:  # membership only; N sidecars could not all bind 127.0.0.1:4140
        argv.append("--no-proxy")
    if os.path.isdir(secure):  # node certificates and a gossip key, not a loopback playground
        argv += ["--cluster", GM_CLUSTER, "--tls-dir", os.path.join(secure, f"n{i}"),
                 "--encrypt-file", os.path.join(secure, "gossip.key")]  # fmt: skip
    if i != 0:
        argv += ["--join", f"{loopback(0)}:{GOSSIP_PORT}"]
    return argv


def _gm_alive(i: int) -> int:
    admin = f"{loopback(i)}:{GM_ADMIN_PORT}"
    text = _probe([sys.executable, "-m", "gossipmesh", "members", "--json", "--agent", admin], 15)
    return 0 if text is None else sum(1 for m in json.loads(text) if m["state"] == "alive")


def _gm_failed(line: str, member: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return (
        isinstance(event, dict)
        and event.get("event") == "member_failed"
        and event.get("member") == member
    )


SYSTEMS = {
    "serf": System("HashiCorp Serf", _serf_argv, _serf_alive, _serf_failed),
    "gossipmesh": System("gossipmesh", _gm_argv, _gm_alive, _gm_failed),
}


def _start_cluster(system: System, n: int, workdir: str) -> list[Proc]:
    procs = [Proc(f"n{i}", system.argv(i, n, workdir)) for i in range(n)]
    procs[0].start()
    time.sleep(1.0)  # the seed must be listening before the others try to join it
    for proc in procs[1:]:
        proc.start()
        time.sleep(0.05 if n <= 30 else 0.3)
    return procs


def _all_see(
    system: System, procs: Sequence[Proc], live: Sequence[int], n_alive: int, timeout_s: float
) -> bool:
    return wait_until(
        lambda: all(system.alive_count(i) == n_alive for i in live), timeout_s, poll_s=0.5
    )


def _failure_seen(
    system: System, procs: Sequence[Proc], survivors: Sequence[int], name: str, t0: float
) -> list[float | None]:
    """When each survivor first logged ``name`` as failed after ``t0`` (None: not yet)."""

    def logs_failure(line: str) -> bool:
        return system.failed(line, name)

    return [procs[i].first_match(logs_failure, t0) for i in survivors]


def _all_saw_failure(
    system: System, procs: Sequence[Proc], survivors: Sequence[int], name: str, t0: float
) -> bool:
    return None not in _failure_seen(system, procs, survivors, name, t0)


def run_detection(system: System, n: int, kills: int, workdir: str) -> dict[str, Any]:
    procs = _start_cluster(system, n, workdir)
    try:
        if not _all_see(system, procs, range(n), n, timeout_s=90):
            raise RuntimeError(f"{system.label}: cluster of {n} never converged")
        times: list[float] = []
        false_positives: list[str] = []
        start = time.monotonic()
        for k in range(kills):
            victim = 1 + (k * 7) % (n - 1)
            name = f"n{victim}"
            survivors = [i for i in range(n) if i != victim]
            t0 = time.monotonic()
            procs[victim].kill()
            procs[victim].popen.wait(timeout=5)  # type: ignore[union-attr]
            seen_all = partial(_all_saw_failure, system, procs, survivors, name, t0)
            if not wait_until(seen_all, 90):
                raise RuntimeError(f"{system.label}: {name} not seen failed by all within 90 s")
            stamps = [s for s in _failure_seen(system, procs, survivors, name, t0) if s is not None]
            elapsed = max(stamps) - t0
            times.append(elapsed)
            print(
                f"  {system.label}: kill {k + 1}/{kills} ({name}) seen failed by all in {elapsed:.2f} s",
                flush=True,
            )
            procs[victim] = Proc(name, system.argv(victim, n, workdir))
            procs[victim].start()
            if not _all_see(system, procs, range(n), n, timeout_s=90):
                raise RuntimeError(f"{system.label}: {name} did not rejoin")
        for i, proc in enumerate(procs):
            for j in range(n):
                other = f"n{j}"
                for stamp, line in list(proc.lines):
                    if stamp >= start and system.failed(line, other):
                        killed_names = {f"n{1 + (k * 7) % (n - 1)}" for k in range(kills)}
                        if other not in killed_names:
                            false_positives.append(f"n{i} saw {other} fail")
        time.sleep(5)  # idle
        rss = [p.rss_kib() for p in procs]
        return {
            "system": system.label,
            "agents": n,
            "kills": kills,
            "detection_s": times,
            "median_s": statistics.median(times),
            "false_positives": false_positives,
            "rss_kib_median": statistics.median(rss),
        }
    finally:
        for proc in procs:
            proc.stop()


def run_rss(system: System, n: int, workdir: str) -> float:
    procs = _start_cluster(system, n, workdir)
    try:
        if not _all_see(system, procs, [0, n // 2, n - 1], n, timeout_s=180):
            raise RuntimeError(f"{system.label}: cluster of {n} never converged")
        time.sleep(10)
        return statistics.median(p.rss_kib() for p in procs)
    finally:
        for proc in procs:
            proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rss-members", type=int, nargs="*", default=[100])
    parser.add_argument("--only", choices=sorted(SYSTEMS), action="append")
    parser.add_argument("--json", help="write results to this file")
    parser.add_argument(
        "--skip-detection", action="store_true", help="only the idle-RSS runs (--rss-members)"
    )
    parser.add_argument(
        "--playground",
        action="store_true",
        help="gossipmesh without node certificates or gossip key (its loopback playground: claims "
        "still signed, with self-issued certificates); default: a CA, a node certificate per "
        "agent and a gossip key, made in the temp dir",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="gossipmesh agents run their sidecar proxy (outbound and inbound on each agent's own "
        "loopback address); default --no-proxy",
    )
    args = parser.parse_args()
    if args.agents < 3 or args.agents > 250 or args.kills < 1 or args.kills > 50:
        parser.error("--agents must be 3-250 and --kills 1-50")
    if shutil.which("serf") is None and (not args.only or "serf" in args.only):
        parser.error("serf is not installed: apt-get install serf")
    runs: list[dict[str, Any]] = []
    rss_rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "runs": runs, "rss": rss_rows}
    for key in args.only or ["serf", "gossipmesh"]:
        system = SYSTEMS[key]
        with tempfile.TemporaryDirectory(prefix=f"bench-{key}-") as workdir:
            if key == "gossipmesh" and not args.playground:
                make_secure(workdir, max([args.agents, *args.rss_members]))
            if key == "gossipmesh" and args.proxy:
                Path(workdir, PROXY_MARK).touch()
            if not args.skip_detection:
                print(f"{system.label}: {args.agents} agents, {args.kills} kills", flush=True)
                runs.append(run_detection(system, args.agents, args.kills, workdir))
            for members in args.rss_members:
                rss_kib = run_rss(system, members, workdir)
                rss_rows.append(
                    {"system": system.label, "members": members, "rss_kib_median": rss_kib}
                )
                print(f"  {system.label}: idle RSS with {members} members: "
                      f"{rss_kib / 1024:.1f} MiB (median)", flush=True)  # fmt: skip
    print()
    print(
        f"{'system':<16}{'median detect':>15}{'runs (s)':>40}{'false pos':>11}{'RSS@N (MiB)':>13}"
    )
    for run in runs:
        detail = " ".join(f"{t:.2f}" for t in run["detection_s"])
        print(
            f"{run['system']:<16}{run['median_s']:>14.2f}s{detail:>40}{len(run['false_positives']):>11}"
            f"{run['rss_kib_median'] / 1024:>13.1f}"
        )
    for row in rss_rows:
        print(
            f"{row['system']:<16} idle RSS with {row['members']} members: {row['rss_kib_median'] / 1024:.1f} MiB"
        )
    by = {r["system"]: r for r in runs}
    if "HashiCorp Serf" in by and "gossipmesh" in by:
        ratio = by["gossipmesh"]["median_s"] / by["HashiCorp Serf"]["median_s"]
        print(f"ratio gossipmesh/serf median detection: {ratio:.2f}x (goal <= 0.75x)")
        results["ratio"] = ratio
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
