"""deploy/Containerfile, read as text (no container engine runs in the test suite): a multi-stage
build that installs this checkout, a non-root numeric user, the state dir as a volume, and a
health check against the admin API; what it copies exists and its default command is valid."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from agent_flags import DEPLOY, REPO, settings_from

from gossipmesh.agent.admin_auth import AdminAuth
from gossipmesh.agent.log import EventLog
from gossipmesh.ids import Address

CONTAINERFILE = DEPLOY / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def all_of(word: str) -> list[str]:
    return [rest for w, rest in instructions() if w == word]


def test_two_stages_and_the_install_from_this_checkout() -> None:
    stages = all_of("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    build_steps = " ".join(all_of("RUN"))
    assert "python -m venv /opt/gossipmesh" in build_steps
    assert "/opt/gossipmesh/bin/pip install --only-binary=:all: /src" in build_steps
    copied = [c.split() for c in all_of("COPY") if not c.startswith("--from")]
    for parts in copied:
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the checkout"
    assert ["pyproject.toml", "setup.py", "README.md", "./"] in copied and [
        "gossipmesh",
        "./gossipmesh",
    ] in copied
    assert "--from=build /opt/gossipmesh /opt/gossipmesh" in all_of("COPY")


def test_the_compiled_build_is_a_build_argument_checked_at_build_time() -> None:
    """``--build-arg GOSSIPMESH_MYPYC=1`` reaches setup.py's hook (which must be copied: without
    it pip builds pure and says nothing), and the stage fails unless the result is the mypyc build."""
    steps = instructions()
    first, second = [i for i, (w, _) in enumerate(steps) if w == "FROM"]
    build_stage, run_stage = steps[first:second], steps[second:]
    assert ("ARG", "GOSSIPMESH_MYPYC=0") in build_stage  # pure by default, as `pip install .`
    assert ["pyproject.toml", "setup.py", "README.md", "./"] in [
        rest.split() for w, rest in build_stage if w == "COPY"
    ]
    runs = " ".join(rest for w, rest in build_stage if w == "RUN")
    assert 'GOSSIPMESH_MYPYC="$GOSSIPMESH_MYPYC" /opt/gossipmesh/bin/pip install' in runs
    assert (
        "gcc" in runs and 'sys.exit(0 if b["build"] == "mypyc" and not b["stale"] else 1)' in runs
    )
    assert "gcc" not in " ".join(rest for w, rest in run_stage if w == "RUN")


def test_runs_as_a_numeric_non_root_user_with_a_state_volume() -> None:
    (user,) = all_of("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()
    assert "--uid 10001" in " ".join(all_of("RUN")) and uid == "10001"
    assert json.loads(all_of("VOLUME")[0]) == ["/var/lib/gossipmesh"]
    assert {"7946/udp", "7946/tcp", "4140/tcp", "4143/tcp"} <= set(all_of("EXPOSE")[0].split())


def test_healthcheck_asks_the_admin_api_what_needs_no_token() -> None:
    (check,) = all_of("HEALTHCHECK")
    assert "http://127.0.0.1:7947/v1/health" in check
    # The check runs inside the container, against the agent's loopback admin address.
    auth = AdminAuth(Address("127.0.0.1", 7947), None, Counter(), EventLog(level="error"))
    assert not auth.needs_token("GET", "/v1/health")


def test_default_command_is_a_valid_agent(tmp_path: Path) -> None:
    entry = json.loads(all_of("ENTRYPOINT")[0])
    cmd = json.loads(all_of("CMD")[-1])
    assert entry == ["gossipmesh"] and cmd[0] == "agent"
    assert "COPY deploy/agent.toml /etc/gossipmesh/agent.toml" in [
        f"COPY {c}" for c in all_of("COPY")
    ]
    settings = settings_from(cmd[1:], (DEPLOY / "agent.toml").read_text(), tmp_path)
    assert settings.data_dir == Path("/var/lib/gossipmesh")
    assert settings.admin == Address("127.0.0.1", 7947)
    assert settings.tls_dir is not None and settings.encrypt_file is not None
