"""The admin API against other local users, port squatters and the network, with real agent
processes and the CLI through its entry point: the token, the files' modes, TLS off loopback."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import AgentProc, Procs, free_port_on

from gossipmesh.client import AdminClient, AdminError, AgentUnreachable
from gossipmesh.crypto import generate_key
from gossipmesh.identity import (
    CaCredentials,
    NodeCredentials,
    OperatorCredentials,
    save_node,
    save_operator,
)
from gossipmesh.identity.files import certificate_pem

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs requests as uid nobody (root)")

NOBODY = pwd.getpwnam("nobody")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossipmesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python that drops to uid/gid nobody after its imports."""
    prologue = textwrap.dedent(f"""
        import encodings.idna, http.client, json, os, sys
        from gossipmesh.client import AdminClient, AdminError
        os.setgroups([]); os.setgid({NOBODY.pw_gid}); os.setuid({NOBODY.pw_uid})
    """)
    return subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    """A directory every user may traverse: only the data dir's own modes protect the token."""
    root = Path(tempfile.mkdtemp(prefix="gm-sec-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(shared_root: Path) -> Iterator[AgentProc]:
    procs = Procs(shared_root)
    port = free_port_on(["127.0.0.2"])
    proc = procs.new("a", "127.0.0.2", port, ["--cluster", "t"])
    try:
        yield proc.start()
    finally:
        procs.close()


def unauthorized(agent: AgentProc) -> int:
    return int(agent.client.health()["counters"].get("admin.unauthorized", 0))


def test_another_local_user_gets_401_and_cannot_read_the_token(agent: AgentProc) -> None:
    token_file = agent.data_dir / "admin.token"
    host, port = agent.admin.split(":")
    before = unauthorized(agent)
    proc = as_nobody(
        """
        path, host, port = sys.argv[1:]
        out = {}
        try:
            open(path).read()
            out["read"] = "ok"
        except PermissionError:
            out["read"] = "denied"
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/v1/keys")
        resp = conn.getresponse()
        out["status"], out["body"] = resp.status, resp.read().decode()
        try:  # the client library, finding the token file through /v1/self
            AdminClient(f"{host}:{port}", discover_token=True).keys()
        except AdminError as exc:
            out["client"], out["detail"] = exc.status, exc.detail
        print(json.dumps(out))
        """,
        str(token_file),
        host,
        port,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["read"] == "denied"
    assert out["status"] == 401 and out["body"].count("\n") == 1
    assert json.loads(out["body"])["error"] == "unauthorized"
    assert out["client"] == 401 and "Permission denied" in out["detail"]
    assert unauthorized(agent) == before + 2
    # The token and everything else the agent wrote: 0600 in a 0700 data dir.
    assert stat.S_IMODE(agent.data_dir.stat().st_mode) == 0o700
    written = sorted(p.name for p in agent.data_dir.iterdir())
    assert {"admin.token", "replica.db", "incarnation"} <= set(written)
    for path in agent.data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    # Rejections are visible in /metrics too.
    metrics = subprocess.run(
        [sys.executable, "-c", "import http.client,sys; c=http.client.HTTPConnection(sys.argv[1],"
         " int(sys.argv[2])); c.request('GET','/metrics'); print(c.getresponse().read().decode())",
         host, port], capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    line = next(x for x in metrics.splitlines() if 'name="admin.unauthorized"' in x)
    assert float(line.split()[-1]) == before + 2


def test_the_cli_finds_the_token_itself_or_takes_it(agent: AgentProc) -> None:
    proc = cli("keys", "list", "--json", "--agent", agent.admin)  # reads DATA_DIR/admin.token
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_ok"] == 1
    token = (agent.data_dir / "admin.token").read_text().strip()
    proc = cli("keys", "list", "--agent", agent.admin, env={"GOSSIPMESH_TOKEN": token})
    assert proc.returncode == 0, proc.stderr
    proc = cli("--data-dir", str(agent.data_dir), "keys", "list", "--agent", agent.admin)
    assert proc.returncode == 0, proc.stderr
    before = unauthorized(agent)
    proc = cli("keys", "list", "--agent", agent.admin, env={"GOSSIPMESH_TOKEN": "x" * 43})
    assert proc.returncode == 1 and "unauthorized" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = cli("--token-file", str(agent.data_dir / "missing"), "leave", "--agent", agent.admin)
    assert proc.returncode == 2 and "missing" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert unauthorized(agent) == before + 1
    status = json.loads(cli("status", "--json", "--agent", agent.admin).stdout)
    assert status["counters"]["admin.unauthorized"] == before + 1


def test_the_cli_never_hands_the_token_to_a_port_squatter(
    agent: AgentProc, shared_root: Path
) -> None:
    """Another user listens where an agent would and names the real agent's token file."""
    port = free_port_on(["127.0.0.3"])
    seen = shared_root / "squatter-seen"
    squatter = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import encodings.idna, json, os, sys  # nobody cannot import from root's Python later
            from http.server import BaseHTTPRequestHandler, HTTPServer
            os.setgroups([]); os.setgid({NOBODY.pw_gid}); os.setuid({NOBODY.pw_uid})
            server = HTTPServer(("127.0.0.3", {port}), BaseHTTPRequestHandler)
            class Handler(BaseHTTPRequestHandler):
                def _answer(self):
                    with open({str(seen)!r}, "a") as f:
                        f.write(json.dumps([self.command, self.path,
                                            self.headers.get("authorization")]) + "\\n")
                    body = json.dumps({{"admin_token_file": {str(agent.data_dir / "admin.token")!r},
                                       "error": "x"}}).encode()
                    self.send_response(200 if self.path == "/v1/self" else 401)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                do_GET = do_POST = _answer
                def log_message(self, *args): pass
            server.RequestHandlerClass = Handler
            print("ready", flush=True)
            server.serve_forever()
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        os.close(os.open(seen, os.O_CREAT | os.O_WRONLY, 0o666))
        os.chmod(seen, 0o666)
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready"
        proc = cli("leave", "--agent", f"127.0.0.3:{port}")
        assert proc.returncode == 1
        assert "uid" in proc.stderr  # why the client would not use the token file it was shown
        requests = [json.loads(line) for line in seen.read_text().splitlines()]
        assert [r[:2] for r in requests] == [["GET", "/v1/self"], ["POST", "/v1/leave"]]
        assert all(r[2] is None for r in requests)  # no token ever reached it
    finally:
        squatter.kill()
        squatter.wait(timeout=10)
    assert agent.running


# ---- TLS off loopback --------------------------------------------------------------------------


class TLSAgent(AgentProc):
    """An agent whose admin API listens on 0.0.0.0 (not loopback: TLS), reached as 0.0.0.0."""

    tls: AdminClient | None = None

    @property
    def admin(self) -> str:
        return f"0.0.0.0:{self.port + 1}"

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
        if not (self.data_dir / "admin.token").exists() or self.tls is None:
            return False
        return self.tls.request("GET", "/v1/self")[0] == 200


def test_a_non_loopback_admin_api_is_tls_with_the_node_certificate(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    ca = CaCredentials.generate("t", now_ms=now_ms)
    save_node(tmp_path / "node", NodeCredentials.issue(ca, "a", now_ms=now_ms))
    roots = tmp_path / "roots.pem"
    roots.write_bytes(certificate_pem(ca.cert_der))
    operator = tmp_path / "alice.pem"
    save_operator(operator, OperatorCredentials.issue(ca, "alice", now_ms=now_ms))
    other = tmp_path / "other-roots.pem"
    other.write_bytes(certificate_pem(CaCredentials.generate("t", now_ms=now_ms).cert_der))
    key_file = tmp_path / "gossip.key"
    key_file.write_text(generate_key() + "\n")
    key_file.chmod(0o600)
    # Without a node certificate a non-loopback admin address is refused, in one line.
    proc = cli("agent", "--name", "a", "--bind", "127.0.0.2:0", "--admin", "0.0.0.0:0",
               "--encrypt-file", str(key_file), "--no-proxy")  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "0.0.0.0" in line and "node certificate" in line
    procs = Procs(tmp_path)
    port = free_port_on(["127.0.0.2"])
    agent = TLSAgent("a", "127.0.0.2", port, tmp_path, ["--cluster", "t"])
    procs.agents.append(agent)
    token_file = agent.data_dir / "admin.token"
    extra = ["--tls-dir", str(tmp_path / "node"), "--encrypt-file", str(key_file)]
    try:
        agent.tls = AdminClient(agent.admin, timeout_s=10, ca_file=roots, token_file=token_file)
        agent.start(extra)
        me = agent.tls.self_info()
        assert me["admin_tls"] is True and me["name"] == "a"
        # The CLI: the roots from --ca-file, or from an operator file; the token from a file.
        for ca_args in (["--ca-file", str(roots)], ["--ca-file", str(operator)]):
            proc = cli(*ca_args, "--token-file", str(token_file), "keys", "list", "--json",
                       "--agent", agent.admin)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        proc = cli("members", "--agent", agent.admin, env={"GOSSIPMESH_OPERATOR_KEY": str(operator),
                   "GOSSIPMESH_TOKEN": token_file.read_text().strip()})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # Without roots there is no client; with another cluster's roots no connection.
        proc = cli("members", "--agent", agent.admin)
        assert proc.returncode == 2 and "--ca-file" in proc.stderr
        with pytest.raises(AgentUnreachable, match="TLS"):
            AdminClient(agent.admin, ca_file=other, token_file=token_file).members()
        proc = cli("--ca-file", str(other), "--token-file", str(token_file), "members",
                   "--agent", agent.admin)  # fmt: skip
        assert proc.returncode == 1 and "TLS" in proc.stderr
        # Off loopback every request needs the token, reads included.
        with pytest.raises(AdminError) as info:
            AdminClient(agent.admin, ca_file=roots).members()
        assert info.value.status == 401
        # Plain HTTP gets no answer at all.
        plain = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{agent.admin}/v1/self"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert plain.stdout == "000"
        counters = agent.tls.health()["counters"]
        assert counters["admin.unauthorized"] >= 1
        assert counters["admin.tls_handshake_failed"] >= 3
    finally:
        procs.close()
