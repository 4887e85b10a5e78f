"""The command line: exit codes, one-line errors, JSON, and commands that reproduce themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulations.cli import build_parser, main, options_from_args
from simulations.scenarios import Options


@pytest.mark.parametrize(
    "argv",
    [
        ["nosuch"],
        ["steady", "--nodes", "2"],
        ["steady", "--loss", "1.5"],
        ["steady", "--nodes", "ten"],
        ["crash", "--nodes", "10", "--kill", "9"],
        ["loss", "--loss-rates", "0.1,x"],
        ["partition", "--split", "thirds"],
    ],
)
def test_bad_options_give_one_line_and_exit_2(argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_json_output(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "r.json"
    assert main(["crash", "--nodes", "20", "--seed", "4", "--kill", "1", "--json", str(out),
                 "--quiet"]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["ok"] is True
    assert doc["command"].startswith("python -m simulations crash --nodes 20 --seed 4")
    assert doc["runs"][0]["metrics"]["killed"] == 1
    assert len(doc["runs"][0]["trace_hash"]) == 32


def test_plot_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png, md = tmp_path / "p.png", tmp_path / "r.md"
    argv = ["crash", "--nodes", "20", "--seed", "4", "--quiet", "--plot", str(png),
            "--markdown", str(md)]  # fmt: skip
    assert main(argv) == 0
    assert png.stat().st_size > 10_000
    assert "e/(e-1)" in md.read_text()


@pytest.mark.parametrize(
    "opts",
    [
        Options("crash", nodes=30, seed=9, kill=4, loss=0.05, duration_s=40.0),
        Options("partition", nodes=12, split="one", hold_s=12.5, asymmetric=True, flaps=2),
        Options("slow-nodes", slow=3, slow_delay_ms=900, lifeguard=False, profile="wan"),
        Options("loss", loss_rates=(0.0, 0.3), settle_s=10.0),
        Options("churn", churn_rate=2.0, churn_s=10.0, join_spread_s=1.0, fault_at_s=2.0),
    ],
)
def test_command_round_trips_through_the_parser(opts: Options) -> None:
    argv = opts.command().split()[3:]  # drop "python -m simulations"
    again = options_from_args(build_parser().parse_args(argv))
    assert again == opts


def test_gossipmesh_simulate_is_the_same_command() -> None:
    # The real console entry point (python -m gossipmesh), not a stand-in app: the mount is part
    # of what is tested.
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gossipmesh", "simulate", *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = run("steady", "--nodes", "10", "--duration", "5", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "steady" in ok.stdout
    bad = run("steady", "--nodes", "1")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) <= 2, bad.stderr  # usage line + one reason
