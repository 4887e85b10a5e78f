"""Structured logs: one JSON object per line on stderr, one line per event.

Every line has ``ts`` (ISO-8601 UTC, milliseconds), ``level`` and ``event``; the rest are fields
of the event (``member``, ``state``, ``address``...). Lines are flushed at once so a supervisor or a
test reading the pipe sees events as they happen.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


class EventLog:
    def __init__(self, stream: TextIO | None = None, level: str = "info", **context: Any) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._min = _LEVELS[level]
        self._context = context

    def log(self, level: str, event: str, **fields: Any) -> None:
        if _LEVELS[level] < self._min:
            return
        now = time.time()
        ts = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        )
        record = {"ts": ts, "level": level, "event": event, **self._context, **fields}
        try:
            self._stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the agent down

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warn(self, event: str, **fields: Any) -> None:
        self.log("warn", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)
