"""The gossip port's two transports: sealed UDP datagrams and sealed TCP streams.

Theory of operation
-------------------
One port number serves both. ``bind`` opens the UDP socket, the TCP listeners on the same port
and the admin API's listeners, and works out the address to advertise; any failure is an
``AgentStartError`` naming what could not be bound, with whatever was opened closed again.

UDP: every datagram is sealed with the keyring (``crypto.py``) under the cluster's UDP associated
data. The receive loop drops, and counts, anything over the packet size (before decrypting),
anything the fault injector blocks, anything that fails to open, and anything the owner's input
queue has no room for: a flood costs CPU but never memory, and SWIM tolerates the loss.

TCP: a stream's frames are sealed likewise (``streams.py``). The first frame names a stream kind;
the handler registered for it owns the stream. The port's limits (``stream_limits.py``, where the
numbers are derived) keep a flood from locking members out: at most ``unverified_max`` streams
wait for a first frame that opens, and one more closes the oldest of them; at most
``verified_max`` are served past it, the last ``reserved_for_priority`` of those only for joins and
key operations; frames are capped and their bytes come from one ``ByteBudget``. The first frame
must arrive, and the handler finish, within ``stream_timeout_s``. A stream that breaks a rule, or
whose handler's input made the core raise (``CoreError``), is closed and counted under
``dropped.stream_*``.

``filter`` (set through ``Agent.transport_filter`` by ``faults.py``) drops traffic to or from an
address on every path; ``None``, the default, costs one attribute check per packet. ``loss``
(also from ``faults.py``) loses a share of the datagrams, in and out; TCP streams are not touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from gossipmesh.agent.settings import AgentSettings
from gossipmesh.agent.stream_limits import PRIORITY_KINDS, ByteBudget, StreamLimits
from gossipmesh.agent.streams import SealedStream, decode_first, encode_first
from gossipmesh.crypto import Keyring
from gossipmesh.errors import CoreError, DecodeError, GossipmeshError
from gossipmesh.ids import Address

MAX_UDP_BYTES = 65536  # receive buffer; datagrams over the configured packet size are dropped

StreamHandler = Callable[[SealedStream, Address, bytes], Awaitable[None]]


class AgentStartError(GossipmeshError):
    """The agent could not start (a port in use, an unusable address); the message says which."""


@dataclass(slots=True)
class Bound:
    """What ``bind`` opened, and the addresses to advertise."""

    udp: trio.socket.SocketType
    gossip_listeners: list[trio.SocketListener]
    admin_listeners: list[trio.SocketListener]
    address: Address  # the gossip address other members use
    admin_address: Address


async def bind(s: AgentSettings) -> Bound:
    udp = trio.socket.socket(
        trio.socket.AF_INET6 if ":" in s.bind.host else trio.socket.AF_INET,
        trio.socket.SOCK_DGRAM,
    )
    try:
        await udp.bind(s.bind.as_tuple())
    except OSError as exc:
        udp.close()
        raise AgentStartError(f"cannot bind UDP {s.bind}: {exc.strerror or exc}") from exc
    port = udp.getsockname()[1]
    try:
        tcp = await trio.open_tcp_listeners(port, host=s.bind.host)
    except OSError as exc:
        udp.close()
        raise AgentStartError(
            f"cannot bind TCP {Address(s.bind.host, port)}: {exc.strerror or exc}"
        ) from exc
    try:
        admin = await trio.open_tcp_listeners(s.admin.port, host=s.admin.host)
    except OSError as exc:
        udp.close()
        for listener in tcp:
            await listener.aclose()
        raise AgentStartError(f"cannot bind admin API {s.admin}: {exc.strerror or exc}") from exc
    admin_port = admin[0].socket.getsockname()[1]
    if s.advertise is not None:
        address = Address(s.advertise.host, s.advertise.port or port)
    elif s.bind.host in ("0.0.0.0", "::"):
        address = Address(routable_ip(), port)
    else:
        address = Address(s.bind.host, port)
    return Bound(udp, tcp, admin, address, Address(s.admin.host, admin_port))


def routable_ip() -> str:
    """The address this host would use to reach the outside; no packet is sent (UDP connect)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class Transport:
    """Sealed datagrams and streams on the gossip port (see the module docstring)."""

    def __init__(
        self,
        keyring: Keyring,
        cluster: str,
        counters: Counter[str],
        *,
        max_packet_bytes: int,
        limits: StreamLimits,
        stream_timeout_s: float,
    ) -> None:
        self.keyring = keyring
        self.counters = counters
        self.max_packet_bytes = max_packet_bytes  # sealed: the core's packet size plus overhead
        self.limits = limits
        self.max_frame_bytes = limits.frame_max_bytes
        self.budget = ByteBudget(limits.buffer_max_bytes)
        self.stream_timeout_s = stream_timeout_s
        self.udp_aad = b"gossipmesh/udp/" + cluster.encode()
        self.stream_aad = b"gossipmesh/stream/" + cluster.encode()
        self.filter: Callable[[Address], bool] | None = None
        self.loss: Callable[[], bool] | None = None  # True: lose this datagram
        # Told (address, "udp"|"tcp", reason) about every message no installed key opens.
        self.on_open_failure: Callable[[Address, str, str], None] | None = None
        self.udp: trio.socket.SocketType | None = None  # set once bound
        self._handlers: dict[str, StreamHandler] = {}
        # Streams still waiting for a first frame that opens, oldest first, each with the cancel
        # scope that evicts it; and how many are served past that point.
        self._unverified: dict[int, trio.CancelScope] = {}
        self._next_id = 0
        self.verified = 0

    # ---- UDP ---------------------------------------------------------------------------------

    async def send_packet(self, to: Address, data: bytes) -> None:
        assert self.udp is not None
        if self.filter is not None and self.filter(to):
            self.counters["faults.udp_out"] += 1
            return
        if self.loss is not None and self.loss():
            self.counters["faults.udp_lost"] += 1
            return
        try:
            await self.udp.sendto(self.keyring.seal(data, self.udp_aad), to.as_tuple())
            self.counters["udp.sent"] += 1
        except OSError:
            self.counters["udp.send_errors"] += 1

    async def receive_packets(self, deliver: Callable[[Address, bytes], None]) -> None:
        """Open every datagram that passes the checks and hand it to ``deliver`` (which must not
        block: it queues the packet for the owner task or drops it)."""
        assert self.udp is not None
        udp = self.udp
        counters = self.counters
        while True:
            try:
                sealed, addr = await udp.recvfrom(MAX_UDP_BYTES)
            except OSError:
                # ICMP port-unreachable from a dead peer surfaces here on some platforms.
                counters["udp.recv_errors"] += 1
                continue
            if len(sealed) > self.max_packet_bytes:
                counters["dropped.oversize"] += 1
                continue
            if self.filter is not None and self.filter(Address(*addr[:2])):
                counters["faults.udp_in"] += 1
                continue
            if self.loss is not None and self.loss():
                counters["faults.udp_lost"] += 1
                continue
            try:
                data = self.keyring.open(sealed, self.udp_aad)
            except DecodeError as exc:
                counters[f"dropped.{exc.reason}"] += 1
                if self.on_open_failure is not None:
                    self.on_open_failure(Address(addr[0], addr[1]), "udp", exc.reason)
                continue
            deliver(Address(addr[0], addr[1]), data)

    # ---- TCP streams -------------------------------------------------------------------------

    def register_stream_handler(self, kind: str, handler: StreamHandler) -> None:
        if kind in self._handlers:
            raise ValueError(f"stream kind {kind!r} already registered")
        encode_first(kind, b"")  # validates the kind
        self._handlers[kind] = handler

    async def open_stream(self, to: Address, kind: str, body: bytes) -> SealedStream:
        if self.filter is not None and self.filter(to):
            self.counters["faults.tcp_out"] += 1
            raise ConnectionRefusedError(f"fault injection drops {to}")
        tcp = await trio.open_tcp_stream(to.host, to.port)
        stream = SealedStream(tcp, self.keyring, self.stream_aad, self.max_frame_bytes)
        try:
            await stream.send(encode_first(kind, body))
        except BaseException:
            await tcp.aclose()
            raise
        return stream

    async def serve_streams(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._handle_stream, listeners)

    @property
    def unverified(self) -> int:
        return len(self._unverified)

    async def _handle_stream(self, tcp: trio.SocketStream) -> None:
        counters = self.counters
        if len(self._unverified) >= self.limits.unverified_max:
            # Close the oldest waiting stream, never the newcomer: a member sends its first
            # frame at once, so slow sockets only ever push each other out.
            oldest = next(iter(self._unverified))
            self._unverified.pop(oldest).cancel()
            counters["dropped.stream_evicted"] += 1
        self._next_id += 1
        sid = self._next_id
        scope = trio.CancelScope()
        self._unverified[sid] = scope
        verified = False
        async with tcp:
            try:
                try:
                    host, port = tcp.socket.getpeername()[:2]
                except OSError:
                    return
                src = Address(host, port)
                if self.filter is not None and self.filter(Address(host, 0)):
                    counters["faults.tcp_in"] += 1
                    return
                stream = SealedStream(
                    tcp, self.keyring, self.stream_aad, self.max_frame_bytes, self.budget
                )
                with trio.fail_after(self.stream_timeout_s):
                    with scope:
                        first = await stream.receive()
                    if scope.cancelled_caught:
                        return  # evicted (counted by the evictor)
                    self._unverified.pop(sid, None)
                    kind, body = decode_first(first)
                    handler = self._handlers.get(kind)
                    if handler is None:
                        raise DecodeError("stream_kind", f"unknown stream kind {kind!r}")
                    room = self.limits.verified_max - self.verified
                    if kind not in PRIORITY_KINDS:
                        room -= self.limits.reserved_for_priority
                    if room <= 0:
                        counters["dropped.stream_limit"] += 1
                        return
                    self.verified += 1
                    verified = True
                    counters[f"stream.{kind}"] += 1
                    await handler(stream, src, body)
            except DecodeError as exc:
                counters[f"dropped.stream_{exc.reason}"] += 1
                if exc.reason == "decrypt" and self.on_open_failure is not None:
                    self.on_open_failure(src, "tcp", exc.reason)
            except (trio.TooSlowError, EOFError):
                counters["dropped.stream_timeout"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                counters["dropped.stream_broken"] += 1
            except CoreError:
                # The core raised on what the handler fed it: a bug, logged with its traceback
                # and counted where the agent calls the core. Close this stream, serve the next.
                counters["dropped.stream_core_error"] += 1
            finally:
                self._unverified.pop(sid, None)
                if verified:
                    self.verified -= 1
