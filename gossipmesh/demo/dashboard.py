"""The live dashboard: one rich renderable rebuilt from snapshots about four times a second.

Theory of operation
-------------------
``render`` is a pure function of a ``Frame`` (the mesh view's snapshot, the driver's recent
samples, the event log, what the script has done so far): it reads nothing and changes nothing,
so the main thread can rebuild the whole screen on every tick under ``rich.live.Live`` without
locks beyond the snapshot copies. Panels: members (the entry agent's view, with how many agents
agree), per-service traffic (the driver's end-to-end numbers for the app, the proxies' counters
for each service), the canary (configured weights vs what the app observed), and the event log.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gossipmesh.demo.observe import Snapshot
from gossipmesh.demo.plan import CANARY_AFTER, CANARY_BEFORE, Plan
from gossipmesh.demo.script import Event
from gossipmesh.demo.traffic import Sample, split, summarize

STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}
WINDOW_S = 5.0  # the driver's "now" numbers: the last five seconds
SPLIT_WINDOW_S = 10.0
EVENT_LINES = 12


@dataclass(frozen=True, slots=True)
class Frame:
    plan: Plan
    t_s: float
    snapshot: Snapshot
    recent: list[Sample]  # the last SPLIT_WINDOW_S seconds of samples
    total: int
    total_ok: int
    events: list[Event]
    killed: frozenset[str]
    partitioned: frozenset[str]
    shifted: bool  # the entry agent routes with the 50/50 route


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"≤{x * 1000:.1f} ms" if x < 1 else f"≤{x:.1f} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def header(plan: Plan, t_s: float) -> Text:
    n = len(plan.nodes)
    text = Text()
    text.append("gossipmesh demo", style="bold")
    text.append(f"  {n} agents on {plan.nodes[0].ip}-{plan.nodes[-1].ip}, encrypted gossip, node certificates from its own CA, no control plane"
                f"  t = {min(t_s, plan.duration_s):.1f} / {plan.duration_s:g} s\n")  # fmt: skip
    text.append("profile local: ", style="bold yellow")
    text.append("probe every 1 s with a 200 ms timeout, so failures are found in seconds "
                "(fast failure detection for a demo on one machine; use lan or wan for real networks)",
                style="yellow")  # fmt: skip
    return text


def members_table(f: Frame) -> Table:
    t = Table(title="members (as n1 sees them)", title_justify="left", box=None, expand=True)
    for col in ("node", "address", "hosts", "state", "agree", "process"):
        t.add_column(col)
    entry_view = f.snapshot.members.get(f.plan.entry.name, {})
    for node in f.plan.nodes:
        state = entry_view.get(node.name, "?")
        views = [v.get(node.name) for k, v in f.snapshot.members.items()
                 if k not in f.killed]  # fmt: skip
        agree = sum(1 for s in views if s == state)
        if node.name in f.killed:
            process = "[red]killed[/]"
        elif node.name in f.partitioned:
            process = "[magenta]partitioned[/]"
        else:
            process = "[green]running[/]"
        t.add_row(
            node.name,
            node.ip,
            ", ".join(i.label for i in node.instances),
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            f"{agree}/{len(views)}",
            process,
        )
    return t


def services_table(f: Frame) -> Table:
    t = Table(title="traffic (last 5 s)", title_justify="left", box=None, expand=True)
    for col in ("service", "req/s", "success", "p50", "p99", "retries", "ejections"):
        t.add_column(col, justify="right" if col != "service" else "left")
    window = [s for s in f.recent if s.t_s >= f.t_s - WINDOW_S]
    w = summarize(window, min(WINDOW_S, max(f.t_s, 1e-9)))
    t.add_row(
        "[bold]app → web[/] (driver)",
        f"{w.rate_per_s:.1f}",
        _pct(w.success_rate),
        "-" if w.p50_ms is None else f"{w.p50_ms:.1f} ms",
        "-" if w.p99_ms is None else f"{w.p99_ms:.1f} ms",
        "",
        "",
    )
    for row in f.snapshot.services:
        t.add_row(
            f"{row.service} (sidecars)",
            f"{row.rate_per_s:.1f}",
            _pct(row.success_rate),
            _fmt_s(row.p50_s),
            _fmt_s(row.p99_s),
            f"{row.retries:g}",
            f"{row.ejections:g}",
        )
    rate = f.total_ok / f.total if f.total else None
    t.caption = f"all requests so far: {f.total}, success {_pct(rate)}"
    return t


def canary_panel(f: Frame) -> Table:
    weights = CANARY_AFTER if f.shifted else CANARY_BEFORE
    counts = split(f.recent)
    n = counts["v1"] + counts["v2"]
    t = Table(title="canary (api v1 / v2)", title_justify="left", box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("configured", f"{weights[0]} / {weights[1]}")
    observed = f"{counts['v1'] / n * 100:.0f} / {counts['v2'] / n * 100:.0f}  (n={n})" if n else "-"
    t.add_row(f"observed, {SPLIT_WINDOW_S:g} s", observed)
    slow = [s for s in f.recent if s.slow and s.ok]
    v2 = sum(1 for s in slow if s.version == "v2")
    t.add_row("/api/slow (v1 only)", f"{len(slow) - v2} / {v2}")
    return t


def events_panel(f: Frame) -> Panel:
    text = Text()
    for ev in f.events[-EVENT_LINES:]:
        text.append(f"{ev.t_s:6.1f}s  ", style="bright_black")
        text.append(ev.text + "\n", style=ev.style)
    if not f.events:
        text.append("waiting for the first scripted event ...", style="bright_black")
    return Panel(text, title="events", title_align="left")


def render(f: Frame) -> RenderableType:
    top = Table.grid(expand=True)
    top.add_column(ratio=3)
    top.add_column(ratio=2)
    top.add_row(members_table(f), canary_panel(f))
    return Group(header(f.plan, f.t_s), Panel(top), Panel(services_table(f)), events_panel(f))
