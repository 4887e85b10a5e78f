"""HAProxy's runtime API through its master CLI socket: commands, and parsing what comes back.

Theory of operation
-------------------
HAProxy runs in master-worker mode (``-W -S master.sock``). The master CLI answers for the
master itself (``show proc``, ``reload``) and forwards a command prefixed ``@1`` to the current
worker (``add server``, ``set server``, ``del server``, ``show stat``). One command per
connection: send it, half-close, read to EOF. Answers are bounded (``MAX_ANSWER_BYTES``): a
``show stat`` of thousands of servers fits, a runaway answer is cut, not buffered forever.

The commands that change servers are built here from ``diff.ServerOp``s (pure:
``server_commands``), so the supervisor only carries them out; each answer is judged by
``command_failed`` (the API says nothing on success, or "New server registered." /
"Server deleted.").
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import trio

from gossipmesh.dataplane.diff import ServerOp
from gossipmesh.dataplane.haproxy_config import address, backend_name, server_args
from gossipmesh.proxy.table import ServiceSettings

MAX_ANSWER_BYTES = 16 * 1024 * 1024
COMMAND_TIMEOUT_S = 10.0
_OK = ("", "New server registered.", "Server deleted.")


class RuntimeApiError(RuntimeError):
    pass


async def command(socket_path: str, line: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """One master-CLI command; its answer as text."""
    if "\n" in line or ";" in line:
        raise ValueError("one command per call")  # a ';' would start a second command
    try:
        return await _command(socket_path, line, timeout_s)
    except trio.BrokenResourceError as exc:  # reset by a master that is re-executing itself
        raise OSError(f"runtime API connection broken: {exc}") from exc


async def _command(socket_path: str, line: str, timeout_s: float) -> str:
    with trio.fail_after(timeout_s):
        stream = await trio.open_unix_socket(socket_path)
        async with stream:
            await stream.send_all(line.encode() + b"\n")
            await stream.send_eof()
            chunks: list[bytes] = []
            size = 0
            while size < MAX_ANSWER_BYTES:
                data = await stream.receive_some(65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
    return b"".join(chunks).decode(errors="replace")


def command_failed(answer: str) -> str | None:
    """None when the API accepted the command, else its complaint on one line."""
    text = answer.strip()
    if text in _OK:
        return None
    if "no need to change the addr" in text:
        return None  # ``set server addr`` to where it already is
    return " ".join(text.split())[:300]


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    kind: str  # master | worker
    reloads: int
    failed: int  # master only: failed reloads


def parse_show_proc(text: str) -> list[Proc]:
    """``show proc`` as rows: the master, then its workers (current first)."""
    out = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("# workers"):
            section = "worker"
            continue
        if line.startswith("# programs"):
            break
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        failed = 0
        if "[failed:" in line:
            tail = line.split("[failed:", 1)[1].split("]", 1)[0].strip()
            failed = int(tail) if tail.isdigit() else 0
        reloads = int(parts[2]) if parts[2].isdigit() else 0
        out.append(
            Proc(int(parts[0]), parts[1] if section == "worker" else "master", reloads, failed)
        )
    return out


def current_worker(procs: list[Proc]) -> Proc | None:
    """The newest worker: the one that has seen no reload since it started."""
    workers = [p for p in procs if p.kind == "worker"]
    fresh = [p for p in workers if p.reloads == 0]
    pick = fresh or workers
    return pick[0] if pick else None


def server_commands(op: ServerOp, settings: ServiceSettings, revive: bool) -> list[str]:
    """The worker commands (``@1`` prefixed) that carry out ``op``. ``revive``: an ``add`` of a
    server still present in maintenance (removed, not yet deleted): re-point and re-enable it."""
    be = backend_name(op.backend)
    srv = op.server
    ref = f"{be}/{srv.dest}"
    host_port = address(srv.host, srv.port)
    if op.kind == "add" and not revive:
        return [
            f"@1 add server {ref} {host_port} {server_args(settings, srv.weight)}",
            f"@1 enable health {ref}",
            f"@1 enable server {ref}",
        ]
    if op.kind == "add":
        return [
            f"@1 set server {ref} addr {srv.host} port {srv.port}",
            f"@1 set server {ref} weight {min(max(srv.weight, 1), 256)}",
            f"@1 set server {ref} state ready",
        ]
    if op.kind == "remove":
        return [f"@1 set server {ref} state maint"]
    if op.kind == "weight":
        return [f"@1 set server {ref} weight {min(max(srv.weight, 1), 256)}"]
    return [f"@1 set server {ref} addr {srv.host} port {srv.port}"]


def delete_command(backend: str, dest: str) -> str:
    return f"@1 del server {backend}/{dest}"


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """``show stat`` (CSV, header line starting ``# ``) as dicts."""
    body = text.lstrip()
    if body.startswith("# "):
        body = body[2:]
    return [dict(row) for row in csv.DictReader(io.StringIO(body)) if row.get("pxname")]


__all__ = [
    "Proc",
    "RuntimeApiError",
    "command",
    "command_failed",
    "current_worker",
    "delete_command",
    "parse_show_proc",
    "parse_stat_csv",
    "server_commands",
]
