"""``gossipmesh ca``: files and modes, one-line refusals, and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gossipmesh.cli.app import app

runner = CliRunner()


def ca(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["ca", *map(str, args)])
    return result.exit_code, result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_init_issue_show_verify_through_the_real_entry_point(tmp_path: Path) -> None:
    def gm(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gossipmesh", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    d = tmp_path / "ca"
    assert gm("ca", "init", "--dir", d, "--cluster", "prod").returncode == 0
    assert gm("ca", "issue-node", "web-1", "--dir", d, "--out", tmp_path / "web-1").returncode == 0
    shown = gm("ca", "show", tmp_path / "web-1" / "node.crt", "--json")
    assert shown.returncode == 0
    (row,) = json.loads(shown.stdout)
    assert row["kind"] == "node" and row["spiffe_id"] == "spiffe://prod/node/web-1"
    ok = gm("ca", "verify", tmp_path / "web-1" / "node.crt", "--roots", d / "root.crt")
    assert ok.returncode == 0 and "spiffe://prod/node/web-1" in ok.stdout
    again = gm("ca", "init", "--dir", d, "--cluster", "prod")
    assert again.returncode == 2 and "--force" in one_line(again.stderr)


def test_init_writes_a_private_ca(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    code, out = ca("init", "--dir", d, "--cluster", "prod", "--days", "30")
    assert code == 0, out
    assert mode(d) == 0o700 and mode(d / "root.key") == 0o600
    assert "spiffe://prod" in out
    code, out = ca("show", d / "root.crt", "--json")
    (row,) = json.loads(out)
    assert row["kind"] == "root" and row["ca"] is True and row["path_length"] == 1


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    assert ca("init", "--dir", tmp_path)[0] == 0
    before = (tmp_path / "root.key").read_bytes()
    code, out = ca("init", "--dir", tmp_path)
    assert code == 2 and "already exists" in one_line(out)
    assert (tmp_path / "root.key").read_bytes() == before
    assert ca("init", "--dir", tmp_path, "--force")[0] == 0
    assert (tmp_path / "root.key").read_bytes() != before


def test_default_cluster_is_default(tmp_path: Path) -> None:
    ca("init", "--dir", tmp_path)
    _, out = ca("show", tmp_path / "root.crt", "--json")
    assert json.loads(out)[0]["spiffe_id"] == "spiffe://default"


def test_issue_node_and_operator(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca("init", "--dir", d, "--cluster", "prod")
    code, out = ca("issue-node", "web-1", "--dir", d, "--out", tmp_path / "n", "--days", "7")
    assert code == 0, out
    assert mode(tmp_path / "n") == 0o700 and mode(tmp_path / "n" / "node.key") == 0o600
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == [
        "node.crt",
        "node.key",
        "roots.pem",
    ]
    code, out = ca("issue-operator", "alice", "--dir", d, "--out", tmp_path / "alice.pem")
    assert code == 0, out
    assert mode(tmp_path / "alice.pem") == 0o600
    code, out = ca("show", tmp_path / "alice.pem", "--json")
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["operator", "root"]  # the key is never shown
    assert "PRIVATE" not in out
    assert ca("verify", tmp_path / "alice.pem", "--roots", d / "root.crt")[0] == 0
    code, out = ca("issue-node", "web-1", "--dir", d, "--out", tmp_path / "n")
    assert code == 2 and "already exists" in one_line(out)


def test_also_trust_adds_roots_for_a_rotation(tmp_path: Path) -> None:
    ca("init", "--dir", tmp_path / "old", "--cluster", "prod")
    ca("init", "--dir", tmp_path / "new", "--cluster", "prod")
    code, out = ca(
        "issue-node", "n", "--dir", tmp_path / "new", "--out", tmp_path / "n",
        "--also-trust", tmp_path / "old" / "root.crt",
    )  # fmt: skip
    assert code == 0, out
    _, out = ca("show", tmp_path / "n" / "roots.pem", "--json")
    assert [r["kind"] for r in json.loads(out)] == ["root", "root"]


def test_verify_refuses_with_the_reason(tmp_path: Path) -> None:
    ca("init", "--dir", tmp_path / "a", "--cluster", "prod")
    ca("init", "--dir", tmp_path / "b", "--cluster", "prod")
    ca("init", "--dir", tmp_path / "c", "--cluster", "other")
    ca("issue-node", "n", "--dir", tmp_path / "a", "--out", tmp_path / "n")
    code, out = ca("verify", tmp_path / "n" / "node.crt", "--roots", tmp_path / "b" / "root.crt")
    assert code == 1 and "unknown_root" in one_line(out)
    code, out = ca("verify", tmp_path / "n" / "node.crt", "--roots", tmp_path / "c" / "root.crt")
    assert code == 1 and "wrong_trust_domain" in one_line(out)
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03\x02\x01\x01")
    code, out = ca("verify", junk, "--roots", tmp_path / "a" / "root.crt")
    assert code == 1 and "bad_certificate" in one_line(out)
    code, out = ca("verify", tmp_path / "a" / "root.crt", "--roots", tmp_path / "a" / "root.crt")
    assert code == 0
    code, out = ca("verify", tmp_path / "b" / "root.crt", "--roots", tmp_path / "a" / "root.crt")
    assert code == 1 and "unknown_root" in one_line(out)


def test_expired_certificate_fails_verify(tmp_path: Path) -> None:
    # `ca` always issues from the current time, so an expired pair is made with the library, as
    # of September 2020.
    from gossipmesh.identity import CaCredentials, NodeCredentials, save_ca, save_node

    long_ago = 1_600_000_000_000
    old = CaCredentials.generate("prod", now_ms=long_ago, days=10)
    save_ca(tmp_path / "ca", old)
    save_node(tmp_path / "n", NodeCredentials.issue(old, "n", now_ms=long_ago, days=5))
    code, out = ca("verify", tmp_path / "n" / "node.crt", "--roots", tmp_path / "ca" / "root.crt")
    assert code == 1 and "expired" in one_line(out)


def test_usage_errors_exit_2_in_one_line(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca("init", "--dir", d)
    cases = [
        ("init", "--dir", tmp_path / "x", "--cluster", "Not Valid"),
        ("init", "--dir", tmp_path / "x", "--days", "0"),
        ("issue-node", "a/b", "--dir", d, "--out", tmp_path / "n"),
        ("issue-node", "n", "--dir", tmp_path / "missing", "--out", tmp_path / "n"),
        ("issue-operator", "o", "--dir", d, "--out", tmp_path / "o.pem", "--days", "-1"),
        ("show", tmp_path / "nothing.pem"),
        ("verify", d / "root.crt", "--roots", tmp_path / "nothing.pem"),
    ]
    for args in cases:
        code, out = ca(*args)
        assert code == 2, (args, out)
        one_line(out)
    assert ca("issue-node", "--dir", d)[0] == 2  # no NAME: typer's own usage error


def test_unsafe_root_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    ca("init", "--dir", tmp_path)
    os.chmod(tmp_path / "root.key", 0o644)
    code, out = ca("issue-node", "n", "--dir", tmp_path, "--out", tmp_path / "n")
    assert code == 2
    assert f"chmod 600 {tmp_path / 'root.key'}" in one_line(out)
    assert not (tmp_path / "n").exists()


def test_show_a_file_that_is_not_a_mesh_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03\x02\x01\x01")
    code, out = ca("show", junk)
    assert code == 1 and "not a mesh certificate" in one_line(out)
