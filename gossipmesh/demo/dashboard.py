"""The live dashboard: one rich renderable rebuilt from snapshots about four times a second.

Theory of operation
-------------------
``render`` is a pure function of a ``Frame`` (the mesh view's snapshot, the driver's recent
samples, the event log, what the script has done so far): it reads nothing and changes nothing,
so the main thread can rebuild the whole screen on every tick under ``rich.live.Live`` without
locks beyond the snapshot copies. Panels: members (the entry agent's view, with how many agents
agree), per-service traffic (the driver's end-to-end numbers for the app, the proxies' counters
for each service), the canary (configured weights vs what the app observed; once the scheduled
shift is written, the weights of the step in force and the split observed since it began), the
deny policy
(the driver's /admin requests since the start and how many a 403 naming it refused: they are not
in the driver's success figures), and the event log.

``render`` returns a ``Dashboard``, which picks its layout when rich draws it, from the terminal's
size: the full layout (panels side by side) from ``WIDE_COLUMNS`` columns and ``TALL_LINES``
lines up, else a compact one that fits 80x24 (no borders, one-line header and canary, short
columns, as many event lines as are left). Labels say what they count: request rate, success and
latency are over the last ``WINDOW_S`` seconds; retries and ejections are totals since the demo
started (the proxies' counters); ``agree`` is how many running agents see a member in the state
the entry agent sees it in (5/5: everyone agrees; 3/4 while the news spreads or one is cut off).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gossipmesh.demo.observe import Snapshot
from gossipmesh.demo.plan import ADMIN_POLICY, CANARY_AFTER, CANARY_BEFORE, Node, Plan
from gossipmesh.demo.schedule import Schedule
from gossipmesh.demo.script import Event
from gossipmesh.demo.traffic import Sample, split, summarize

STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}
WINDOW_S = 5.0  # the driver's "now" numbers: the last five seconds
SPLIT_WINDOW_S = 10.0
EVENT_LINES = 12
WIDE_COLUMNS = 100  # below this width, or TALL_LINES height, the compact layout
TALL_LINES = 40
COMPACT_MIN_EVENTS = 3
AGREE_NOTE = "agree: running agents that see the member in that state"
TOTALS_NOTE = "retries, ejections: totals since start"


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
    admin_requests: int = 0  # the driver's /admin requests since the start
    admin_denied: int = 0  # ... answered 403 naming ADMIN_POLICY
    schedule: Schedule | None = None  # the scheduled shift, once written
    step_split: dict[str, int] | None = None  # split() of the samples since its step began


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
    t = Table(title=f"members (as {f.plan.entry.name} sees them)", title_justify="left",
              box=None, expand=True, caption=AGREE_NOTE, caption_justify="left")  # fmt: skip
    for col in ("node", "address", "hosts", "state", "agree", "process"):
        t.add_column(col)
    for node, state, agree, process in _member_rows(f):
        t.add_row(node.name, node.ip, ", ".join(i.label for i in node.instances), state, agree,
                  process)  # fmt: skip
    return t


def _member_rows(f: Frame) -> list[tuple[Node, str, str, str]]:
    """(node, styled state as the entry agent sees it, agreement, styled process state)."""
    rows = []
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
        styled = f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"
        rows.append((node, styled, f"{agree}/{len(views)}", process))
    return rows


def services_table(f: Frame, compact: bool = False) -> Table:
    window_s = f"{WINDOW_S:g} s"
    title = None if compact else f"traffic: rate, success, latency over the last {window_s}"
    t = Table(title=title, title_justify="left", box=None, expand=True, pad_edge=False)
    heads = ("service", f"req/s {window_s}", "success", "p50", "p99", "retries Σ", "ejections Σ")
    if compact:
        heads = ("service", "req/s", "ok", "p50", "p99", "retries Σ", "eject Σ")
    for col in heads:
        t.add_column(col, justify="right" if col != "service" else "left", no_wrap=True)
    window = [s for s in f.recent if s.t_s >= f.t_s - WINDOW_S and not s.admin]
    w = summarize(window, min(WINDOW_S, max(f.t_s, 1e-9)))
    t.add_row(
        "[bold]app → web[/]" + ("" if compact else " (driver)"),
        f"{w.rate_per_s:.1f}",
        _pct(w.success_rate),
        "-" if w.p50_ms is None else f"{w.p50_ms:.1f} ms",
        "-" if w.p99_ms is None else f"{w.p99_ms:.1f} ms",
        "",
        "",
    )
    for row in f.snapshot.services:
        t.add_row(
            row.service if compact else f"{row.service} (sidecars)",
            f"{row.rate_per_s:.1f}",
            _pct(row.success_rate),
            _fmt_s(row.p50_s),
            _fmt_s(row.p99_s),
            f"{row.retries:g}",
            f"{row.ejections:g}",
        )
    rate = f.total_ok / f.total if f.total else None
    so_far = f"all requests so far: {f.total}, success {_pct(rate)}"
    t.caption = f"{so_far}; {TOTALS_NOTE}"
    t.caption_justify = "left"
    return t


def _canary(f: Frame) -> tuple[str, str, str]:
    """(configured, observed over SPLIT_WINDOW_S, /api/slow answers by v1 / v2)."""
    weights = CANARY_AFTER if f.shifted else CANARY_BEFORE
    if f.schedule is not None:
        weights = f.schedule.weights(f.schedule.step_at(f.t_s))
    counts = split(f.recent)
    n = counts["v1"] + counts["v2"]
    observed = f"{counts['v1'] / n * 100:.0f} / {counts['v2'] / n * 100:.0f}  (n={n})" if n else "-"
    slow = [s for s in f.recent if s.slow and s.ok]
    v2 = sum(1 for s in slow if s.version == "v2")
    return f"{weights[0]} / {weights[1]}", observed, f"{len(slow) - v2} / {v2}"


def stat_text(f: Frame) -> str:
    """The canary split as ``gossipmesh stat`` reports it (the proxies' counters, every agent)."""
    counts = f.snapshot.stat_split
    n = counts["v1"] + counts["v2"] if counts else 0
    if not counts or not n:
        return "-"
    return f"{counts['v1'] / n * 100:.0f} / {counts['v2'] / n * 100:.0f}  (n={n})"


def scheduled(f: Frame) -> tuple[str, str] | None:
    """(the step in force, "v2 set X %, seen Y % (n=N)" since it began); None before the write."""
    if f.schedule is None:
        return None
    k = f.schedule.step_at(f.t_s)
    v1, v2 = f.schedule.weights(k)
    counts = f.step_split or {"v1": 0, "v2": 0}
    n = counts["v1"] + counts["v2"]
    seen = f"{counts['v2'] / n * 100:.0f} %" if n else "-"
    return f"{k}/{f.schedule.steps}", f"v2 set {v2 * 100 // (v1 + v2)} %, seen {seen} (n={n})"


def policy_text(f: Frame) -> Text:
    """One line: the deny policy biting (or not)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"policy {ADMIN_POLICY}: ", style="bold")
    bites = f.admin_requests > 0 and f.admin_denied == f.admin_requests
    text.append(f"/admin denied {f.admin_denied} of {f.admin_requests}",
                style="green" if bites else "yellow")  # fmt: skip
    text.append(" (403 at api's inbound)")
    return text


def canary_panel(f: Frame) -> Table:
    configured, observed, slow = _canary(f)
    t = Table(title="canary (api v1 / v2)", title_justify="left", box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("configured", configured)
    t.add_row(f"observed, {SPLIT_WINDOW_S:g} s", observed)
    t.add_row(f"gossipmesh stat, {SPLIT_WINDOW_S:g} s", stat_text(f))
    t.add_row("/api/slow (v1 only)", slow)
    sched = scheduled(f)
    if sched is not None:
        t.add_row(f"scheduled, step {sched[0]}", sched[1])
        t.caption, t.caption_justify = "each agent steps on its own clock", "left"
    return t


def events_text(f: Frame, lines: int = EVENT_LINES) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for ev in f.events[-lines:]:
        text.append(f"{ev.t_s:6.1f}s  ", style="bright_black")
        text.append(ev.text + "\n", style=ev.style)
    if not f.events:
        text.append("waiting for the first scripted event ...", style="bright_black")
    text.rstrip()
    return text


def events_panel(f: Frame) -> Panel:
    return Panel(events_text(f), title="events", title_align="left")


def full(f: Frame) -> RenderableType:
    top = Table.grid(expand=True)
    top.add_column(ratio=3)
    top.add_column(ratio=2)
    top.add_row(members_table(f), canary_panel(f))
    traffic = Group(services_table(f), policy_text(f))
    return Group(header(f.plan, f.t_s), Panel(top), Panel(traffic), events_panel(f))


def compact(f: Frame, height: int) -> RenderableType:
    """The 80x24 layout: every line counted, no borders; events get what is left."""
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append("gossipmesh demo", style="bold")
    head.append(f"  {len(f.plan.nodes)} agents, t = {min(f.t_s, f.plan.duration_s):.0f}/"
                f"{f.plan.duration_s:g} s  ")  # fmt: skip
    head.append("profile local: failures found in seconds", style="yellow")
    members = Table(box=None, expand=True, pad_edge=False, show_edge=False)
    for col in ("node", "hosts", "state", "agree", "process"):
        members.add_column(col, no_wrap=True, overflow="ellipsis")
    for node, state, agree, process in _member_rows(f):
        hosts = ", ".join(i.label for i in node.instances)
        members.add_row(node.name, hosts, state, agree, process)
    configured, observed, slow = _canary(f)
    canary = Text(no_wrap=True, overflow="ellipsis")
    canary.append("canary v1/v2 ", style="bold")
    seen = observed.replace(" / ", "/").replace("  (", " (")
    canary.append(f"set {configured.replace(' / ', '/')}, seen {seen} in {SPLIT_WINDOW_S:g} s; "
                  f"/api/slow {slow.replace(' / ', '/')}")  # fmt: skip
    traffic = services_table(f, compact=True)
    notes = Text(f"{AGREE_NOTE} (of {f.plan.entry.name}'s view)", style="bright_black",
                 no_wrap=True, overflow="ellipsis")  # fmt: skip
    sched = scheduled(f)
    step = Text(no_wrap=True, overflow="ellipsis")
    if sched is not None:
        step.append("scheduled shift (own clocks) ", style="bold")
        step.append(f"step {sched[0]}: {sched[1]} in this step")
    # header 1, members 1 + nodes, notes 1, canary 1 (+ 1 scheduled), policy 1, traffic 1 + 1 +
    # services + caption 1, events title 1, and one spare line so the live display never scrolls.
    used = 1 + (1 + len(f.plan.nodes)) + 1 + 1 + (sched is not None) + 1
    used += (2 + len(f.snapshot.services) + 1) + 1 + 1
    lines = max(COMPACT_MIN_EVENTS, height - used)
    title = Text(f"events (last {lines})", style="bold")
    parts: list[RenderableType] = [head, members, notes, canary]
    if sched is not None:
        parts.append(step)
    return Group(*parts, policy_text(f), traffic, title, events_text(f, lines))


@dataclass(frozen=True, slots=True)
class Dashboard:
    """One frame, laid out for the terminal it is drawn on (see the module doc)."""

    frame: Frame

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        if options.max_width >= WIDE_COLUMNS and height >= TALL_LINES:
            yield full(self.frame)
        else:
            yield compact(self.frame, height)


def render(f: Frame) -> RenderableType:
    return Dashboard(f)
