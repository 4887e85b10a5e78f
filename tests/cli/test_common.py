"""The CLI's one error boundary (gossipmesh/cli/common.py): library errors become one line on
stderr and an exit code."""

from __future__ import annotations

import pytest
import typer

from gossipmesh.cli.common import EXIT_FAIL, EXIT_USAGE, InputProblem, client, run
from gossipmesh.client import AdminError, AgentUnreachable


def raises(exc: Exception) -> None:
    raise exc


@pytest.mark.parametrize(
    ("exc", "usage_statuses", "code", "line"),
    [
        (AgentUnreachable("cannot reach x"), (), EXIT_FAIL, "cannot reach x (set --agent or"),
        (AdminError(503, "store_failed", "disk"), (400,), EXIT_FAIL, "agent error: store_failed"),
        (AdminError(400, "invalid", "route.x"), (400,), EXIT_USAGE, "agent refused: invalid"),
        (AdminError(400, "invalid", "route.x"), (), EXIT_FAIL, "agent error: invalid"),
        (InputProblem("f.toml: not valid TOML"), (), EXIT_USAGE, "f.toml: not valid TOML"),
    ],
)
def test_run_maps_each_error_to_one_line_and_an_exit_code(
    exc: Exception,
    usage_statuses: tuple[int, ...],
    code: int,
    line: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as info:
        run(lambda: raises(exc), usage_statuses)
    assert info.value.exit_code == code
    err = capsys.readouterr().err
    assert err.startswith("gossipmesh: ") and line in err
    assert len(err.strip().splitlines()) == 1


def test_run_returns_the_answer_and_lets_other_errors_through() -> None:
    assert run(lambda: 42) == 42
    with pytest.raises(KeyError):  # a bug is not an exit code: it surfaces with its traceback
        run(lambda: raises(KeyError("missing")))


def test_a_bad_agent_address_is_a_usage_error() -> None:
    with pytest.raises(typer.BadParameter):
        client("host:notaport")
