"""``gossipmesh demo --no-tui --json`` keeps stderr for errors; ``--verbose`` adds the progress.

The demo's setup is replaced by one that reports progress and then fails, so no agent starts."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from gossipmesh.demo import runner
from gossipmesh.demo.orchestrator import DemoError
from gossipmesh.demo.plan import make_plan


def failing_setup(plan: object, progress: Callable[[str], None]) -> object:
    progress("checking 127.0.0.2-127.0.0.4")
    raise DemoError("port 7946 on 127.0.0.2 is in use")


@pytest.mark.parametrize(("verbose", "progress_shown"), [(False, False), (True, True)])
def test_json_keeps_stderr_quiet_unless_verbose(
    monkeypatch: pytest.MonkeyPatch, verbose: bool, progress_shown: bool
) -> None:
    monkeypatch.setattr(runner, "demo_resources", failing_setup)
    out, err = io.StringIO(), io.StringIO()
    code = runner.run_demo(make_plan(3, 20), tui=False, as_json=True, stdout=out, stderr=err,
                           verbose=verbose)  # fmt: skip
    assert code == 1 and out.getvalue() == ""
    assert ("checking 127.0.0.2-127.0.0.4" in err.getvalue()) is progress_shown
    assert "port 7946 on 127.0.0.2 is in use" in err.getvalue()  # errors always


def test_no_tui_without_json_prints_progress() -> None:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "demo_resources", failing_setup)
        runner.run_demo(
            make_plan(3, 20), tui=False, as_json=False, stdout=io.StringIO(), stderr=err
        )
    assert "checking 127.0.0.2-127.0.0.4" in err.getvalue()
