"""The error tree. Every error says whose fault it was and, where it matters, whether state changed.

- ``DecodeError``: bytes from the network (or a file) were not a valid message. The peer's fault;
  the receiver drops the input, counts it under ``reason`` and changes nothing.
- ``UsageError``: the operator or caller asked for something malformed (bad flag, bad address,
  invalid config entity). Nothing was changed.
- ``ConfigValidationError``: a config entity failed validation; ``field`` names the culprit.
- ``StoreCorruptError``: the on-disk replica could not be read; the agent refuses to run on it.
- ``DataplaneStartError``: the external proxy (``--dataplane haproxy|nginx``) cannot run. Here,
  not in ``gossipmesh/dataplane/``, so the agent can catch it without importing that package,
  which only those flags use (issue 19: idle RSS).
- ``CoreError``: a sans-IO core raised while handling an input: a bug in gossipmesh, nobody
  else's fault. The runtime logged it with its traceback; the core's state may be half-changed.
"""

from __future__ import annotations


class GossipmeshError(Exception):
    """Base of every error gossipmesh raises on purpose."""


class DecodeError(GossipmeshError):
    """Input bytes were rejected. ``reason`` is a short stable slug used as a counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class UsageError(GossipmeshError):
    """The caller asked for something malformed; nothing changed."""


class ConfigValidationError(UsageError):
    """A config entity or file is invalid. ``field`` is a dotted path to the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class StoreCorruptError(GossipmeshError):
    """The persisted replica is unreadable; refuse to run on it rather than drop data."""


class LimitExceededError(UsageError):
    """A bounded resource (entity size, document size, queue depth) would be exceeded."""


class DataplaneStartError(RuntimeError):
    """The external proxy cannot run: the message is one line for the operator."""


class CoreError(GossipmeshError):
    """A core raised while handling an input (a bug); the original exception is the cause.

    The agent logs the bug with its traceback and counts it where it calls the core, keeps
    running, and hands the caller of that input this error instead of the bug itself."""
