"""The demo dashboard fits the terminal it is drawn on: 80x24 gets the compact layout with every
line inside the screen, a large terminal the full one; labels say what they count."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gossipmesh.demo import dashboard
from gossipmesh.demo.observe import Counters, ServiceRow, Snapshot
from gossipmesh.demo.plan import make_plan
from gossipmesh.demo.script import Event
from gossipmesh.demo.traffic import Sample


def frame(nodes: int = 5, events: int = 30) -> dashboard.Frame:
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
                           shifted=False, admin_requests=180, admin_denied=180)  # fmt: skip


def draw(f: dashboard.Frame, width: int, height: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, color_system=None, legacy_windows=False)
    console.print(dashboard.render(f))
    return out.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize("nodes", [3, 5])
def test_fits_80x24(nodes: int) -> None:
    lines = draw(frame(nodes), 80, 24)
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


def test_full_layout_on_a_large_terminal() -> None:
    lines = draw(frame(), 140, 50)
    text = "\n".join(lines)
    assert "rate, success, latency over the last 5 s" in text
    assert "ejections Σ" in text and "totals since start" in text
    assert "members (as n1 sees them)" in text
    assert "policy api-admin: /admin denied 180 of 180 (403 at api's inbound)" in text
    assert "100.0%" in text
    assert max(len(line) for line in lines) <= 140
