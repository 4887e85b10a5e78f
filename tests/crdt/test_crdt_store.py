"""The durable replica: acknowledged means on disk; damage is reported, never dropped silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crdt_helpers import T0, apply_batch, authority, cert_entries, new_doc, snapshot, write

from gossipmesh.crdt.document import Delta, Document
from gossipmesh.crdt.sync import encode_delta
from gossipmesh.errors import StoreCorruptError
from gossipmesh.store import ReplicaStore


def empty() -> Document:
    """What the agent loads into: a document with nothing, not even the certificates."""
    return Document(authority())


def fresh(store: ReplicaStore) -> Document:
    """A new document as a replica would start: the certificates are logged like any delta."""
    store.append(encode_delta(Delta(cert_entries())))
    return new_doc()


def test_write_reload_and_compact(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    store = ReplicaStore.open(db)
    doc = fresh(store)
    store.append(encode_delta(write(doc, "route/a", {"v": 1}, "n1", T0)))
    store.append(
        encode_delta(apply_batch(doc, [(f"route/b{i}", {"i": i}) for i in range(50)], "n1", T0))
    )
    store.close()
    again = ReplicaStore.open(db)
    loaded = again.load_document(empty, T0)
    assert snapshot(loaded) == snapshot(doc)
    assert loaded.clock.now(0) > doc.max_hlc()  # never reissues a persisted timestamp
    again.save_snapshot(loaded)
    assert again.log_length() == 0
    again.append(encode_delta(write(loaded, "route/a", None, "n1", T0 + 1)))
    assert again.load_document(empty, T0).get("route/a") is None
    again.put_meta("x", b"1")
    assert again.get_meta("x") == b"1" and again.get_meta("y") is None


def test_acknowledged_write_survives_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    doc = new_doc()
    payload = encode_delta(
        Delta((*cert_entries(), *write(doc, "route/a", {"v": 1}, "n1", T0).entries))
    )
    script = f"""
import os
from gossipmesh.store import ReplicaStore
s = ReplicaStore.open({str(db)!r})
s.append({payload!r})
os._exit(0)  # no close, no flush: the process just dies after the acknowledgement
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert ReplicaStore.open(db).load_document(empty, T0).get("route/a") == {"v": 1}


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
    doc = fresh(store)
    for i in range(200):
        store.append(encode_delta(write(doc, f"route/r{i}", {"pad": "x" * 500}, "n1", T0)))
    store.save_snapshot(doc)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorruptError):
        ReplicaStore.open(db).load_document(empty, T0)


def test_flipped_payload_byte_fails_the_checksum(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    store = ReplicaStore.open(db)
    payload = encode_delta(write(new_doc(), "route/a", {"marker": "ABCDEFGH"}, "n1", T0))
    store.append(payload)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    raw = db.read_bytes()
    at = raw.index(b"ABCDEFGH")
    db.write_bytes(raw[:at] + b"X" + raw[at + 1 :])
    with pytest.raises(StoreCorruptError, match="checksum"):
        ReplicaStore.open(db)


def test_entries_load_whatever_row_holds_their_certificate(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "config.db")
    doc = new_doc()
    store.append(encode_delta(write(doc, "route/a", {"v": 1}, "n1", T0)))
    store.append(encode_delta(Delta(cert_entries())))  # the certificates come last
    assert store.load_document(empty, T0).get("route/a") == {"v": 1}


def test_collected_tombstones_stay_known_across_a_snapshot(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "config.db")
    doc = fresh(store)
    stale = write(doc, "route/a", {"v": 1}, "n1", T0)
    write(doc, "route/a", None, "n1", T0 + 1)
    assert doc.collect_garbage(T0 + 10_000, 1_000) == ["route/a"]
    store.save_snapshot(doc)
    loaded = store.load_document(empty, T0 + 10_000)
    assert loaded.merge(stale, T0 + 10_000).duplicates == 1  # not resurrected
    assert loaded.get("route/a") is None and loaded.root_hash == doc.root_hash


def test_a_store_of_the_unsigned_format_names_the_way_out(tmp_path: Path) -> None:
    import msgpack

    store = ReplicaStore.open(tmp_path / "config.db")
    store.append(msgpack.packb([1, 4, [[], [[], []]]]))
    with pytest.raises(StoreCorruptError, match="--rebuild-config"):
        store.load_document(empty, T0)
