"""A replica knows what it lost (agent/ack_ledger.py): real agents, kill -9, a damaged store,
restart; the loss is logged, counted, flagged in /v1/health and recovered from the peer."""

from __future__ import annotations

import json
import os
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
from config_helpers import signer

from gossipmesh.crypto import generate_key

pytestmark = requires_loopback_aliases

IPS = ["127.0.0.2", "127.0.0.3"]
KEY = generate_key()
SIGNER = signer("loss")
WRITES = 12


@pytest.fixture(scope="module")
def pair(procs: Procs) -> tuple[AgentProc, AgentProc]:
    port = free_port_on(IPS)
    key_file = procs.root / "gossip.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    base = ["--encrypt-file", str(key_file), "--cluster", "loss", "--config-sync-interval-ms",
            "1000"]  # fmt: skip
    a = procs.new("a", IPS[0], port, base)
    b = procs.new("b", IPS[1], port, [*base, "--join", f"{IPS[0]}:{port}"])
    return a, b


def running(pair: tuple[AgentProc, AgentProc]) -> tuple[AgentProc, AgentProc]:
    a, b = pair
    for agent in pair:
        if not agent.running:
            agent.start()
    wait_until("a and b alive", lambda: a.members().get("b") == "alive", SETTLE_S)
    return a, b


def write_many(a: AgentProc, b: AgentProc, prefix: str) -> list[str]:
    keys = [f"route/{prefix}-{i}" for i in range(WRITES)]
    for key in keys:  # one acknowledged commit each
        a.client.config_write({key: {"destinations": [{"service": key[6:]}]}}, SIGNER)
    wait_until("b holds every write", lambda: all(
        k in b.client.config("route/")["entities"] for k in keys), SETTLE_S)  # fmt: skip
    return keys


def log_events(agent: AgentProc, event: str) -> list[dict[str, object]]:
    out = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def restart_and_recover(a: AgentProc, keys: list[str], lost_before: int) -> None:
    a.start()
    lost = log_events(a, "config_store_lost")
    assert len(lost) == lost_before + 1, a.log_tail()
    counters = a.client.health()["counters"]
    assert counters.get("config.lost_writes", 0) >= 1
    wait_until("a got its writes back", lambda: all(
        k in a.client.config("route/")["entities"] for k in keys), SETTLE_S)  # fmt: skip

    def recovered() -> bool:
        h = a.client.health()
        return "config_recovery" not in h and not any("config store lost" in r
                                                      for r in h["reasons"])  # fmt: skip

    wait_until("a left the recovery state", recovered, SETTLE_S)
    counters = a.client.health()["counters"]
    assert counters["config.recovered_writes"] == counters["config.lost_writes"]
    assert log_events(a, "config_store_recovered")


def damage_files(a: AgentProc) -> Path:
    return a.data_dir / "replica.db"


def test_a_zero_byte_store_is_a_loss_recovered_from_peers(
    pair: tuple[AgentProc, AgentProc],
) -> None:
    a, b = running(pair)
    keys = write_many(a, b, "zero")
    lost_before = len(log_events(a, "config_store_lost"))
    a.stop()  # SIGKILL
    db = damage_files(a)
    db.write_bytes(b"")  # 0 bytes: SQLite would open it as a new, empty store
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    restart_and_recover(a, keys, lost_before)
    lost = log_events(a, "config_store_lost")[-1]
    assert lost["missing"] >= WRITES  # every write it acknowledged (and its certificate entry)


def test_a_corrupt_write_ahead_log_is_a_loss_recovered_from_peers(
    pair: tuple[AgentProc, AgentProc],
) -> None:
    a, b = running(pair)
    keys = write_many(a, b, "wal")
    lost_before = len(log_events(a, "config_store_lost"))
    a.stop()  # SIGKILL: the last commits are only in the WAL
    wal = Path(str(damage_files(a)) + "-wal")
    size = wal.stat().st_size
    assert size > 32 + 24  # a header and at least one frame
    # Overwrite the second half of the log: SQLite stops at the first frame whose checksum fails
    # and quietly drops everything after it.
    with open(wal, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(size - size // 2))
    restart_and_recover(a, keys, lost_before)


def test_a_wiped_config_store_and_ledger_are_not_taken_for_a_new_node(
    pair: tuple[AgentProc, AgentProc],
) -> None:
    # The data dir's config files gone together (a wiped disk, a new volume): the node cannot
    # know what it acknowledged, but the writes its peers hold under its name tell that it is
    # not new. Said loudly, counted, shown in /v1/health; the writes come back from peers.
    a, b = running(pair)
    keys = write_many(a, b, "wiped")
    before = len(log_events(a, "config_previous_writer"))
    a.stop()  # SIGKILL
    for name in ("replica.db", "replica.db-wal", "replica.db-shm", "replica.acked"):
        (a.data_dir / name).unlink(missing_ok=True)
    a.start()
    wait_until("a got its writes back", lambda: all(
        k in a.client.config("route/")["entities"] for k in keys), SETTLE_S)  # fmt: skip
    wait_until("a said it", lambda: len(log_events(a, "config_previous_writer")) > before,
               SETTLE_S)  # fmt: skip
    said = log_events(a, "config_previous_writer")[-1]
    assert str(said["writer"]).startswith("a@") and said["writer"] != said["own_writer"]
    health = a.client.health()
    assert health["counters"]["config.previous_writers"] >= 1
    assert said["writer"] in health["config_previous_writers"]
    # The ledger took them over: the next loss of those writes is detected like any other.
    ledger = json.loads((a.data_dir / "replica.acked").read_text())
    assert said["writer"] in ledger["writers"]
    assert not log_events(b, "config_previous_writer")  # b's store is its own
