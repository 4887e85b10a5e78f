"""The demo dashboard fits the terminal it is drawn on: 80x24 gets the compact layout with every
line inside the screen, a large terminal the full one; labels say what they count."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gossipmesh.demo import dashboard
from gossipmesh.demo.observe import Counters, ServiceRow, Snapshot
from gossipmesh.demo.plan import make_plan
from gossipmesh.demo.schedule import plan_schedule
from gossipmesh.demo.script import Event
from gossipmesh.demo.traffic import Sample


def frame(nodes: int = 5, events: int = 30, scheduled: bool = False) -> dashboard.Frame:
    plan = make_plan(nodes, 60)
    names = [n.name for n in plan.nodes]
    view = {n: "alive" for n in names}
    view[names[-1]] = "dead"
    members = {viewer: dict(view) for viewer in names[:-1]}
    services = tuple(
        ServiceRow(svc, 60.0, 0.999, 0.002, 0.05, 12.0, 3.0) for svc in ("api", "db", "web")
    )
    recent = [Sample(50 + i / 60, 3.0, 200, "v1" if i % 10 else "v2", "api@n2", i % 7 == 0)
              for i in range(600)]  # fmt: skip
    # /admin requests the policy refused: shown on their own line, not as driver failures.
    recent += [Sample(55 + i / 10, 2.0, 403, "", "", False, True, "api-admin") for i in range(30)]
    log = [Event(float(i), f"scripted event number {i} with a long description " * 2, "")
           for i in range(events)]  # fmt: skip
    return dashboard.Frame(plan=plan, t_s=60.0, snapshot=Snapshot(members, services, Counters()),
                           recent=recent, total=3600, total_ok=3598, events=log,
                           killed=frozenset({names[-1]}), partitioned=frozenset(),
                           shifted=False, admin_requests=180, admin_denied=180,
                           # t=60 in a schedule from t=43.2 to a run end at 70: step 3 of 4 (13/87)
                           schedule=plan_schedule(43.2, 10**12, 70.0) if scheduled else None,
                           step_split={"v1": 5, "v2": 35} if scheduled else None)  # fmt: skip


def draw(f: dashboard.Frame, width: int, height: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, color_system=None, legacy_windows=False)
    console.print(dashboard.render(f))
    return out.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize("scheduled", [False, True])
@pytest.mark.parametrize("nodes", [3, 5])
def test_fits_80x24(nodes: int, scheduled: bool) -> None:
    lines = draw(frame(nodes, scheduled=scheduled), 80, 24)
    assert len(lines) <= 23, "\n".join(lines)  # one spare line: the live display never scrolls
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "scripted event number 29" in text  # the newest events are shown
    assert "retries Σ" in text and "totals since start" in text
    assert "agree: running agents that see the member in that state" in text
    assert "policy api-admin: /admin denied 180 of 180 (403 at api's inbound)" in text
    assert "100.0%" in text  # the driver's success: the refused /admin requests are not in it
    for node in frame(nodes).plan.nodes:
        assert node.name in text
    # The scheduled shift: the step in force, its v2 weight and the v2 share seen since it began.
    shown = "scheduled shift (own clocks) step 3/4: v2 set 87 %, seen 88 % (n=40) in this" in text
    assert shown is scheduled, text
    assert ("set 13/87" in text) is scheduled, text


def test_full_layout_on_a_large_terminal() -> None:
    lines = draw(frame(scheduled=True), 140, 50)
    text = "\n".join(lines)
    assert "rate, success, latency over the last 5 s" in text
    assert "ejections Σ" in text and "totals since start" in text
    assert "members (as n1 sees them)" in text
    assert "policy api-admin: /admin denied 180 of 180 (403 at api's inbound)" in text
    assert "100.0%" in text
    assert "scheduled, step 3/4" in text and "v2 set 87 %, seen 88 % (n=40)" in text
    assert "each agent steps on its own clock" in text
    assert max(len(line) for line in lines) <= 140


def test_the_canary_panel_shows_what_gossipmesh_stat_reports() -> None:
    f = frame()
    assert dashboard.stat_text(f) == "-"  # not asked yet
    snap = Snapshot(f.snapshot.members, f.snapshot.services, Counters(), {"v1": 540, "v2": 60})
    text = "\n".join(draw(dashboard.Frame(
        plan=f.plan, t_s=f.t_s, snapshot=snap, recent=f.recent, total=f.total,
        total_ok=f.total_ok, events=f.events, killed=f.killed, partitioned=f.partitioned,
        shifted=False), 140, 60))  # fmt: skip
    assert "gossipmesh stat, 10 s" in text and "90 / 10  (n=600)" in text
