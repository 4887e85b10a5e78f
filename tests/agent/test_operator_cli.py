"""The operator's commands through the CLI entry point against real agents: ``version`` and what
``/v1/self`` and ``/metrics`` say about it, ``doctor`` (healthy, then a dead member), ``members``
with services and proxy addresses, ``monitor`` exiting 1 when its agent dies, ``join`` naming why,
the gossip-port hint, and SIGHUP reloading the keyring file and the node certificate."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_procs import SETTLE_S, AgentProc, Procs, free_port_on, wait_until

from gossipmesh.buildinfo import current_build, describe
from gossipmesh.crypto import Keyring, decode_key, generate_key, key_id, save_keyring_file
from gossipmesh.version import package_version


def cli(
    *args: str, data_dir: Path | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    root = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run([sys.executable, "-m", "gossipmesh", *root, *args],
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


@pytest.fixture(scope="module")
def agents(procs: Procs, tmp_path_factory: pytest.TempPathFactory) -> tuple[AgentProc, AgentProc]:
    """a (with the proxy and one service) and b, which joins a."""
    port = free_port_on(["127.0.0.1", "127.0.0.2"])
    conf = tmp_path_factory.mktemp("conf") / "a.toml"
    conf.write_text('[[service]]\nname = "api"\nport = 9\ntags = ["v1", "blue"]\n')
    a = procs.new("a", "127.0.0.1", port, ["--config", str(conf)], proxy=True)
    proxy_port = free_port_on(["127.0.0.1"])
    a.start(["--outbound", f"127.0.0.1:{proxy_port}", "--inbound", f"127.0.0.1:{proxy_port + 1}"])
    b = procs.new("b", "127.0.0.2", port, ["--join", a.gossip])
    return a, b


@pytest.fixture
def pair(agents: tuple[AgentProc, AgentProc]) -> tuple[AgentProc, AgentProc]:
    """a and b running and alive to each other (b is restarted if a test killed it)."""
    a, b = agents
    if not b.running:
        b.start()
    wait_until("a and b see each other", lambda: a.members() == {"a": "alive", "b": "alive"},
               SETTLE_S)  # fmt: skip
    return a, b


def test_version_everywhere(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair
    assert cli("version").stdout.startswith(f"gossipmesh {package_version()} ")
    assert cli("--version").stdout.strip() == f"gossipmesh {package_version()}"
    me = a.client.self_info()
    assert me["version"] == package_version()
    assert me["node_cert"]["playground"] is True and me["node_cert"]["spiffe_id"].endswith("/a")
    assert me["listeners"]["gossip"] == a.gossip and me["limits"]["nofile_soft"] != 0
    assert abs(me["wall_ms"] - time.time() * 1000) < 60_000
    text = _metrics(a)
    build = current_build().kind  # the agents run the build these tests import
    assert me["build"] == build
    assert f'gossipmesh_build_info{{build="{build}",python=' in text
    assert f'version="{package_version()}"' in text
    assert f"{build} build)" in cli("version").stdout
    starts = [
        json.loads(line) for line in a.log_path.read_text().splitlines() if "proxy_start" in line
    ]
    assert starts and all(e["build"] == describe(current_build()) for e in starts)


def _metrics(agent: AgentProc) -> str:
    import http.client

    conn = http.client.HTTPConnection(agent.ip, agent.port + 1, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_members_show_services_tags_and_proxy(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair

    def listed() -> dict[str, dict[str, object]] | None:
        proc = cli("members", "--json", "--agent", a.admin)
        rows = {m["name"]: m for m in json.loads(proc.stdout)}
        return rows if rows.get("a", {}).get("services") == ["api"] else None

    rows, _ = wait_until("a's service in members", listed, SETTLE_S)
    assert rows["a"]["tags"] == ["blue", "v1"] and rows["a"]["proxy"]
    assert rows["b"]["services"] == [] and rows["b"]["proxy"] is None
    table = cli("members", "--agent", a.admin).stdout
    assert "Services" in table and "api" in table and "blue,v1" in table
    assert str(rows["a"]["proxy"]) in table


def test_doctor_on_a_healthy_pair(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair
    proc = cli("doctor", "--json", "--agent", a.admin, data_dir=a.data_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {f["check"]: f for f in json.loads(proc.stdout)}
    assert set(found) == {"agent", "members", "keys", "clocks", "descriptors", "ports",
                          "certificate", "conflicts"}  # fmt: skip
    assert all(f["status"] == "ok" for f in found.values()), found
    assert "1 peer(s)" in found["clocks"]["detail"]  # b's clock, measured over the gossip port
    assert "gossip TCP " + a.gossip in found["ports"]["detail"]


def test_join_names_why_each_address_failed(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair
    closed = free_port_on(["127.0.0.1"])
    proc = cli("join", "nonsense.invalid:7946", f"127.0.0.1:{closed}", "--agent", a.admin,
               data_dir=a.data_dir)  # fmt: skip
    assert proc.returncode == 1
    assert "cannot resolve host 'nonsense.invalid'" in proc.stdout
    assert (
        f"127.0.0.1:{closed}: connection refused: no agent listens on that gossip port"
        in " ".join(proc.stdout.split())
    )


def test_cli_pointed_at_the_gossip_port(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair
    proc = cli("status", "--agent", a.gossip)
    assert proc.returncode == 1
    assert "looks like an agent's gossip port" in proc.stderr and a.gossip in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sighup_reloads_the_keyring_file(pair: tuple[AgentProc, AgentProc]) -> None:
    a, b = pair
    ring_file = b.data_dir / "keyring.json"
    # b is a playground (no key given): it has no keyring file, so a reload changes nothing.
    assert not ring_file.exists()
    before = b.client.keys()["nodes"]["b"]["keys"]
    b.signal(signal.SIGHUP)
    wait_until("b logs the reload", lambda: '"reloaded"' in b.log_tail(), SETTLE_S)
    assert b.running and b.client.keys()["nodes"]["b"]["keys"] == before


def test_doctor_and_monitor_when_a_member_dies(pair: tuple[AgentProc, AgentProc]) -> None:
    a, b = pair
    monitor = subprocess.Popen(
        [sys.executable, "-m", "gossipmesh", "--data-dir", str(b.data_dir), "monitor",
         "--agent", b.admin],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert monitor.stdout is not None
        monitor.stdout.readline()  # the stream is live (monitor-start)
        b.stop()  # SIGKILL: no leave
        _, err = monitor.communicate(timeout=SETTLE_S)
        assert monitor.returncode == 1
        assert "closed the event stream" in err and b.admin in err
    finally:
        if monitor.poll() is None:
            monitor.kill()
    wait_until("a sees b dead", lambda: a.members().get("b") == "dead", SETTLE_S)
    proc = cli("doctor", "--agent", a.admin, data_dir=a.data_dir)
    assert proc.returncode == 1
    assert "FAIL members" in proc.stdout and "dead: b" in proc.stdout and "->" in proc.stdout


def test_sighup_takes_a_new_keyring_and_a_renewed_certificate(procs: Procs, tmp_path: Path) -> None:
    ca, node_dir = tmp_path / "ca", tmp_path / "node"
    assert cli("ca", "init", "--dir", str(ca)).returncode == 0
    assert (
        cli(
            "ca", "issue-node", "k", "--dir", str(ca), "--out", str(node_dir), "--days", "30"
        ).returncode
        == 0
    )
    key = generate_key()
    key_file = tmp_path / "gossip.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    port = free_port_on(["127.0.0.3"])
    k = procs.new(
        "k", "127.0.0.3", port, ["--tls-dir", str(node_dir), "--encrypt-file", str(key_file)]
    )
    k.start()
    first = k.client.self_info()["node_cert"]
    assert first["playground"] is False
    # Renew the certificate for a year, and rotate the ring file to a new primary.
    assert (
        cli("ca", "issue-node", "k", "--dir", str(ca), "--out", str(node_dir), "--force").returncode
        == 0
    )
    new_key = generate_key()
    save_keyring_file(k.data_dir / "keyring.json", Keyring([decode_key(new_key), decode_key(key)]))
    k.signal(signal.SIGHUP)

    def reloaded() -> dict[str, object] | None:
        cert = k.client.self_info()["node_cert"]
        return cert if cert["not_after_ms"] > first["not_after_ms"] else None

    cert, _ = wait_until("the renewed certificate", reloaded, SETTLE_S)
    assert cert["fingerprint"] != first["fingerprint"]
    ring = k.client.keys()["nodes"]["k"]
    assert ring["primary"] == key_id(decode_key(new_key))
    assert ring["keys"] == [key_id(decode_key(new_key)), key_id(decode_key(key))]
    # A broken certificate file is refused and the old one kept.
    (node_dir / "node.crt").write_text("not a certificate\n")
    k.signal(signal.SIGHUP)
    wait_until("reload_failed logged", lambda: "reload_failed" in k.log_tail(), SETTLE_S)
    assert k.client.self_info()["node_cert"]["fingerprint"] == cert["fingerprint"]
    k.stop()


def test_every_metric_docs_deploy_names_exists(pair: tuple[AgentProc, AgentProc]) -> None:
    a, _ = pair
    docs = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text()
    named = set(re.findall(r"\bgossipmesh_[a-z_]+[a-z]", docs))
    exposed = set(re.findall(r"^# TYPE (\S+)", _metrics(a), re.M))
    assert len(named) > 15 and named <= exposed, named - exposed
