"""What this node acknowledged, kept beside ``replica.db``, so a damaged store is never a new node.

Theory of operation
-------------------
SQLite checks its own structure and our CRC-32s check every row, but neither can tell an empty,
truncated or 0-byte ``replica.db``, or a write-ahead log whose damaged tail SQLite quietly
dropped, from a store that never held more. Taken at face value, such a node would start empty
(or short) under a fresh writer id and nobody would know that writes it acknowledged are gone.

So the agent keeps a second, tiny record: ``DATA_DIR/replica.acked`` (JSON, written atomically and
fsync'd, mode 0600), the highest counter it acknowledged under each writer id it has used
(``{"writers": {"a@0f3c19aa": 17}}``, at most ``MAX_WRITERS``, newest kept). It is written after
the store's own commit and before the HTTP answer, so it never claims more than was durable; a
crash between the two leaves it behind the store, which the next start corrects.

At start the replica compares it with what the loaded document holds under each writer id
(``Document.top``). Any shortfall is a loss: the agent **starts, in a flagged recovery state**,
rather than refusing, because the cure is what a running agent does anyway (anti-entropy with its
peers, who hold every write this node ever spread) and an operator would rather have the node
serve its other config than sit down:

- an ``error`` log line ``config_store_lost`` naming each writer, what was acknowledged and what
  was found; counters ``config.lost_writes`` (entries missing) and ``config.store_lost`` (1);
- a new writer id, never the damaged one (its counters would be reused for different writes);
- ``/v1/health`` is ``degraded`` with a reason saying how many acknowledged writes are missing,
  and ``config_recovery`` shows them per writer; a sync with every member that comes alive;
- as peers hand the entries back, ``config.recovered_writes`` counts them; when none is missing
  a ``warn`` line ``config_store_recovered`` ends the state. Writes no peer holds either stay
  missing, and flagged, until the operator looks (``--rebuild-config`` does not clear it: the
  ledger is the evidence).

When the ledger is gone together with the store (a wiped data dir), the node cannot know what it
acknowledged; but a node that starts with neither is only new if no peer holds writes made under
its name before. The replica watches what anti-entropy hands over for writer ids ``NAME@…`` other
than its own: each is an ``error`` line ``config_previous_writer``, counted
(``config.previous_writers``), listed in ``/v1/health`` (``config_previous_writers``) and taken
into the ledger, so a later loss of those writes is caught like any other.

Writes are counted by dots: a writer's counters go up by one per entry, so ``acked - found`` is
how many of its entries (at least) this store lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.agent.store import write_atomic

LEDGER_FILE = "replica.acked"
MAX_WRITERS = 16
MAX_LEDGER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Shortfall:
    """One writer id whose acknowledged entries the store lacks."""

    writer: str
    acked: int
    found: int

    @property
    def missing(self) -> int:
        return max(0, self.acked - self.found)


class AckLedger:
    """``replica.acked`` (see the module docstring). Unreadable content raises ``ValueError``."""

    def __init__(self, path: Path, writers: dict[str, int]) -> None:
        self.path = path
        self.writers = writers  # insertion order: oldest first

    @classmethod
    def load(cls, data_dir: Path) -> AckLedger:
        path = data_dir / LEDGER_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, {})
        if len(raw) > MAX_LEDGER_BYTES:
            raise ValueError(f"{path}: larger than {MAX_LEDGER_BYTES} bytes")
        try:
            data = json.loads(raw)
            writers = data["writers"]
            if not isinstance(writers, dict) or not all(
                isinstance(k, str) and type(v) is int and v >= 0 for k, v in writers.items()
            ):
                raise ValueError("writers is not a map of names to counters")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable ({exc})") from None
        return cls(path, dict(writers))

    @property
    def exists(self) -> bool:
        return bool(self.writers)

    def shortfalls(self, found: dict[str, int]) -> list[Shortfall]:
        """Writers whose acknowledged counter is above what ``found`` (writer -> top) holds."""
        return [
            Shortfall(w, acked, found.get(w, 0))
            for w, acked in self.writers.items()
            if acked > found.get(w, 0)
        ]

    def acknowledge(self, writer: str, counter: int) -> None:
        """Record that ``writer``'s entries up to ``counter`` are durable (fsync'd)."""
        if self.writers.get(writer, -1) >= counter:
            return
        self.writers.pop(writer, None)
        self.writers[writer] = counter
        while len(self.writers) > MAX_WRITERS:
            del self.writers[next(iter(self.writers))]
        write_atomic(self.path, json.dumps({"writers": self.writers}, sort_keys=False) + "\n")
