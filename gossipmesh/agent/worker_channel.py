"""The private control channel between the agent and one proxy worker process.

Theory of operation
-------------------
One ``AF_UNIX`` stream socketpair per worker, made by the agent; the worker's end is passed to
it as an inherited descriptor (agent/worker_pool.py). A frame is a 4-byte big-endian length and
a msgpack body ``[kind, *fields]``. ``FrameReader`` is the sans-IO half both sides use: bytes
in, whole frame bodies out, a length past its ``max_frame`` refused before anything is buffered.

The two directions are not trusted alike:

- **Agent -> worker** is trusted: the worker is the agent's child and serves what the agent
  says. The proxy's inputs travel as pickles inside the msgpack body (``encode_command``), so
  there is no second codec to keep in step with those types. Only the worker ever unpickles. The
  route table and the policies travel as the rebuild's inputs (``TableInputs``: the catalog, plain
  dataclasses), from which the worker builds both: the built objects hold instances of the
  compiled build's classes (mypyc), which do not pickle.
- **Worker -> agent** is untrusted: a worker parses hostile network bytes, and the agent holds
  the node key and the catalog. ``decode_report`` accepts exactly three kinds, each field
  type- and size-checked (msgpack only, no extension types, no pickle, frames of at most
  ``MAX_REPORT_BYTES``), and raises ``ChannelError`` on anything else. The pool counts it, logs
  one line and kills that worker (it is restarted); no agent state is touched by a bad frame.
  The metrics snapshot's own fields are checked by agent/worker_metrics.py.
"""

from __future__ import annotations

import pickle
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from gossipmesh.agent.catalog import TableInputs
    from gossipmesh.proxy.mtls import MeshCredentials

LENGTH = struct.Struct(">I")
MAX_REPORT_BYTES = 8 * 1024 * 1024  # worker -> agent: a metrics snapshot at its label caps
MAX_COMMAND_BYTES = 64 * 1024 * 1024  # agent -> worker: a route table of a large mesh
MAX_AUDIT_FIELDS = 32
MAX_TEXT = 1024  # bytes of any string a worker reports (names, reasons, audit values)

# Agent -> worker kinds. SETUP carries a pickled ``WorkerSetup`` (worker_pool.py); TABLE a
# pickled ``TableInputs`` (the worker builds the route table and the policies from it);
# CREDENTIALS a pickled ``MeshCredentials``; TRUST ``[domain, roots, revoked]``; HOSTS
# ``{node: [service, ...]}``; METRICS a request number; STOP nothing.
SETUP, TABLE, CREDENTIALS, TRUST, HOSTS, METRICS, STOP = (
    "setup", "table", "credentials", "trust", "hosts", "metrics", "stop",
)  # fmt: skip
PICKLED = frozenset({SETUP, TABLE, CREDENTIALS})
# Worker -> agent kinds.
READY, SNAPSHOT, AUDIT = "ready", "snapshot", "audit"


EVENT_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # an audit event's name and its fields' keys

Trust = tuple[str, tuple[bytes, ...], tuple[bytes, ...]]  # trust domain, roots, revoked


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Everything a worker's proxy needs to start: where to listen (the addresses the agent's
    own proxy bound, ports resolved), what to serve, and the current state of every input the
    agent later updates with the other commands."""

    index: int
    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    tcp: Mapping[str, tuple[str, int]]
    outbound_services: Mapping[str, tuple[str, int]]
    local_services: Mapping[str, Sequence[tuple[str, int]]]
    plaintext_inbound: bool
    seed: int
    table: TableInputs  # the last rebuild's: the worker builds its table and policies
    credentials: MeshCredentials
    trust: Trust
    hosts: Mapping[str, Sequence[str]]
    node: str  # the agent's name, in request records
    access_log: str | None  # the agent's --access-log: every process appends its own lines
    access_log_sample_ratio: float
    access_log_max_lines_per_s: int  # per process


class ChannelError(ValueError):
    """A frame broke the channel's rules; the text is a short reason (a log field)."""


class FrameReader:
    """Bytes in, frame bodies out; ``max_frame`` bounds each body."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while len(self.buf) >= LENGTH.size:
            (n,) = LENGTH.unpack_from(self.buf)
            if n > self.max_frame:
                raise ChannelError(f"frame of {n} bytes (at most {self.max_frame})")
            if len(self.buf) < LENGTH.size + n:
                break
            out.append(bytes(self.buf[LENGTH.size : LENGTH.size + n]))
            del self.buf[: LENGTH.size + n]
        return out


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


# -- agent -> worker (trusted) ---------------------------------------------------------------


def encode_command(kind: str, payload: object = None) -> bytes:
    """One framed command; the kinds in ``PICKLED`` carry ``payload`` as a pickle."""
    if kind in PICKLED:
        payload = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return frame(msgpack.packb([kind, payload], use_bin_type=True))


def decode_command(body: bytes) -> tuple[str, Any]:
    """In the worker: a command from its agent (trusted: the agent is its parent)."""
    kind, payload = msgpack.unpackb(body, raw=False)
    if kind in PICKLED:
        payload = pickle.loads(payload)  # noqa: S301 - from the parent agent only
    return kind, payload


# -- worker -> agent (untrusted) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker's listeners are bound and it serves."""

    pid: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The answer to metrics request ``seq``; ``data`` is checked by worker_metrics.restore."""

    seq: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A security log line the worker's proxy wants written (the agent writes it)."""

    event: str
    fields: dict[str, str | int | float | bool | None]


Report = Ready | Snapshot | AuditEvent


def encode_report(report: Report) -> bytes:
    """In the worker: one framed report."""
    if isinstance(report, Ready):
        body: list[Any] = [READY, report.pid]
    elif isinstance(report, Snapshot):
        body = [SNAPSHOT, report.seq, report.data]
    else:
        body = [AUDIT, report.event, report.fields]
    return frame(msgpack.packb(body, use_bin_type=True))


def decode_report(body: bytes) -> Report:
    """In the agent: a worker's frame, every field checked; ``ChannelError`` if anything is off."""
    if len(body) > MAX_REPORT_BYTES:
        raise ChannelError("report too large")
    try:
        msg = msgpack.unpackb(
            body, raw=False, strict_map_key=True, ext_hook=_no_ext, max_bin_len=MAX_TEXT,
            max_str_len=MAX_TEXT,
        )  # fmt: skip
    except ChannelError:
        raise
    except Exception as exc:  # msgpack raises several types on junk; all mean the same
        raise ChannelError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ChannelError("not a [kind, ...] list")
    kind = msg[0]
    if kind == READY and len(msg) == 2 and _uint(msg[1]) and 0 < msg[1] < 2**31:
        return Ready(msg[1])
    if kind == SNAPSHOT and len(msg) == 3 and _uint(msg[1]) and isinstance(msg[2], dict):
        return Snapshot(msg[1], msg[2])
    if kind == AUDIT and len(msg) == 3 and isinstance(msg[1], str) and EVENT_RE.fullmatch(msg[1]):
        fields = msg[2]
        if not isinstance(fields, dict) or len(fields) > MAX_AUDIT_FIELDS:
            raise ChannelError("audit fields not a small map")
        for key, value in fields.items():
            if (
                not isinstance(key, str)
                or not EVENT_RE.fullmatch(key)
                or not (value is None or isinstance(value, str | int | float | bool))
            ):
                raise ChannelError("audit field not a scalar")
        return AuditEvent(msg[1], fields)
    raise ChannelError(f"bad {kind[:32]!r} report")


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _no_ext(code: int, data: bytes) -> object:
    raise ChannelError("msgpack extension type")


__all__ = [
    "AUDIT",
    "CREDENTIALS",
    "HOSTS",
    "MAX_COMMAND_BYTES",
    "MAX_REPORT_BYTES",
    "METRICS",
    "READY",
    "SETUP",
    "SNAPSHOT",
    "STOP",
    "TABLE",
    "TRUST",
    "EVENT_RE",
    "AuditEvent",
    "ChannelError",
    "FrameReader",
    "Ready",
    "Report",
    "Snapshot",
    "Trust",
    "WorkerSetup",
    "decode_command",
    "decode_report",
    "encode_command",
    "encode_report",
    "frame",
]
