"""``gossipmesh config``: file formats, and bad files refused with one line naming the field, exit 2,
before anything is sent (no agent runs here; the admin address is a closed port)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossipmesh.cli.config_cmd import FileProblem, entities_from, read_document

NOWHERE = "127.0.0.1:9"  # discard port: nothing listens, so anything sent would exit 1, not 2


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipmesh", *args, "--agent", NOWHERE],
                          capture_output=True, text=True, timeout=30, input=stdin)  # fmt: skip


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_file_shapes_flatten_alike(tmp_path: Path) -> None:
    toml = write(tmp_path, "a.toml", """
delete = ["route/old"]
[route.web]
destinations = [{ service = "api", weight = 90 }, { service = "v2", weight = 10 }]
[service.api]
protocol = "tcp"
["policy/ops"]
to = "api"
""")  # fmt: skip
    json_flat = write(
        tmp_path,
        "b.json",
        """{"route/web": {"destinations": [{"service": "api",
        "weight": 90}, {"service": "v2", "weight": 10}]}, "service/api": {"protocol": "tcp"},
        "policy/ops": {"to": "api"}, "route/old": null}""",
    )
    json_wrapped = write(
        tmp_path,
        "c.txt",
        """{"entities": {"route/old": null,
        "route/web": {"destinations": [{"service": "api", "weight": 90},
        {"service": "v2", "weight": 10}]}}, "service": {"api": {"protocol": "tcp"}},
        "policy": {"ops": {"to": "api"}}}""",
    )
    flat = [entities_from(read_document(p), p) for p in (toml, json_flat, json_wrapped)]
    assert flat[0] == flat[1] == flat[2]
    assert flat[0]["route/old"] is None and flat[0]["service/api"] == {"protocol": "tcp"}


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('[route.web]\ndestinations = [{ service = "api", weight = -1 }]\n',
         "route/web: route.destinations[0].weight: -1 is out of range"),
        ('[service.api]\nprotocl = "tcp"\n', "service/api: service.protocl: unknown field"),
        ('[widget.x]\na = 1\n', "widget: not KIND/NAME"),
        ('delete = ["route"]\n', "delete: 'route' is not KIND/NAME"),
        ('["route/web"]\ndestinations = [{ service = "api" }]\n[route.web]\ndestinations = []\n',
         "route/web: given twice"),
        ("[route.web\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_apply_file_is_one_line_exit_2(tmp_path: Path, text: str, expect: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    done = cli("config", "apply", "-f", path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and path in lines[0], lines


def test_set_validates_body_from_file_and_stdin(tmp_path: Path) -> None:
    bad = write(tmp_path, "r.json", '{"destinations": [{"service": "api", "weight": "x"}]}')
    done = cli("config", "set", "route/web", "-f", bad)
    assert done.returncode == 2
    assert "route/web: route.destinations[0].weight: must be an integer" in done.stderr
    done = cli("config", "set", "route/web", "-f", "-", stdin='destinations = "nope"\n')
    assert done.returncode == 2 and "stdin: route/web: route.destinations" in done.stderr
    done = cli("config", "set", "route/web", "-f", "-", stdin="{not json or toml")
    assert done.returncode == 2 and "neither JSON nor TOML" in done.stderr
    done = cli("config", "set", "nokind", "-f", bad)
    assert done.returncode == 2 and "is not KIND/NAME" in done.stderr
    # A valid file gets as far as the network: the agent is unreachable, exit 1.
    good = write(tmp_path, "g.toml", 'destinations = [{ service = "api" }]\n')
    done = cli("config", "set", "route/web", "-f", good)
    assert done.returncode == 1 and "cannot reach the gossipmesh agent" in done.stderr


def test_read_document_names_the_file() -> None:
    with pytest.raises(FileProblem, match="/nonexistent.json: cannot read"):
        read_document("/nonexistent.json")


def test_fault_injection_is_refused_unless_the_admin_api_is_on_loopback() -> None:
    from gossipmesh.agent.settings import load_settings
    from gossipmesh.errors import UsageError

    with pytest.raises(UsageError, match="needs a loopback --admin"):
        load_settings({"enable_fault_injection": True, "admin": "10.1.2.3:7947"})
    assert load_settings({"enable_fault_injection": True, "admin": "127.0.0.5:1"})
    with pytest.raises(UsageError, match="config_sync_interval_ms"):
        load_settings({"config_sync_interval_ms": 5})
    done = subprocess.run(
        [sys.executable, "-m", "gossipmesh", "agent", "--enable-fault-injection",
         "--admin", "0.0.0.0:7947"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "needs a loopback --admin" in done.stderr


def test_the_operator_key_comes_from_the_environment_too(tmp_path: Path) -> None:
    good = write(tmp_path, "g.toml", 'destinations = [{ service = "api" }]\n')
    missing = str(tmp_path / "nope.op")
    env = {**os.environ, "GOSSIPMESH_OPERATOR_KEY": missing, "GOSSIPMESH_AGENT": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "gossipmesh", "config", "set", "route/web", "-f",
                           good], capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert done.returncode == 2 and "nope.op" in done.stderr
    assert done.stderr.count("\n") == 1
