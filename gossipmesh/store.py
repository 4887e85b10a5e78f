"""The durable replica of the config document in the agent's data directory (``replica.db``).

Why SQLite (stdlib ``sqlite3``), in WAL mode with ``synchronous=FULL``:

- **Atomic multi-entity commits.** ``config apply`` of 50 entities is one delta, appended in one
  transaction: after a crash either all of it is on disk or none of it is.
- **Crash safety with an acknowledged-means-durable rule.** With ``synchronous=FULL`` a commit
  returns only after the WAL is fsync'd, so the agent acknowledges a write only once it would
  survive ``kill -9`` or power loss. WAL keeps readers off the writer's path and makes each commit
  one sequential append.
- **Detecting damage.** ``PRAGMA quick_check`` validates the file's structure on open, and every
  row carries a CRC-32 of its payload, checked on load, because SQLite does not checksum content.
  Either failure raises ``StoreCorruptError``; the agent then refuses to run on the file unless
  told to rebuild (``rebuild=True`` moves the damaged file aside, never deletes it, and starts
  empty so the replica resyncs from peers).

What is stored is the CRDT's own currency: encoded deltas of signed entries
(``gossipmesh.crdt.sync.encode_delta``) appended as they are applied, plus an occasional snapshot
(every entry, and this replica's known maps, which outlive collected tombstones) that replaces
the log. Because merging deltas equals merging states, loading is "merge everything", in any
order; the entries are verified again on the way in. This module does I/O and is not part of the sans-IO core.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from gossipmesh.crdt.document import Delta, Document, Entry
from gossipmesh.crdt.sync import DeltaMessage, KnownMaps, Snapshot, decode, encode_snapshot
from gossipmesh.errors import DecodeError, StoreCorruptError

SCHEMA_VERSION = 1
COMPACT_AFTER_DELTAS = 1000  # a hint for the runtime: snapshot when the log grows past this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), payload BLOB NOT NULL,
                                     crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL,
                                crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class ReplicaStore:
    """One open replica file. Every mutating call returns only once the data is durable."""

    def __init__(self, conn: sqlite3.Connection, path: Path, rebuilt_from: Path | None) -> None:
        self._conn = conn
        self.path = path
        self.rebuilt_from = rebuilt_from  # where a damaged file was moved, if we rebuilt

    # -----------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(cls, path: Path | str, rebuild: bool = False) -> ReplicaStore:
        """Open (creating if absent) and verify. Damage raises StoreCorruptError naming the file,
        unless ``rebuild``: then the file is renamed ``<name>.corrupt-N`` and a fresh one made."""
        path = Path(path)
        try:
            conn = cls._open_checked(path)
        except StoreCorruptError:
            if not rebuild:
                raise
            moved = move_aside(path)
            conn = cls._open_checked(path)
            return cls(conn, path, moved)
        return cls(conn, path, None)

    @staticmethod
    def _open_checked(path: Path) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise StoreCorruptError(f"{path}: integrity check failed: {result!r}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreCorruptError(f"{path}: unknown schema version {version}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            _verify_rows(conn, path)
            return conn
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise StoreCorruptError(
                f"{path}: the config store is unreadable ({e}); restart with --rebuild to move it "
                "aside and resync from peers"
            ) from None
        except StoreCorruptError:
            if conn is not None:
                conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    # -----------------------------------------------------------------------------------------
    # Writing

    def append(self, payload: bytes) -> None:
        """Durably log one encoded delta."""
        self.append_many([payload])

    def append_many(self, payloads: Iterable[bytes]) -> None:
        """Durably log several deltas in one transaction: all or none survive a crash."""
        with _transaction(self._conn):
            self._conn.executemany(
                "INSERT INTO log (payload, crc) VALUES (?, ?)",
                [(p, zlib.crc32(p)) for p in payloads],
            )

    def compact(self, snapshot: bytes) -> None:
        """Replace snapshot and log with ``snapshot`` (the document's full state), atomically."""
        with _transaction(self._conn):
            self._conn.execute("DELETE FROM log")
            self._conn.execute(
                "INSERT OR REPLACE INTO snapshot (id, payload, crc) VALUES (1, ?, ?)",
                (snapshot, zlib.crc32(snapshot)),
            )

    def put_meta(self, name: str, value: bytes) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value)
            )

    def get_meta(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    # -----------------------------------------------------------------------------------------
    # Reading

    def load(self) -> tuple[bytes | None, list[bytes]]:
        """The snapshot (if any) and every delta logged after it, in order; CRCs checked."""
        try:
            snap = self._conn.execute("SELECT payload, crc FROM snapshot WHERE id = 1").fetchone()
            rows = self._conn.execute("SELECT payload, crc FROM log ORDER BY seq").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreCorruptError(f"{self.path}: read failed: {e}") from None
        for payload, crc in ([snap] if snap else []) + rows:
            if zlib.crc32(payload) != crc:
                raise StoreCorruptError(f"{self.path}: a stored delta fails its checksum")
        return (None if snap is None else bytes(snap[0])), [bytes(r[0]) for r in rows]

    def log_length(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM log").fetchone()[0])

    def load_document(self, make: Callable[[], Document], wall_ms: int) -> Document:
        """Rebuild the replica: merge the snapshot and the log into ``make()``'s fresh document.

        Every row is decoded first and the entries merged as one delta, so a certificate or a
        root statement vouches for the entries it signed whatever row it landed in (the merge
        takes authority keys first). Each entry is verified again as it is merged: what the
        document holds is what its roots and certificates admit today. A row that no longer
        decodes is damage, not a peer's fault: StoreCorruptError.
        """
        doc = make()
        snapshot, deltas = self.load()
        entries: list[Entry] = []
        known: list[KnownMaps] = []
        for payload in ([snapshot] if snapshot is not None else []) + deltas:
            try:
                message = decode(payload)
            except DecodeError as e:
                hint = (" (written by an earlier version, before entries were signed: restart "
                        "with --rebuild-config to move it aside and resync from peers)"
                        if e.reason == "version" else "")  # fmt: skip
                raise StoreCorruptError(
                    f"{self.path}: stored delta does not decode: {e}{hint}"
                ) from None
            if isinstance(message, DeltaMessage):
                entries.extend(message.delta.entries)
            elif isinstance(message, Snapshot):
                entries.extend(message.delta.entries)
                known.append(message.known)
            else:
                raise StoreCorruptError(f"{self.path}: a stored row is not a delta")
        doc.merge(Delta(tuple(entries)), wall_ms, check_clock=False)
        for maps in known:
            doc.restore_known({k: dict(pairs) for k, pairs in maps})
        doc.restore_clock()
        return doc

    def save_snapshot(self, doc: Document) -> None:
        self.compact(encode_snapshot(doc))


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error. (The stdlib context manager would also work,
    but with ``isolation_level=None`` we want the BEGIN to be explicit and visible.)"""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _verify_rows(conn: sqlite3.Connection, path: Path) -> None:
    for table in ("snapshot", "log"):
        for payload, crc in conn.execute(f"SELECT payload, crc FROM {table}"):
            if not isinstance(payload, bytes) or zlib.crc32(payload) != crc:
                raise StoreCorruptError(f"{path}: a row of {table} fails its checksum")


def move_aside(path: Path) -> Path:
    """Rename a damaged store and its WAL/SHM files to ``NAME.corrupt-N`` (never delete data)."""
    n = 1
    while path.with_name(f"{path.name}.corrupt-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.corrupt-{n}")
    if path.exists():
        path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target
