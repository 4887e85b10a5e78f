"""A join that cannot work says why, at both ends: an agent of another cluster (or with another
gossip key) gets ``join_retry`` lines naming the likely mistake, and the member it tries logs
``decrypt_failed`` naming its address."""

from __future__ import annotations

import json
from pathlib import Path

from agent_procs import SETTLE_S, Procs, free_port_on, requires_loopback_aliases, wait_until


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("event") == event:
            out.append(item)
    return out


@requires_loopback_aliases
def test_another_cluster_name_is_named_at_both_ends(procs: Procs) -> None:
    port = free_port_on(["127.0.0.1", "127.0.0.2"])
    a = procs.new("a", "127.0.0.1", port, []).start()
    stranger = procs.new("x", "127.0.0.2", port, ["--cluster", "other", "--join", a.gossip])
    stranger.start()
    try:
        retries, _ = wait_until(
            "x's join_retry", lambda: log_events(stranger.log_path, "join_retry"), SETTLE_S
        )
        reasons = retries[0]["reasons"]
        assert isinstance(reasons, dict)
        assert "another gossip key or cluster name" in str(reasons[a.gossip]), reasons
        failed, _ = wait_until(
            "a's decrypt_failed", lambda: log_events(a.log_path, "decrypt_failed"), SETTLE_S
        )
        # Its streams come from 127.0.0.1 here: an unbound client socket on lo takes that source.
        assert any(str(f["address"]).endswith("(tcp)") for f in failed), failed
        assert "cluster name" in str(failed[0]["detail"])
        assert a.members() == {"a": "alive"}
    finally:
        stranger.stop()
