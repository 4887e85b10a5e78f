"""Real hosts, real faults: gossipmesh agents in Linux network namespaces under a seeded nemesis.

    python benchmarks/chaos.py --hosts 5 --duration 600 --seed 1      # as root

N hosts are network namespaces on a bridge in a namespace of its own (``chaos_net.py``: the test
subnet 10.213.0.0/24 exists only between them; the root network stack gets no address on it).
Each runs one agent (mTLS node certificate, signed config, gossip encryption, ``--profile local``)
and one sample app registered as service ``echo`` (``chaos_cluster.py``). A nemesis drawn from
the one master seed cuts links, kills (with and without the data dir), pauses, jumps a clock and
loses packets (``chaos_nemesis.py``); a workload writes config, sends requests through every
host's sidecar and reads as an operator would (``chaos_workload.py``); the checkers judge what was
recorded (``chaos_check.py``), and a markdown report and a PNG timeline are written
(``chaos_report.py``). A failed check prints the seed and the one command that replays it.

Everything the run creates (namespaces, processes, its temp dir) is removed on success, failure,
Ctrl-C and SIGTERM; namespaces of runs that died without cleaning up (their pid is gone) are swept
at start. Without root it refuses to run and says why (exit 2).

``run()`` is the entry point for tests (tests/benchmarks/test_chaos.py).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_check import (  # noqa: E402 - after the path set-up above
    Check,
    Figures,
    acked_before,
    admin_latency,
    check_false_dead,
    check_membership,
    check_reads,
    check_requests,
    check_resources,
    check_writes,
    convergence,
)
from chaos_cluster import (  # noqa: E402
    ECHO_SERVICE,
    GOSSIP_PORT,
    SERVICE,
    HostProcs,
    find_libfaketime,
    make_pki,
    write_config,
)
from chaos_nemesis import Fault, Schedule, make_schedule  # noqa: E402
from chaos_net import ChaosNet, ChaosUnavailable, require_rights, sweep_stale  # noqa: E402
from chaos_workload import Records, Workload  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTLE_S = 90.0  # bound on the initial join and on the final convergence wait


def replay_command(hosts: int, duration_s: float, seed: int) -> str:
    return f"python benchmarks/chaos.py --hosts {hosts} --duration {duration_s:g} --seed {seed} (as root)"


@dataclass
class ChaosResult:
    schedule: Schedule
    checks: list[Check]
    figures: Figures
    records: Records
    report: Path | None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def summary(self) -> str:
        lines = [f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        if not self.ok:
            s = self.schedule
            lines.append(f"seed {s.seed}; replay: {replay_command(s.hosts, s.duration_s, s.seed)}")
        return "\n".join(lines)


def ensure_faketime() -> str | None:
    """libfaketime, installed with apt-get (Debian's ``faketime``) when missing and possible."""
    lib = find_libfaketime()
    if lib is None and shutil.which("apt-get") and os.geteuid() == 0:
        import subprocess

        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "faketime"],
                       capture_output=True, check=False, env=env, timeout=300)  # fmt: skip
        lib = find_libfaketime()
    return lib


class Nemesis:
    """Starts and heals the schedule's faults on the running cluster (main thread only)."""

    def __init__(self, net: ChaosNet, hosts: list[HostProcs], log: list[str]) -> None:
        self.net = net
        self.hosts = hosts
        self.log = log

    def hp(self, index: int) -> HostProcs:
        return self.hosts[index - 1]

    def start(self, f: Fault) -> None:
        hs = [self.net.hosts[i - 1] for i in f.hosts]
        if f.kind == "isolate":
            self.net.isolate(hs[0])
        elif f.kind in ("halves", "minority"):
            self.net.partition([hs, [self.net.hosts[i - 1] for i in f.other]])
        elif f.kind == "bridge":
            self.net.bridge_between(hs[0], hs[1:], [self.net.hosts[i - 1] for i in f.other])
        elif f.kind.startswith("kill"):
            self.hp(f.hosts[0]).kill_agent()
            if f.kind == "kill-wipe":
                self.hp(f.hosts[0]).wipe_data()
        elif f.kind == "pause":
            self.hp(f.hosts[0]).pause_agent()
        elif f.kind == "clock":
            self.hp(f.hosts[0]).set_clock_offset(f.value)
        elif f.kind == "loss":
            hp = self.hp(f.hosts[0])
            self._admin(f, lambda: hp.client(10.0).set_faults([], loss=f.value), hp)

    def heal(self, f: Fault) -> None:
        if f.kind in ("isolate", "halves", "minority", "bridge"):
            self.net.heal()
        elif f.kind.startswith("kill"):
            self.hp(f.hosts[0]).start_agent(wait=False)
        elif f.kind == "pause":
            self.hp(f.hosts[0]).resume_agent()
        elif f.kind == "clock":
            self.hp(f.hosts[0]).set_clock_offset(0)
        elif f.kind == "loss":
            hp = self.hp(f.hosts[0])
            self._admin(f, lambda: hp.client(10.0).clear_faults(), hp)

    def _admin(self, f: Fault, call: Callable[[], object], hp: HostProcs) -> None:
        """An admin call of the nemesis (loss on, loss off): tried three times; a failure is
        logged (it shows in the report) and the run goes on."""
        for attempt in range(3):
            try:
                hp.in_ns(call, timeout_s=20)
                return
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                self.log.append(f"{f.describe()}: admin call to h{f.hosts[0]} failed "
                                f"(attempt {attempt + 1}): {exc}")  # fmt: skip


def _play(sched: Schedule, nemesis: Nemesis, t0: float, log: list[str]) -> None:
    """Run the schedule on the main thread until its duration; every step at its offset."""
    steps: list[tuple[float, int, str, object]] = []
    for i, f in enumerate(sched.faults):
        steps.append((f.start_s, i, "start", f))
        steps.append((f.end_s, i, "heal", f))
    for k in sched.upstream_kills:
        steps.append((k.at_s, -1, "app-kill", k.host))
        steps.append((k.back_s, -1, "app-start", k.host))
    steps.sort(key=lambda s: (s[0], s[2] != "heal"))
    for at, _i, what, arg in steps:
        delay = at - (time.monotonic() - t0)
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic() - t0
        if what == "start":
            assert isinstance(arg, Fault)
            nemesis.start(arg)
            log.append(f"{now:7.1f} s  start {arg.describe()}")
        elif what == "heal":
            assert isinstance(arg, Fault)
            nemesis.heal(arg)
            log.append(f"{now:7.1f} s  heal  {arg.describe()}")
        elif what == "app-kill":
            assert isinstance(arg, int)
            nemesis.hp(arg).kill_app()
            log.append(f"{now:7.1f} s  SIGKILL app on h{arg}")
        else:
            assert isinstance(arg, int)
            nemesis.hp(arg).start_app()
            log.append(f"{now:7.1f} s  restart app on h{arg}")
    rest = sched.duration_s - (time.monotonic() - t0)
    if rest > 0:
        time.sleep(rest)


def _wait_final(
    wl: Workload, n: int
) -> tuple[dict[int, tuple[str, dict[str, int]]], float | None, float | None]:
    """After the load stops: poll until every replica is identical and holds every acknowledged
    write, and every agent sees every host alive (bounded by SETTLE_S)."""
    acked = acked_before(wl.rec, float("inf"))
    deadline = time.monotonic() + SETTLE_S
    converged = whole = None
    final: dict[int, tuple[str, dict[str, int]]] = {}
    while time.monotonic() < deadline and (converged is None or whole is None):
        final = wl.snapshot_configs()
        if (
            converged is None
            and len(final) == n
            and len({r for r, _h in final.values()}) == 1
            and all(have.get(k) == v for _r, have in final.values() for k, v in acked.items())
        ):
            converged = wl.now()
        if whole is None:
            views = []
            for hp in wl.hosts:
                try:
                    views.append(hp.members())
                except Exception:  # noqa: BLE001 - not whole yet
                    views.append([])
            if all(len(v) == n and all(m["state"] == "alive" for m in v) for v in views):
                whole = wl.now()
        time.sleep(0.5)
    return final, converged, whole


def run(hosts: int = 5, duration_s: float = 600.0, seed: int = 1, out_dir: Path | None = None,
        rate_per_host: float = 4.0, progress: bool = False,
        dump: Path | None = None, logs: Path | None = None) -> ChaosResult:  # fmt: skip
    """One chaos run; raises ChaosUnavailable without the rights. Removes all it creates."""
    require_rights()
    sweep_stale()
    sched = make_schedule(seed, hosts, duration_s)
    libfaketime = ensure_faketime()
    if libfaketime is None:
        raise ChaosUnavailable(
            "libfaketime not found and could not be installed (apt-get install faketime)"
        )
    root = Path(tempfile.mkdtemp(prefix=f"gm-{os.getpid()}-chaos-"))
    net = ChaosNet(hosts)
    procs: list[HostProcs] = []
    wl: Workload | None = None
    log: list[str] = []
    old_term = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        from gossipmesh.config.signing import ProposalSigner
        from gossipmesh.crypto import generate_key
        from gossipmesh.identity import load_operator

        net.create()
        key_file = root / "gossip.key"
        key_file.write_text(generate_key() + "\n")
        key_file.chmod(0o600)
        pki = make_pki(root / "pki", [h.name for h in net.hosts])
        signer = ProposalSigner.for_operator(load_operator(pki.operator_file))
        for h in net.hosts:
            peers = [f"{o.ip}:{GOSSIP_PORT}" for o in net.hosts if o is not h]
            procs.append(HostProcs(h, root, peers, key_file, pki.node_dirs[h.name], libfaketime))
        for hp in procs:
            hp.start_app()
        for hp in procs:
            hp.start_agent(wait=False)
        for hp in procs:
            hp.wait_ready()
        _wait_whole(procs, hosts)
        write_config(procs[0], {f"service/{SERVICE}": ECHO_SERVICE}, signer)
        t0 = time.monotonic()
        wl = Workload(procs, signer, seed, t0, rate_per_host=rate_per_host)
        wl.start()
        _play(sched, Nemesis(net, procs, log), t0, log)
        wl.stop_load.set()
        log.append(f"{wl.now():7.1f} s  load stopped")
        final, converged, whole = _wait_final(wl, hosts)
        wl.stop()
        run = Run(sched, wl.rec, final, converged, whole, log)
        if dump is not None:
            with open(dump, "wb") as out:
                pickle.dump(run, out)
        if progress:
            print("\n".join(log), file=sys.stderr)
        return judge(run, out_dir)
    finally:
        if wl is not None:
            wl.stop()
        for hp in procs:
            hp.stop()
        net.destroy()
        if logs is not None:
            _keep_logs(root, logs)
        shutil.rmtree(root, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


@dataclass
class Run:
    """What a run recorded: enough to judge it again (``--from-dump``)."""

    schedule: Schedule
    records: Records
    final: dict[int, tuple[str, dict[str, int]]]
    converged: float | None  # when the replicas were found identical and complete after the run
    whole: float | None  # when every agent saw every host alive after the run
    log: list[str]


def judge(run: Run, out_dir: Path | None) -> ChaosResult:
    """The checkers on a run's records, and its report when ``out_dir`` is given."""
    sched, rec = run.schedule, run.records
    fig = Figures()
    since = max(sched.last_heal_s, max((w[0] for w in rec.writes), default=0.0))
    convergence(sched, rec, fig)
    checks = [
        check_writes(rec, run.final, sched.hosts, run.converged, since, fig),
        check_membership(fig, _whole_since(rec, sched, run.whole)),
        check_false_dead(sched, rec, fig),
        check_requests(sched, rec, fig),
        check_resources(sched, rec, _warmup_s(sched.duration_s), fig),
    ]
    check_reads(rec, fig)
    admin_latency(sched, rec, fig)
    result = ChaosResult(sched, checks, fig, rec, None)
    if out_dir is not None:
        from chaos_report import write_report

        command = replay_command(sched.hosts, sched.duration_s, sched.seed)
        result.report = write_report(result, out_dir, run.log, command)
    return result


def _whole_since(rec: Records, sched: Schedule, final_whole: float | None) -> float | None:
    """Seconds from the last heal until every agent saw every host alive: from the observers'
    records if it happened during the run, else from the final wait."""
    from chaos_check import whole_after

    during = whole_after(rec, sched.hosts, sched.last_heal_s)
    at = during if during is not None else final_whole
    return None if at is None else at - sched.last_heal_s


def _keep_logs(root: Path, logs: Path) -> None:
    """Copy every host's agent and app log out of the run's temp dir before it goes."""
    logs.mkdir(parents=True, exist_ok=True)
    for log in root.glob("h*/*.log"):
        shutil.copy(log, logs / f"{log.parent.name}-{log.name}")


def _warmup_s(duration_s: float) -> float:
    return max(15.0, 0.1 * duration_s)


def _wait_whole(procs: list[HostProcs], n: int) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        try:
            if all(
                len(v) == n and all(m["state"] == "alive" for m in v)
                for v in (hp.members() for hp in procs)
            ):
                return
        except Exception:  # noqa: BLE001 - not whole yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the {n} agents did not all see each other within {SETTLE_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=5)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load and faults")
    ap.add_argument(
        "--seed", type=int, default=1, help="the master seed of the nemesis and workload"
    )
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second from each host")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the report and PNG go")
    ap.add_argument("--dump", type=Path, help="also pickle what the run recorded to this file")
    ap.add_argument("--logs", type=Path, help="keep the agents' and apps' logs in this directory")
    ap.add_argument("--from-dump", type=Path, nargs="+",
                    help="judge (and report) dumped runs again; no run")  # fmt: skip
    ap.add_argument("--summary", action="store_true",
                    help="with --from-dump: print BENCHMARKS.md's tables for those runs")  # fmt: skip
    args = ap.parse_args(argv)
    if args.from_dump is not None:
        results = []
        for path in args.from_dump:
            with open(path, "rb") as f:
                results.append(judge(pickle.load(f), args.out))  # noqa: S301 - our own file
            print(results[-1].summary())
        if args.summary:
            from chaos_report import summarize

            print(summarize(results))
        return 0 if all(r.ok for r in results) else 1
    if args.duration < 30:
        ap.error("--duration: at least 30 s")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run(args.hosts, args.duration, args.seed, args.out, args.rate, progress=True,
                     dump=args.dump, logs=args.logs)  # fmt: skip
    except ChaosUnavailable as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted; everything it created is removed", file=sys.stderr)
        return 130
    print(result.summary())
    if result.report is not None:
        print(f"report: {result.report}")
    if not result.ok:
        print(f"chaos: FAILED with seed {args.seed}; replay with: "
              f"{replay_command(args.hosts, args.duration, args.seed)}")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
