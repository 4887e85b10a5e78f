"""``run_demo``: plan -> lock and ports -> processes -> config -> traffic + script -> summary.

Theory of operation
-------------------
The demo is one foreground process that owns everything it starts (orchestrator.py) and talks
to the agents only through their admin API and their sidecars, exactly like an operator and an
application would; it never imports agent, SWIM, CRDT or proxy code.

Phases, each bounded: *setup* (lock, port check, start, join, apply the sample config, wait for
every agent to have it and every instance to be routable), *play* (traffic, the script's events,
the dashboard, for ``--duration`` seconds of traffic), *settle* (up to ``SETTLE_S`` for a pending
measurement, e.g. a kill late in a short run still being detected), *teardown* (always: processes,
temp dir, lock) and *report*. Ctrl-C or SIGTERM during setup or play skips to teardown and still
reports what was measured; during teardown both are ignored, because teardown is bounded and
must finish to leave nothing behind.

Output: the dashboard (TUI) or progress lines, then the summary. With ``--json`` stdout carries
exactly one JSON object and stderr only errors (progress lines too with ``verbose``).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live

from gossipmesh.client import AdminError, ClientError
from gossipmesh.demo import dashboard
from gossipmesh.demo.observe import MeshView
from gossipmesh.demo.orchestrator import DemoError, Orchestrator, demo_resources, stderr_progress
from gossipmesh.demo.plan import (
    ADMIN_POLICY,
    ADMIN_SHARE,
    SLOW_SHARE,
    Plan,
    sample_config,
)
from gossipmesh.demo.script import Event, EventLog, Script
from gossipmesh.demo.summary import build_summary, render
from gossipmesh.demo.traffic import Driver, split

SETUP_TIMEOUT_S = 45.0
SETTLE_S = 20.0
STAT_WINDOW_S = 60.0  # the widest window /v1/stats keeps
REFRESH_PER_S = 4
EXIT_OK, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP: the terminal went away) stop the demo like Ctrl-C does, and Ctrl-C
    itself does even when the demo was started with SIGINT ignored (a non-interactive shell's
    background job inherits that, and Python then installs no handler of its own)."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, raise_interrupt) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Teardown: ignore Ctrl-C/SIGTERM (teardown is bounded; half of it would leave leftovers)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_demo(
    plan: Plan,
    *,
    tui: bool,
    as_json: bool,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    verbose: bool = False,
) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    out = Console(file=stdout, highlight=False)
    err = Console(file=stderr, highlight=False)
    if tui and not out.is_terminal:
        tui = False  # piped: print lines, not a screen
    progress = stderr_progress(stderr) if as_json or not tui else _console_progress(out)
    if as_json and not verbose:  # for scripts: stderr says only what went wrong
        progress = _quiet
    run = _Run(plan, tui, as_json, out, progress)
    try:
        with _sigterm_as_interrupt():
            code = run.execute()
    except DemoError as exc:
        err.print(f"gossipmesh demo: {exc}", soft_wrap=True, markup=False)
        return EXIT_FAIL
    summary = run.summary
    if summary is None:  # interrupted before any traffic: nothing was measured
        err.print("gossipmesh demo: interrupted during setup; everything it started is stopped")
        return EXIT_FAIL if code == EXIT_OK else code
    if as_json:
        stdout.write(json.dumps(summary, indent=2) + "\n")
        stdout.flush()
    else:
        render(out, summary)
    return code


def _quiet(line: str) -> None:
    """Progress nobody asked for (``--json`` without ``--verbose``)."""


def _console_progress(console: Console) -> Any:
    start = time.monotonic()

    def say(line: str) -> None:
        console.print(f"[bright_black]{time.monotonic() - start:5.1f}s[/] {line}", soft_wrap=True)

    return say


def holds_sample_config(entities: Mapping[str, Any]) -> bool:
    """Whether an agent's effective entities include every entity of the sample config as
    applied. Every one, not just the canary route: an apply is atomic on the agent that takes it,
    but the other agents learn its entries one by one, so an agent may hold the canary route and
    not yet the route that pins /api/slow to v1 (traffic started then breaks the pin)."""
    return all(entities.get(key) == body for key, body in sample_config().items())


class _Run:
    def __init__(self, plan: Plan, tui: bool, as_json: bool, out: Console, progress: Any) -> None:
        self.plan = plan
        self.tui = tui
        self.as_json = as_json
        self.out = out
        self.progress = progress
        self.summary: dict[str, Any] | None = None

    def execute(self) -> int:
        interrupted = False
        code = EXIT_OK
        collected: dict[str, Any] | None = None
        cm = demo_resources(self.plan, self.progress)
        orch = cm.__enter__()
        try:
            try:
                collected = self._setup_and_play(orch)
            except KeyboardInterrupt:
                interrupted = True
                code = EXIT_INTERRUPTED
                collected = getattr(self, "_partial", None)
        finally:
            with _uninterruptible():
                if interrupted:
                    self.progress("interrupted: stopping every process the demo started")
                root, children = orch.root, list(orch.children)
                cm.__exit__(*sys.exc_info())
                cleanup = {
                    "processes": len(children),
                    "all_stopped": all(c.proc.poll() is not None for c in children),
                    "temp_dir_removed": not Path(root).exists(),
                }
        if collected is not None:
            collected["interrupted"] = interrupted
            collected["cleanup"] = cleanup
            self.summary = collected
        return code

    # ---- setup and play ---------------------------------------------------------------------

    def _setup_and_play(self, orch: Orchestrator) -> dict[str, Any]:
        plan = self.plan
        orch.start()
        entry = orch.client(plan.writer, timeout_s=10)
        config = sample_config()
        entry.config_apply(config, orch.signer())
        self.progress(f"applied {len(config)} config entities through {plan.writer.name}: "
                      f"api 90/10 v1/v2, /api/slow pinned to v1, policy/{ADMIN_POLICY} denying "
                      "/api/admin, retries and timeouts")  # fmt: skip
        orch.wait("the config on every agent", lambda: self._config_everywhere(orch),
                  SETUP_TIMEOUT_S)  # fmt: skip
        orch.wait("every instance healthy and routable on every agent",
                  lambda: self._all_routable(orch), SETUP_TIMEOUT_S)  # fmt: skip
        members_at_start = {n.name: orch.members(n) for n in plan.nodes}
        self.progress("every instance passing its health check; starting traffic")

        host, _, port = plan.entry.outbound.rpartition(":")
        driver = Driver((host, int(port)), plan.rate_per_s, plan.workers, SLOW_SHARE,
                        plan.duration_s, admin_share=ADMIN_SHARE)  # fmt: skip
        log = EventLog(driver.now_s, self._on_event)
        script = Script(plan, orch, driver.now_s, log)
        view = MeshView(plan.nodes, lambda n: n.name not in script.killed, plan.entry)
        self._partial: dict[str, Any] | None = None
        self._stat: dict[str, Any] | None = None
        view.start()
        driver.start()
        script.start()
        # mTLS: every agent has --tls-dir and none --inbound-plaintext (orchestrator.py).
        log.add(f"traffic: {plan.rate_per_s:g} req/s from {plan.workers} workers into web "
                f"through {plan.entry.name}'s sidecar ({plan.entry.outbound}), mTLS between "
                f"sidecars; {ADMIN_SHARE:.0%} to /admin, which policy/{ADMIN_POLICY} denies at "
                "api's inbound")  # fmt: skip
        try:
            self._play(driver, script, view, log)
            self._stat = self._ask_stat(orch, driver)
            self.progress("traffic done; waiting for pending measurements")
            script.finish(SETTLE_S)
        finally:
            driver.stop()
            script.stop()
            view.stop()
            self._partial = self._collect(orch, driver, script, view, log, members_at_start)
        return self._partial

    def _play(self, driver: Driver, script: Script, view: MeshView, log: EventLog) -> None:
        end = self.plan.duration_s
        if not self.tui:
            while driver.now_s() < end:
                time.sleep(min(0.2, max(0.0, end - driver.now_s())))
            return
        with Live(self._frame(driver, script, view, log), console=self.out,
                  refresh_per_second=REFRESH_PER_S, screen=False, transient=False) as live:  # fmt: skip
            while driver.now_s() < end:
                time.sleep(1 / REFRESH_PER_S)
                live.update(self._frame(driver, script, view, log))

    def _frame(self, driver: Driver, script: Script, view: MeshView, log: EventLog) -> Any:
        now = driver.now_s()
        samples = driver.samples
        recent = []
        for s in reversed(samples):  # newest last: stop at the window's start
            if s.t_s < now - dashboard.SPLIT_WINDOW_S:
                break
            recent.append(s)
        recent.reverse()
        shift = script.results.get("shift", {})
        sched = script.schedule
        step_split = None
        if sched is not None:
            since = sched.step_start_s(sched.step_at(now))
            step_split = split(takewhile(lambda s: s.t_s >= since, reversed(samples)))
        total = total_ok = admin = denied = 0
        for s in samples:
            if s.admin:
                admin += 1
                denied += s.status == 403 and s.policy == ADMIN_POLICY
            else:
                total += 1
                total_ok += s.ok
        return dashboard.render(
            dashboard.Frame(
                plan=self.plan,
                t_s=now,
                snapshot=view.snapshot(),
                recent=recent,
                total=total,
                total_ok=total_ok,
                events=log.events(),
                killed=frozenset(script.killed),
                partitioned=frozenset(script.partitioned),
                shifted=shift.get("seen_at_entry_s") is not None,
                admin_requests=admin,
                admin_denied=denied,
                schedule=sched,
                step_split=step_split,
            )
        )

    def _ask_stat(self, orch: Orchestrator, driver: Driver) -> dict[str, Any] | None:
        """What ``gossipmesh stat api --window 60`` says at the entry agent as traffic ends (its
        window holds the whole run of a short demo), and when it was asked."""
        try:
            stats = orch.client(self.plan.entry).stats(window_s=STAT_WINDOW_S, service="api")
        except ClientError as exc:
            self.progress(f"gossipmesh stat failed: {exc}")
            return None
        return {"stats": stats, "asked_at_s": driver.now_s()}

    def _on_event(self, ev: Event) -> None:
        if not self.tui:
            self.progress(f"t={ev.t_s:.1f}s {ev.text}")

    def _config_everywhere(self, orch: Orchestrator) -> bool:
        for node in self.plan.nodes:
            try:
                got = orch.client(node).config().get("entities", {})
            except AdminError:
                return False
            if not holds_sample_config(got):
                return False
        return True

    def _all_routable(self, orch: Orchestrator) -> bool:
        want = {(n.name, i.role) for n in self.plan.nodes for i in n.instances}
        for node in self.plan.nodes:
            rows = orch.client(node).services()
            ok = {(r["node"], r["service"]) for r in rows if r.get("routable")
                  and r.get("health") == "passing"}  # fmt: skip
            if not want <= ok:
                return False
        return True

    def _collect(
        self,
        orch: Orchestrator,
        driver: Driver,
        script: Script,
        view: MeshView,
        log: EventLog,
        members_at_start: dict[str, dict[str, str]],
    ) -> dict[str, Any]:
        totals = view.snapshot().totals
        security: dict[str, Any] = {}
        if orch.pki is not None:
            security = {**orch.pki.describe(), "agents": dict(orch.node_certs)}
        proxy = {
            "retries": {k: v for k, v in sorted(totals.retries.items())},
            "ejections": {k: v for k, v in sorted(totals.ejections.items())},
            "denied": {f"{svc} {pol}": v for (svc, pol), v in sorted(totals.denied.items())},
        }
        return build_summary(
            self.plan,
            list(driver.samples),
            min(driver.now_s(), self.plan.duration_s),
            script.results,
            members_at_start,
            proxy,
            [{"t_s": e.t_s, "text": e.text} for e in log.events()],
            False,
            str(orch.root),
            orch.pids,
            security,
            self._stat,
        )
