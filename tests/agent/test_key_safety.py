"""Key handling with real agent processes and the CLI: where a key may come from, a keyring that
outlives a stale key option, the rotation trap (`keys use` with a key some members lack), and
the health status that says when the mesh is not whole."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_procs import (
    SETTLE_S,
    AgentProc,
    Procs,
    free_port_on,
    requires_loopback_aliases,
    wait_until,
)

from gossipmesh.agent.key_sources import build_keyring
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.settings import load_settings
from gossipmesh.crypto import decode_key, generate_key, key_id
from gossipmesh.errors import UsageError

pytestmark = requires_loopback_aliases


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args], capture_output=True, text=True, timeout=60
    )


def kid(key: str) -> str:
    return key_id(decode_key(key))


def key_file(path: Path, key: str, mode: int = 0o600) -> Path:
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def events(agent: AgentProc, name: str) -> list[dict[str, object]]:
    out = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"event":"{name}"' in line:
            out.append(json.loads(line))
    return out


def refused(agent: AgentProc) -> list[int]:
    """One entry per stream refused for its key (a list, so wait_until can print it)."""
    n = int(agent.client.health()["dropped"].get("stream_decrypt", 0))
    return list(range(n))


def keys_held(agent: AgentProc) -> dict[str, int]:
    proc = cli("keys", "list", "--json", "--agent", agent.admin)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout)["keys"])


# ---- where a key comes from (in-process: build_keyring is the agent's composition step) -------


def ring_of(
    tmp_path: Path, flags: dict[str, object], config: Path | None = None
) -> tuple[list[bytes], list[dict[str, object]]]:
    out = io.StringIO()
    settings = load_settings({"data_dir": str(tmp_path / "d"), **flags}, config)
    ring, _, has_key = build_keyring(settings, EventLog(stream=out))
    assert has_key
    return ring.keys(), [json.loads(line) for line in out.getvalue().splitlines()]


def test_key_sources_and_their_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = generate_key(), generate_key()
    # On a command line: works, one warning (visible in /proc/PID/cmdline).
    keys, logged = ring_of(tmp_path / "a", {"encrypt": k1})
    assert keys == [decode_key(k1)]
    assert [e["event"] for e in logged] == ["key_on_command_line"]
    # From a private file: no warning; from a file others can read: one.
    keys, logged = ring_of(tmp_path / "b", {"encrypt_file": str(key_file(tmp_path / "k", k1))})
    assert keys == [decode_key(k1)] and logged == []
    shared = key_file(tmp_path / "shared", k1, 0o644)
    keys, logged = ring_of(tmp_path / "c", {"encrypt_file": str(shared)})
    assert [e["event"] for e in logged] == ["key_file_readable"]
    # From the environment: no warning.
    monkeypatch.setenv("GOSSIPMESH_ENCRYPT", k2)
    keys, logged = ring_of(tmp_path / "d", {})
    assert keys == [decode_key(k2)] and logged == []
    monkeypatch.setenv("GOSSIPMESH_ENCRYPT", "short")
    with pytest.raises(UsageError, match="GOSSIPMESH_ENCRYPT"):
        ring_of(tmp_path / "e", {})
    monkeypatch.delenv("GOSSIPMESH_ENCRYPT")
    # In a TOML file: no command-line warning, but the file must not be world-readable.
    toml = tmp_path / "agent.toml"
    toml.write_text(f'encrypt = "{k1}"\n')
    toml.chmod(0o644)
    keys, logged = ring_of(tmp_path / "f", {}, toml)
    assert keys == [decode_key(k1)] and [e["event"] for e in logged] == ["key_file_readable"]
    toml.chmod(0o600)
    assert ring_of(tmp_path / "g", {}, toml)[1] == []
    # A flag replaces the file's key, whichever form; both forms at once are refused.
    keys, _ = ring_of(tmp_path / "h", {"encrypt_file": str(tmp_path / "k")}, toml)
    assert keys == [decode_key(k1)]
    with pytest.raises(UsageError, match="not both"):
        ring_of(tmp_path / "i", {"encrypt": k2, "encrypt_file": str(tmp_path / "k")})


def test_the_keyring_on_disk_wins_over_a_given_key_with_one_warning(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    ring_of(tmp_path, {"encrypt_file": str(key_file(tmp_path / "old", old))})
    ring = tmp_path / "d" / "keyring.json"
    ring.write_text(json.dumps([new]))  # what a finished rotation leaves
    keys, logged = ring_of(tmp_path, {"encrypt_file": str(tmp_path / "old")})
    assert keys == [decode_key(new)]  # the retired key is not installed again
    assert [e["event"] for e in logged] == ["keyring_wins"]
    assert json.loads(ring.read_text()) == [new]
    keys, logged = ring_of(tmp_path, {"encrypt_file": str(key_file(tmp_path / "new", new))})
    assert keys == [decode_key(new)] and logged == []  # the same key: nothing to say


# ---- real processes ------------------------------------------------------------------------------


def test_a_retired_key_in_the_toml_is_not_reinstalled_on_restart(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    toml = tmp_path / "agent.toml"
    toml.write_text(f'encrypt = "{old}"\ncluster = "k"\n')
    toml.chmod(0o600)
    procs = Procs(tmp_path)
    agent = procs.new("a", "127.0.0.2", free_port_on(["127.0.0.2"]), ["--config", str(toml)])
    try:
        agent.start()
        assert events(agent, "key_on_command_line") == []  # a TOML key is not on the command line
        for step in (["install", new], ["use", new], ["remove", old]):
            proc = cli("keys", *step, "--agent", agent.admin)
            assert proc.returncode == 0, proc.stderr
        assert keys_held(agent) == {kid(new): 1}
        agent.signal(signal.SIGTERM)
        assert agent.wait_exit(SETTLE_S) == 0
        agent.start()  # the TOML still says encrypt = OLD
        assert keys_held(agent) == {kid(new): 1}
        assert len(events(agent, "keyring_wins")) == 1
    finally:
        procs.close()


IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def test_keys_use_with_a_key_some_members_lack_is_refused_and_the_mesh_stays_whole(
    tmp_path: Path,
) -> None:
    old, new = generate_key(), generate_key()
    old_file = key_file(tmp_path / "old.key", old)
    port = free_port_on(IPS)
    seed = f"{IPS[0]}:{port}"
    procs = Procs(tmp_path)
    common = ["--encrypt-file", str(old_file), "--cluster", "k"]
    a1 = procs.new("a1", IPS[0], port, common)
    a2 = procs.new("a2", IPS[1], port, [*common, "--join", seed])
    a3 = procs.new("a3", IPS[2], port, [*common, "--join", seed])
    intruder = procs.new("x", IPS[3], port, ["--encrypt-file", str(key_file(tmp_path / "x.key",
                         generate_key())), "--cluster", "k", "--join", seed])  # fmt: skip

    def everyone_alive(agents: list[AgentProc]) -> bool:
        names = {a.name for a in agents}
        return all({n for n, s in a.members().items() if s == "alive"} == names for a in agents)

    try:
        a1.start()
        a2.start()
        wait_until("a1 and a2 alive", lambda: everyone_alive([a1, a2]), SETTLE_S)
        proc = cli("keys", "install", new, "--agent", a1.admin)
        assert proc.returncode == 0, proc.stderr
        a3.start()  # joins later, with the old key only
        wait_until("all three alive", lambda: everyone_alive([a1, a2, a3]), SETTLE_S)
        assert a1.client.health()["status"] == "ok"

        # The trap: switching now would cut a3 off. Refused, naming a3; nothing switched.
        proc = cli("keys", "use", new, "--agent", a1.admin)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "a3" in line and "a1" not in line and "a2" not in line and "install" in line
        listed = json.loads(cli("keys", "list", "--json", "--agent", a1.admin).stdout)
        assert {n: node["primary"] for n, node in listed["nodes"].items()} == dict.fromkeys(
            ["a1", "a2", "a3"], kid(old)
        )
        assert a1.client.health()["counters"]["admin.key_use_refused"] == 1
        for _ in range(10):  # several probe rounds of the local profile: still whole
            assert everyone_alive([a1, a2, a3])
            time.sleep(0.3)
        # Installed everywhere, the same step goes through and the mesh stays whole.
        assert cli("keys", "install", new, "--agent", a1.admin).returncode == 0
        proc = cli("keys", "use", new, "--json", "--agent", a1.admin)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["num_ok"] == 3
        wait_until("all alive after the switch", lambda: everyone_alive([a1, a2, a3]), SETTLE_S)

        # Someone sealing with a key we lack: a1 is degraded, says from where, logs it once.
        intruder.start()
        wait_until(
            "a1 degraded by the intruder's packets",
            lambda: a1.client.health()["status"] == "degraded",
            SETTLE_S,
        )
        # It only ever reached a1 by TCP (its join attempts), so it is named by the connection's
        # source host (127.0.0.1 here: outgoing connections on one host all come from it).
        (reason,) = a1.client.health()["reasons"]
        assert "failed to decrypt" in reason and " (tcp)" in reason
        wait_until("a few of its joins refused", lambda: len(refused(a1)) >= 3, SETTLE_S)
        failed = [str(e["address"]) for e in events(a1, "decrypt_failed")]
        assert failed and all(a.endswith(" (tcp)") for a in failed)
        assert len(failed) == len(set(failed))  # once per address per minute, however often
        proc = cli("status", "--agent", a1.admin)
        assert proc.returncode == 0 and "degraded: " in proc.stdout and failed[0] in proc.stdout
        intruder.stop()

        # A member that dies makes the survivors degraded, naming it.
        a3.stop()  # SIGKILL
        wait_until("a3 dead at a1", lambda: a1.members().get("a3") == "dead", SETTLE_S)
        reasons = a1.client.health()["reasons"]
        assert "1 member dead: a3" in reasons
    finally:
        procs.close()
