"""The README's three-host walk-through, run as written on 127.0.0.1-3.

The commands come out of README.md itself (its fenced blocks, in order), with the substitutions a
single machine needs: 10.0.0.N becomes 127.0.0.N, /etc/gossipmesh and /var/lib/gossipmesh become
a directory per "host", and since the three hosts share one loopback each agent gets its own
admin and outbound address (a keeps the defaults) and the local timing profile. Credentials come
from a real CA (``gossipmesh ca init``), so the agents are not playgrounds and every config write
is signed with the operator key the walk-through issues.

Beyond the walk-through, the same mesh checks what operators rely on: the docs/CONFIG.md apply
example applies as it stands, ``config get --exact`` and a missing key (exit 1), ``services``
showing ``routable`` and a dead node's instance as ``critical``, and the instances metric.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from agent_procs import SETTLE_S, requires_loopback_aliases, wait_until

from gossipmesh.client import AdminClient

pytestmark = requires_loopback_aliases

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "CONFIG.md"
HOSTS = {"a": 1, "b": 2, "c": 3}
# Default ports the walk-through uses on 127.0.0.1-3 (free in the suite's own network namespace).
PORTS = (7946, 7947, 4140, 4143, 8080)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def walkthrough_blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## A mesh of three hosts") :]
    return fenced_blocks(section[: section.index("\n## ", 1)])


def ports_free() -> bool:
    for n in HOSTS.values():
        for port in PORTS:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    # As the agents and apps bind: an earlier run's TIME_WAIT does not count.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind((f"127.0.0.{n}", port))
                    except OSError:
                        return False
    return True


@dataclass
class Walk:
    tmp: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agent_lines: dict[str, str] = field(default_factory=dict)

    def start_agent(self, name: str) -> None:
        root = self.host(name)
        self.agents[name] = self.spawn(self.agent_lines[name], root, root / "agent.log")
        wait_until(f"{name}'s admin API", lambda: _ready(self, name), SETTLE_S)

    @property
    def admin_dir(self) -> Path:
        return self.tmp / "admin"

    def host(self, name: str) -> Path:
        return self.tmp / name

    def on_host(self, name: str, line: str) -> str:
        """``line`` as it runs on host ``name`` here (addresses and paths substituted)."""
        n = HOSTS[name]
        line = line.replace("127.0.0.1:4140", f"127.0.0.{n}:4140")
        line = line.replace("10.0.0.", "127.0.0.")
        return line.replace("/etc/gossipmesh/", f"{self.host(name)}/etc/")

    def sh(self, line: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        if check:
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        return done

    def spawn(self, line: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=self.env,
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL)  # fmt: skip
        self.procs.append(proc)
        return proc

    def client(self, name: str) -> AdminClient:
        n = HOSTS[name]
        return AdminClient(f"127.0.0.{n}:7947", timeout_s=10,
                           agent_data_dir=self.host(name) / "data")  # fmt: skip


def agent_toml(readme_toml: str, name: str, walk: Walk) -> str:
    """Host ``name``'s agent file, made from host a's as the README's prose says."""
    n = HOSTS[name]
    text = readme_toml
    if name != "a":
        text = text.replace('name = "a"', f'name = "{name}"').replace("10.0.0.1", f"10.0.0.{n}")
        text = text.replace('tags = ["v1"]', f'tags = ["v{n}"]')
        bind = f'bind = "10.0.0.{n}:7946"\n'
        text = text.replace(bind, bind + 'join = ["10.0.0.1:7946"]\n')
    if name == "c":
        text = text[: text.index("[[service]]")]
    # One machine: each host's own admin and outbound address, and seconds-fast failure detection.
    bind = f'bind = "10.0.0.{n}:7946"\n'
    extra = f'admin = "127.0.0.{n}:7947"\noutbound = "127.0.0.{n}:4140"\nprofile = "local"\n'
    text = text.replace(bind, bind + extra)
    text = text.replace("/var/lib/gossipmesh", str(walk.host(name) / "data"))
    return walk.on_host(name, text)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    if not ports_free():
        pytest.skip("the walk-through's default ports on 127.0.0.1-3 are taken (run in unshare -n)")
    tmp = tmp_path_factory.mktemp("walk")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOSSIPMESH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "no_proxy"):
        env.pop(var, None)
    w = Walk(tmp, env)
    try:
        yield w
    finally:
        for proc in w.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mesh(walk: Walk) -> Walk:
    """Steps 1 and 2: credentials, then the apps and the agents on a, b and c."""
    blocks = walkthrough_blocks()
    (creds_kind, creds), (toml_kind, toml), (start_kind, start) = blocks[0], blocks[1], blocks[2]
    assert (creds_kind, toml_kind, start_kind) == ("sh", "toml", "sh")
    walk.admin_dir.mkdir()
    for line in creds.strip().splitlines():
        walk.sh(line, walk.admin_dir)
    start_lines = [line.split("  #")[0].strip() for line in start.strip().splitlines()]
    assert start_lines[1].endswith(" &") and start_lines[2].startswith("gossipmesh agent ")
    for name, n in HOSTS.items():
        root = walk.host(name)
        etc = root / "etc"
        etc.mkdir(parents=True)
        shutil.copytree(walk.admin_dir / f"node-{name}", etc / "node")
        shutil.copy2(walk.admin_dir / "gossip.key", etc / "gossip.key")
        (etc / "agent.toml").write_text(agent_toml(toml, name, walk))
        if name != "c":  # the app, as on a; on b with its own address and v2 (the comments)
            app, server = (line.replace("v1", f"v{n}").replace("10.0.0.1", f"10.0.0.{n}")
                           for line in start_lines[:2])  # fmt: skip
            walk.sh(walk.on_host(name, app), root)
            server = walk.on_host(name, server.removesuffix(" &"))
            walk.spawn(server, root, root / "app.log")
        walk.agent_lines[name] = walk.on_host(name, start_lines[2])
        walk.start_agent(name)
    return walk


@pytest.fixture
def steady(mesh: Walk) -> Walk:
    """The mesh with all three agents running and alive to each other (b restarted if needed)."""
    if mesh.agents["b"].poll() is not None:
        mesh.start_agent("b")
    for name in HOSTS:
        wait_until(f"{name} sees all three alive", partial(_all_alive, mesh, name), SETTLE_S)
    return mesh


def _all_alive(walk: Walk, name: str) -> bool:
    return {m["name"]: m["state"] for m in walk.client(name).members()} == dict.fromkeys(
        HOSTS, "alive"
    )


def _ready(walk: Walk, name: str) -> bool:
    proc = walk.agents[name]
    if proc.poll() is not None:
        log = (walk.host(name) / "agent.log").read_text(errors="replace")
        raise AssertionError(f"{name} exited {proc.returncode}:\n{log[-3000:]}")
    return walk.client(name).request("GET", "/v1/self")[0] == 200


def _says_hello(walk: Walk, line: str) -> bool:
    answer = walk.sh(walk.on_host("c", line), walk.host("c"), check=False).stdout.strip()
    return answer in ("hello from v1", "hello from v2")


def _hello_counts(walk: Walk, loop: str) -> Counter[str]:
    out = walk.sh(walk.on_host("c", loop), walk.host("c")).stdout
    counts: Counter[str] = Counter()
    for line in out.strip().splitlines():
        n, _, what = line.strip().partition(" ")
        counts[what] = int(n)
    return counts


def test_the_walkthrough_as_written(steady: Walk) -> None:
    walk = steady
    blocks = walkthrough_blocks()
    assert not walk.client("a").self_info()["playground"]  # real certificates from `ca init`
    # 3. Call the service through c's sidecar, with Host and with http_proxy.
    for line in blocks[3][1].strip().splitlines():
        wait_until(f"c answers {line!r}", partial(_says_hello, walk, line), SETTLE_S)
    # 4. A route with a split and a policy, signed with alice's key, through a (default --agent).
    assert blocks[4][0] == "toml"
    (walk.admin_dir / "canary.toml").write_text(blocks[4][1])
    apply, get = blocks[5][1].strip().splitlines()
    assert "applied 2 entities" in walk.sh(apply, walk.admin_dir).stdout
    shown = walk.sh(get, walk.admin_dir).stdout
    assert "route/hello" in shown and "policy/" not in shown
    loop = blocks[6][1].strip()
    wait_until("c splits about 90/10", lambda: _hello_counts(walk, loop)["hello from v1"] >= 75,
               SETTLE_S)  # fmt: skip
    counts = _hello_counts(walk, loop) + _hello_counts(walk, loop)
    assert counts["hello from v1"] >= 150 and counts["hello from v2"] >= 3, counts
    assert sum(counts.values()) == 200
    # 5. Look at it: every command succeeds.
    for line in blocks[7][1].strip().splitlines():
        walk.sh(line, walk.admin_dir)


def test_config_doc_apply_example_applies(steady: Walk) -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    section = text[text.index("An apply file may use any of") :]
    kind, example = fenced_blocks(section)[0]
    assert kind == "toml"
    (steady.admin_dir / "example.toml").write_text(example)
    done = steady.sh("gossipmesh config apply -f example.toml --operator-key alice.op",
                   steady.admin_dir)  # fmt: skip
    assert "applied 2 entities, 1 deletions" in done.stdout
    data = json.loads(steady.sh("gossipmesh config get --json", steady.admin_dir).stdout)
    assert {"route/web", "policy/ops"} <= set(data["entities"])
    remove(steady, ["route/web", "policy/ops"])  # its route/web would catch every Host here


def remove(walk: Walk, keys: list[str]) -> None:
    (walk.admin_dir / "remove.json").write_text(json.dumps(dict.fromkeys(keys)))
    walk.sh("gossipmesh config apply -f remove.json --operator-key alice.op", walk.admin_dir)


def test_get_exact_and_missing_keys(steady: Walk) -> None:
    key = "--operator-key alice.op"
    (steady.admin_dir / "two.json").write_text(json.dumps({
        "route/hi": {"destinations": [{"service": "hello"}]},
        "route/hi2": {"destinations": [{"service": "hello"}]},
    }))  # fmt: skip
    steady.sh(f"gossipmesh config apply -f two.json {key}", steady.admin_dir)
    prefix = json.loads(steady.sh("gossipmesh config get route/hi --json", steady.admin_dir).stdout)
    assert {"route/hi", "route/hi2"} <= set(prefix["entities"])
    exact = json.loads(
        steady.sh("gossipmesh config get route/hi --exact --json", steady.admin_dir).stdout
    )
    assert set(exact["entities"]) == {"route/hi"}
    missing = steady.sh("gossipmesh config get route/h --exact", steady.admin_dir, check=False)
    assert missing.returncode == 1 and "route/h: not set" in missing.stderr
    gone = steady.sh(f"gossipmesh config delete route/nope {key}", steady.admin_dir, check=False)
    assert gone.returncode == 1 and "route/nope: not set" in gone.stderr
    usage = steady.sh("gossipmesh config get route --exact", steady.admin_dir, check=False)
    assert usage.returncode == 2
    remove(steady, ["route/hi", "route/hi2"])


def _dead_row(row: dict[str, object]) -> dict[str, object] | None:
    return row if row["member_state"] == "dead" else None


def test_services_routable_and_a_dead_nodes_instance(steady: Walk) -> None:
    walk = steady

    def rows() -> dict[str, dict[str, object]]:
        data = json.loads(walk.sh("gossipmesh services --json", walk.admin_dir).stdout)
        return {str(r["node"]): r for r in data if r["service"] == "hello"}

    wait_until("both hello instances routable",
               lambda: all(r["routable"] and r["health"] == "passing" for r in rows().values())
               and len(rows()) == 2, SETTLE_S)  # fmt: skip
    table = walk.sh("gossipmesh services", walk.admin_dir).stdout
    assert "Routable" in table and "passing" in table
    metrics = walk.sh("curl -s http://127.0.0.1:7947/metrics", walk.admin_dir).stdout
    assert 'gossipmesh_agent_instances{health="passing",service="hello"} 2.0' in metrics
    b = walk.agents["b"]
    b.send_signal(signal.SIGKILL)
    b.wait(timeout=10)
    row, _ = wait_until("a sees b dead", lambda: _dead_row(rows()["b"]), SETTLE_S)
    assert (row["health"], row["reported_health"], row["routable"]) == (
        "critical",
        "passing",
        False,
    )
    table = walk.sh("gossipmesh services", walk.admin_dir).stdout
    b_line = next(line for line in table.splitlines() if " b " in f" {line} ")
    assert "critical" in b_line and "passing" not in b_line
