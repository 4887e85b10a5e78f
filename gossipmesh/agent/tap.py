"""``GET /v1/tap``: live requests matching a filter, from this agent's proxy and every alive peer's.

Theory of operation
-------------------
A tap is a ``Tap`` sink on a proxy's request log (proxy/request_log.py): it sees each finished
request's probe (service, method, path, status), keeps those its ``TapFilter`` matches, at most
``max_rps`` a second (the excess ``skipped``), in a bounded channel (a slow reader's excess
``dropped``). No body and no header value is ever in a record.

The admin stream (``/v1/tap?service=S&path=P&method=M&status=5xx&max_rps=N&duration=S``,
``scope=mesh`` by default, ``local`` for this agent only) is newline-delimited JSON: a
``tap-start`` line naming the nodes asked, one line per request (``RequestRecord.to_json``, with
its ``node``), and a ``tap-end`` line with the counts when the duration is up (at most
``TAP_MAX_S``; the CLI's ``--duration``). At most ``MAX_TAPS`` such streams at once (the admin
server's stream caps, as for ``/v1/monitor``: one more is ``503 too_many_taps``).

Peers are asked over the gossip TCP port (sealed with the cluster key, so only members can), in
long polls: a ``tap`` stream carries ``{"id", "filter", "wait_ms"}`` and the peer answers, within
its stream deadline, with what its session's tap holds (at most ``POLL_BATCH`` records). The
first poll of an id opens that session on the peer; a session not polled for ``TAP_IDLE_S`` or
older than ``TAP_MAX_S`` is closed by the peer itself, so a tapping agent that dies leaves
nothing behind. A peer holds at most ``MAX_REMOTE_TAPS`` sessions. Each poll is a short
exchange, so taps never hold the gossip port's stream slots for long.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from gossipmesh.agent.http import HTTPError, Request, Response, StreamResponse
from gossipmesh.errors import DecodeError
from gossipmesh.ids import Address
from gossipmesh.proxy.clock import NS_PER_S
from gossipmesh.proxy.record_sinks import (
    TAP_BUFFER,
    Tap,
    TapFilter,
    TokenBucket,
    parse_status_filter,
)
from gossipmesh.proxy.request_log import RequestRecord
from gossipmesh.swim.member import MemberState

if TYPE_CHECKING:
    from gossipmesh.agent.sidecar import Sidecar
    from gossipmesh.agent.streams import SealedStream

TAP_PATH = "/v1/tap"
MAX_TAPS = 16  # admin tap streams at once
MAX_REMOTE_TAPS = 32  # sessions other agents hold on this one
TAP_MAX_S = 900.0  # a tap ends after this, whatever it asked
DEFAULT_TAP_S = 60.0
TAP_IDLE_S = 5.0  # a peer's session not polled for this long is closed
POLL_WAIT_S = 1.0  # a poll waits at most this for a first record (and half the stream deadline)
POLL_BATCH = 256
MAX_RPS = 10_000.0
DEFAULT_RPS = 100.0
MAX_FIELD_CHARS = 256
RETRY_S = 1.0  # after a failed poll


@dataclass
class _Fanout:
    """One admin tap's state shared by its pollers."""

    dropped: int = 0
    remote_dropped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Session:
    tap: Tap
    created_s: float
    polled_s: float


def parse_filter(fields: dict[str, Any]) -> TapFilter:
    """A ``TapFilter`` from query or peer fields; ValueError naming the field."""

    def text(name: str) -> str:
        value = fields.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
            raise ValueError(f"{name} must be text of at most {MAX_FIELD_CHARS} characters")
        return value

    path = text("path")
    if path and not path.startswith("/"):
        raise ValueError("path must start with /")
    method = text("method")
    if method and not method.isalpha():
        raise ValueError("method must be letters, like GET")
    status = text("status")
    if status:
        status = parse_status_filter(status)
    raw_rps = fields.get("max_rps", DEFAULT_RPS)
    try:
        rps = float(raw_rps)
    except (TypeError, ValueError):
        raise ValueError("max_rps must be a number") from None
    if not 0 < rps <= MAX_RPS:
        raise ValueError(f"max_rps must be in (0, {MAX_RPS:g}]")
    return TapFilter(text("service"), path, method, status, rps)


def filter_fields(f: TapFilter) -> dict[str, Any]:
    return {"service": f.service, "path": f.path.decode("latin-1"),
            "method": f.method.decode("latin-1"), "status": f.status, "max_rps": f.max_rps}  # fmt: skip


class TapHub:
    """The admin route, the peer stream kind and the sessions (see the module docstring)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.agent = sidecar.agent
        self.remote: dict[tuple[str, str], _Session] = {}
        self.local_open = 0
        self.counters = {"sent": 0, "dropped": 0, "skipped": 0}
        self.nursery: trio.Nursery | None = None
        agent = self.agent
        agent.router.add("GET", TAP_PATH, self.route)
        agent.register_stream_handler("tap", self.serve_peer)

    def stats(self) -> dict[str, Any]:
        return {"open": self.local_open + len(self.remote), **self.counters}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the pollers run in; close idle and old peer sessions."""
        server = self.agent.admin_server
        if server is not None:
            server.add_stream_cap(TAP_PATH, "taps", MAX_TAPS)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(1.0)
                self.reap(trio.current_time())

    def reap(self, now_s: float) -> None:
        for key, s in list(self.remote.items()):
            if now_s - s.polled_s > TAP_IDLE_S or now_s - s.created_s > TAP_MAX_S:
                self._close(self.remote.pop(key).tap)

    def _open(self, tap: Tap) -> bool:
        proxy = self.sidecar.proxy
        if proxy is None:
            return False
        proxy.requests.add(tap)
        return True

    def _close(self, tap: Tap) -> None:
        proxy = self.sidecar.proxy
        if proxy is not None:
            proxy.requests.remove(tap)
        self.counters["dropped"] += tap.dropped
        self.counters["skipped"] += tap.skipped
        tap.send.close()

    # ---- the admin stream ---------------------------------------------------------------------

    async def route(self, req: Request) -> Response:
        q = {k: v[0] for k, v in req.query.items() if v}
        try:
            flt = parse_filter(q)
            duration_s = float(q.get("duration", DEFAULT_TAP_S))
            if not duration_s > 0 or math.isnan(duration_s):
                raise ValueError("duration must be a positive number of seconds")
        except ValueError as exc:
            raise HTTPError(400, "bad_request", str(exc)) from exc
        scope = q.get("scope", "mesh")
        if scope not in ("mesh", "local"):
            raise HTTPError(400, "bad_request", "scope must be mesh or local")
        if self.nursery is None:
            raise HTTPError(503, "not_ready", "the sidecar is starting")
        duration_s = min(duration_s, TAP_MAX_S)
        peers: list[tuple[str, Address]] = []
        if scope == "mesh":
            me = self.agent.settings.name
            peers = [(m.name, m.address) for m in await self.agent.members()
                     if m.name != me and m.state is MemberState.ALIVE]  # fmt: skip
        return StreamResponse(self._lines(flt, duration_s, peers))

    async def _lines(
        self, flt: TapFilter, duration_s: float, peers: list[tuple[str, Address]]
    ) -> AsyncIterator[bytes]:
        assert self.nursery is not None
        send, receive = trio.open_memory_channel[bytes](TAP_BUFFER)
        tap = Tap(flt)
        local = self._open(tap)
        self.local_open += 1
        scope = trio.CancelScope()
        state = _Fanout()
        body = json.dumps({"id": secrets.token_hex(16), "filter": filter_fields(flt)}).encode()
        self.nursery.start_soon(self._fan_out, scope, tap, peers, body, send, state)
        bucket = TokenBucket(flt.max_rps)
        sent = skipped = 0
        try:
            nodes = ([self.agent.settings.name] if local else []) + [n for n, _ in peers]
            yield _line({"event": "tap-start", "nodes": nodes, "filter": filter_fields(flt),
                         "duration_s": duration_s})  # fmt: skip
            deadline = trio.current_time() + duration_s
            while True:
                line = b""
                with trio.move_on_at(deadline):
                    line = await receive.receive()
                if not line:
                    break
                if not bucket.take(round(trio.current_time() * NS_PER_S)):
                    skipped += 1
                    continue
                sent += 1
                yield line
            yield _line({"event": "tap-end", "sent": sent, "skipped": skipped,
                         "dropped": state.dropped + tap.dropped,
                         "remote_dropped": state.remote_dropped,
                         "errors": state.errors})  # fmt: skip
        finally:
            scope.cancel()
            self.local_open -= 1
            self.counters["sent"] += sent
            self.counters["skipped"] += skipped
            if local:
                self._close(tap)

    async def _fan_out(
        self, scope: trio.CancelScope, tap: Tap, peers: list[tuple[str, Address]], body: bytes,
        send: trio.MemorySendChannel[bytes], state: _Fanout,
    ) -> None:  # fmt: skip
        """This agent's records and every peer's into ``send``, until ``scope`` is cancelled."""
        with scope:
            async with trio.open_nursery() as nursery:
                for name, address in peers:
                    nursery.start_soon(self._poll_peer, name, address, body, send, state)
                async for rec in tap.receive:
                    _offer(send, _line(rec.to_json()), state)

    async def _poll_peer(
        self, name: str, address: Address, body: bytes, send: trio.MemorySendChannel[bytes],
        state: _Fanout,
    ) -> None:  # fmt: skip
        agent = self.agent
        while True:
            try:
                with trio.fail_after(POLL_WAIT_S + agent.transport.stream_timeout_s):
                    stream = await agent.open_stream(address, "tap", body)
                    try:
                        reply = json.loads(await stream.receive())
                    finally:
                        await stream.aclose()
                if not isinstance(reply, dict):
                    raise ValueError("not an object")
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, EOFError,
                    DecodeError, ValueError) as exc:  # fmt: skip
                state.errors[name] = repr(exc)[:200]
                await trio.sleep(RETRY_S)
                continue
            error = reply.get("error")
            if error:
                state.errors[name] = str(error)[:200]
                await trio.sleep(RETRY_S)
                continue
            state.errors.pop(name, None)
            records = reply.get("records")
            if isinstance(records, list):
                for rec in records[:POLL_BATCH]:
                    if isinstance(rec, dict):
                        _offer(send, _line(rec), state)
            dropped = reply.get("dropped")
            if isinstance(dropped, int):
                state.remote_dropped[name] = dropped

    # ---- a peer's poll ------------------------------------------------------------------------

    async def serve_peer(self, stream: SealedStream, src: Address, body: bytes) -> None:
        try:
            data = json.loads(body)
            sid = data["id"]
            if not isinstance(sid, str) or not 0 < len(sid) <= 64:
                raise ValueError("id")
            flt = parse_filter(data["filter"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError("tap", "malformed tap poll") from exc
        now_s = trio.current_time()
        key = (src.host, sid)
        session = self.remote.get(key)
        if session is None:
            if len(self.remote) >= MAX_REMOTE_TAPS:
                await stream.send(json.dumps({"error": "too_many_taps"}).encode())
                return
            tap = Tap(flt)
            if not self._open(tap):
                await stream.send(json.dumps({"error": "no_proxy"}).encode())
                return
            session = self.remote[key] = _Session(tap, now_s, now_s)
        session.polled_s = now_s
        tap = session.tap
        records: list[RequestRecord] = []
        wait_s = min(POLL_WAIT_S, self.agent.transport.stream_timeout_s / 2)
        with trio.move_on_after(wait_s):
            records.append(await tap.receive.receive())
        while len(records) < POLL_BATCH:
            try:
                records.append(tap.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        session.polled_s = trio.current_time()
        reply = {"node": self.agent.settings.name, "records": [r.to_json() for r in records],
                 "dropped": tap.dropped, "skipped": tap.skipped}  # fmt: skip
        await stream.send(json.dumps(reply).encode())


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _offer(send: trio.MemorySendChannel[bytes], line: bytes, state: _Fanout) -> None:
    try:
        send.send_nowait(line)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        state.dropped += 1


__all__ = ["MAX_TAPS", "TAP_MAX_S", "TAP_PATH", "TapHub", "filter_fields", "parse_filter"]
