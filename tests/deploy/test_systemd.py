"""deploy/systemd: the unit and its drop-in pass ``systemd-analyze verify`` with no warning, the
hardening scores well, and the agent flags they pass are ones the agent accepts."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_flags import DEPLOY, settings_from

from gossipmesh.ids import Address

UNIT = DEPLOY / "systemd" / "gossipmesh.service"
DROP_IN = DEPLOY / "systemd" / "override.conf.example"
INSTALLED_BINARY = "/opt/gossipmesh/bin/gossipmesh"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) .. 10 (exposed); measured 1.2

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def installed(tmp_path: Path) -> Path:
    """The unit and drop-in laid out as in /etc/systemd/system, with ExecStart pointing at this
    checkout's gossipmesh (verify checks that the binary exists)."""
    binary = Path(sys.executable).parent / "gossipmesh"
    assert binary.exists(), binary
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    drop_ins = tmp_path / f"{UNIT.name}.d"
    drop_ins.mkdir()
    shutil.copy(DROP_IN, drop_ins / "override.conf")
    return unit


@needs_systemd
def test_unit_and_drop_in_verify_clean(tmp_path: Path) -> None:
    unit = installed(tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    ours = [line for line in proc.stderr.splitlines() if str(tmp_path) in line]
    assert proc.returncode == 0 and not ours, proc.stderr
    # The check can fail: a typo in a directive is reported against our file.
    (tmp_path / f"{UNIT.name}.d" / "override.conf").write_text("[Service]\nProtectSytem=strict\n")
    bad = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                         timeout=60, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:",
                                          "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert "ProtectSytem" in bad.stderr


@needs_systemd
def test_hardening_exposure_is_low(tmp_path: Path) -> None:
    unit = installed(tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {proc.stderr}")
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout


def service_section() -> dict[str, list[str]]:
    """[Service] keys to their values (a key may repeat), continuation lines joined."""
    text = UNIT.read_text().replace("\\\n", " ")
    values: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_runs_the_agent_with_flags_it_accepts(tmp_path: Path) -> None:
    s = service_section()
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["gossipmesh"]
    assert s["CapabilityBoundingSet"] == [""] and s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    credentials = {v.split(":", 1)[0] for v in s["LoadCredential"]}
    assert credentials == {"gossip.key", "node.key", "node.crt", "roots.pem"}
    argv = s["ExecStart"][0].split()
    assert argv[:2] == [INSTALLED_BINARY, "agent"] and argv[-1] == "$GOSSIPMESH_FLAGS"
    args = " ".join(argv[2:-1])
    args = args.replace("${STATE_DIRECTORY}", "/var/lib/gossipmesh")
    args = args.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/gossipmesh.service")
    drop_in = configparser.ConfigParser(interpolation=None)
    drop_in.read(DROP_IN)
    per_host = drop_in["Service"]["Environment"].strip('"').removeprefix("GOSSIPMESH_FLAGS=")
    settings = settings_from(f"{args} {per_host}", (DEPLOY / "agent.toml").read_text(), tmp_path)
    assert settings.tls_dir == Path("/run/credentials/gossipmesh.service")
    assert settings.encrypt_file == Path("/run/credentials/gossipmesh.service/gossip.key")
    assert settings.data_dir == Path("/var/lib/gossipmesh")
    assert settings.admin == Address("127.0.0.1", 7947) and len(settings.join) == 2
