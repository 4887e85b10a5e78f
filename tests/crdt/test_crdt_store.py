"""The durable replica: acknowledged means on disk; damage is reported, never dropped silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crdt_helpers import snapshot

from gossipmesh.crdt.document import Document
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.errors import StoreCorruptError
from gossipmesh.store import ReplicaStore

T0 = 1_700_000_000_000


def test_write_reload_and_compact(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    store = ReplicaStore.open(db)
    doc = Document()
    store.append(encode_delta(doc.write("route/a", {"v": 1}, "n1", T0)))
    store.append(
        encode_delta(doc.apply_batch([(f"route/b{i}", {"i": i}) for i in range(50)], "n1", T0))
    )
    store.close()
    again = ReplicaStore.open(db)
    loaded = again.load_document(Document, T0)
    assert snapshot(loaded) == snapshot(doc)
    assert loaded.clock.now(0) > doc.max_hlc()  # never reissues a persisted timestamp
    again.save_snapshot(loaded)
    assert again.log_length() == 0
    again.append(encode_delta(loaded.write("route/a", None, "n1", T0 + 1)))
    assert again.load_document(Document, T0).get("route/a") is None
    again.put_meta("x", b"1")
    assert again.get_meta("x") == b"1" and again.get_meta("y") is None


def test_acknowledged_write_survives_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    script = f"""
import os
from gossipmesh.crdt.document import Document
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.store import ReplicaStore
s = ReplicaStore.open({str(db)!r})
s.append(encode_delta(Document().write("route/a", {{"v": 1}}, "n1", {T0})))
os._exit(0)  # no close, no flush: the process just dies after the acknowledgement
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert ReplicaStore.open(db).load_document(Document, T0).get("route/a") == {"v": 1}


def test_garbage_file_is_refused_then_rebuilt(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorruptError, match="config.db"):
        ReplicaStore.open(db)
    store = ReplicaStore.open(db, rebuild=True)
    assert store.rebuilt_from is not None and store.rebuilt_from.exists()
    assert store.load() == (None, [])


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    store = ReplicaStore.open(db)
    doc = Document()
    for i in range(200):
        store.append(encode_delta(doc.write(f"route/r{i}", {"pad": "x" * 500}, "n1", T0)))
    store.save_snapshot(doc)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorruptError):
        ReplicaStore.open(db).load_document(Document, T0)


def test_flipped_payload_byte_fails_the_checksum(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    store = ReplicaStore.open(db)
    payload = encode_delta(Document().write("route/a", {"marker": "ABCDEFGH"}, "n1", T0))
    store.append(payload)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    raw = db.read_bytes()
    at = raw.index(b"ABCDEFGH")
    db.write_bytes(raw[:at] + b"X" + raw[at + 1 :])
    with pytest.raises(StoreCorruptError, match="checksum"):
        ReplicaStore.open(db)
