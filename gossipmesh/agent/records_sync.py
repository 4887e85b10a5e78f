"""Spreading node-owned records: keys from SWIM certificates, gossip for speed, push-pull for repair.

Theory of operation
-------------------
Each agent writes exactly one record, its own (``gossipmesh.crdt.records``): its service
instances, their health and its inbound proxy address, signed with its node key (the key of its
node certificate, ``agent.identity``) under a version taken from the wall clock. Everyone else
only stores the highest version per owner that verifies, so there is nothing to merge and no
conflict to resolve; what this module does is get every record everywhere, quickly and for sure.

Keys. A receiver verifies against the owner's node certificate as SWIM holds it: every member
snapshot carries the certificate its signed alive claim came with (DESIGN-11 D3), so a member
listener feeds ``RecordKeys``. Nobody can speak for another node in SWIM, so nobody can publish a
key for it either: a forged record names a certificate that is not the owner's, or carries a
signature the owner's key did not make, and is refused (the attack of issue 11, a forged alive
plus a record with the attacker's proxy address, fails at both steps). A member that comes back
with a new certificate (re-issued) brings it in its new alive claim; records signed under it wait
for it (``unknown_owner``) and are taken then. The owner's SWIM metadata carries its proxy
addresses and current record version ``rv`` (msgpack, well under SWIM's 512-byte limit), no key.

Spread, fast path. On every change the owner gossips ``b"R" + record``: piggybacked on SWIM
messages (``queue_broadcast``: transmit-limited, re-gossiped by first receivers) and sent directly
to 3 random members (``send_user_message``), so most of the cluster has it within a gossip round
or two. The first byte tags the payload: ``R`` is ours, ``C`` belongs to the config replica, and
anything else is ignored here. A record too large for one packet skips gossip and is pushed by the
repair path to a few members at once.

Spread, repair path. Gossip is lossy and a node that was partitioned away missed it, so every few
seconds (jittered) each agent runs a ``records-sync`` stream with one random alive member: it
sends its ``versions()`` (owner → version), the peer answers with every record it holds that is
newer plus its own versions, and the initiator sends back whatever the peer lacks. Both sides are
in sync after one round trip. A sync is also run promptly, out of turn, with a member that just
joined or came back (join, heal) and with one whose metadata advertises a record version newer than
ours (``rv``): metadata spreads with membership, so it tells us what we are missing.

Ordering. A record can arrive before its owner's certificate (gossip races membership). Such a
record is ``unknown_owner``: it is kept in a small bounded pending set (newest version per owner,
oldest evicted past ``MAX_PENDING``) and offered again when that owner's certificate arrives.

Reaping. When SWIM reaps a member (gone for good), its record is dropped; ``RecordTable`` keeps a
version floor so a late copy still in gossip cannot resurrect it. Until then a dead node's record
stays in the table and the catalog simply does not route to it.

Everything observable is counted in ``agent.counters`` under ``records.*`` (outcomes of each offer,
decode failures, pending evictions, syncs), so ``/v1/health`` and ``/metrics`` show forgeries and
stale copies instead of hiding them. All handlers run in the agent's owner task or in plain trio
tasks of one process: no locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from gossipmesh.agent.events import wall_ms
from gossipmesh.config.identity import RecordKeys, RecordSigner
from gossipmesh.crdt.records import (
    RecordBody,
    RecordTable,
    SignedRecord,
    decode_record,
    encode_record,
    make_record,
    next_version,
)
from gossipmesh.errors import DecodeError, LimitExceededError
from gossipmesh.identity.membership import VerificationMemo
from gossipmesh.ids import Address
from gossipmesh.swim.member import MemberState

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent, MemberEvent
    from gossipmesh.agent.streams import SealedStream

RECORD_TAG = b"R"
SYNC_KIND = "records-sync"
GOSSIP_FANOUT = 3  # direct sends per change, on top of piggybacked gossip
SYNC_INTERVAL_S = 3.0  # mean; each wait is drawn from [0.5, 1.5] x this
MAX_PENDING = 256  # records waiting for their owner's key
MAX_WANTED = 64  # members queued for an out-of-turn sync
MAX_SYNC_OWNERS = 65536  # entries in a versions map we accept
MAX_SYNC_RECORDS = 4096  # records in one sync frame
MAX_META_KEYS = 16


# ---------------------------------------------------------------------------------------------
# SWIM metadata


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What a node says about itself in SWIM metadata (its key is in its certificate)."""

    inbound: tuple[str, int] | None = None
    outbound: tuple[str, int] | None = None
    record_version: int = 0


def encode_meta(meta: NodeMeta) -> bytes:
    return msgpack.packb(
        {
            "in": None if meta.inbound is None else list(meta.inbound),
            "out": None if meta.outbound is None else list(meta.outbound),
            "rv": meta.record_version,
        },
        use_bin_type=True,
    )


def decode_meta(data: bytes) -> NodeMeta:
    """Strict: ``DecodeError`` for anything that is not our metadata. Unknown keys are allowed
    (a newer agent may add some, an older one sent ``pk``); missing optional ones default."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as e:
        raise DecodeError("meta_msgpack", type(e).__name__) from None
    if not isinstance(raw, dict) or len(raw) > MAX_META_KEYS:
        raise DecodeError("meta_malformed", "not a map")
    rv = raw.get("rv", 0)
    if isinstance(rv, bool) or not isinstance(rv, int) or not 0 <= rv < 2**63:
        raise DecodeError("meta_malformed", "rv")
    return NodeMeta(_hostport(raw.get("in"), "in"), _hostport(raw.get("out"), "out"), rv)


def _hostport(value: Any, what: str) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    raise DecodeError("meta_malformed", what)


# ---------------------------------------------------------------------------------------------
# Sync frames


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack_map(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as e:
        raise DecodeError("records_sync", f"{what}: {type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise DecodeError("records_sync", f"{what}: not a map")
    return raw


def _versions(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_SYNC_OWNERS:
        raise DecodeError("records_sync", "versions")
    for owner, version in value.items():
        if not isinstance(owner, str) or isinstance(version, bool) or not isinstance(version, int):
            raise DecodeError("records_sync", "versions entry")
    return value


def _record_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_SYNC_RECORDS:
        raise DecodeError("records_sync", "records")
    if not all(isinstance(r, bytes) for r in value):
        raise DecodeError("records_sync", "record entry")
    return value


# ---------------------------------------------------------------------------------------------


class RecordSync:
    """Owns the node's ``RecordTable`` and keeps it converged with every other agent's.

    Construct before ``agent.run`` (it registers a member listener, a user-message handler and the
    ``records-sync`` stream kind, so nothing that arrives early is missed); then run ``run`` in a
    nursery once the agent is up. ``on_change()`` is called (synchronously) whenever the table
    changed, so the caller can rebuild its catalog.
    """

    def __init__(self, agent: Agent, on_change: Callable[[], None]) -> None:
        self.agent = agent
        self.name = agent.settings.name
        credentials = agent.identity.credentials
        self.sign = RecordSigner(credentials)
        self.keys = RecordKeys(credentials.cluster, VerificationMemo(agent.identity.trust), wall_ms)
        self.keys.learn(self.name, credentials.cert_der)
        self.table = RecordTable(self.keys.verify)
        self._on_change = on_change
        self._pending: dict[str, SignedRecord] = {}
        self._wanted: dict[str, Address] = {}  # member name -> gossip address, insertion order
        self._wanted_event: trio.Event | None = None
        self._version = 0
        self._meta = NodeMeta()
        agent.add_member_listener(self._on_member)
        agent.add_user_message_handler(self._on_user_message)
        agent.register_stream_handler(SYNC_KIND, self._serve_sync)

    @property
    def version(self) -> int:
        """The version of the record this node last published (0: none yet)."""
        return self._version

    def _count(self, what: str, n: int = 1) -> None:
        self.agent.counters[f"records.{what}"] += n

    # ---- publishing -------------------------------------------------------------------------

    async def publish(
        self,
        body: RecordBody,
        inbound: tuple[str, int] | None = None,
        outbound: tuple[str, int] | None = None,
    ) -> SignedRecord:
        """Sign ``body`` under the next version, store it, advertise it in metadata, gossip it."""
        self._version = next_version(self._version, wall_ms())
        record = make_record(self.name, self._version, body, self.sign)
        self._accept(record)
        self._meta = NodeMeta(inbound, outbound, self._version)
        meta = encode_meta(self._meta)
        await self.agent.call(lambda node, now: (None, node.update_meta(meta, now)))
        payload = RECORD_TAG + encode_record(record)
        try:
            await self.agent.queue_broadcast(payload)
            await self.agent.send_user_message(payload, GOSSIP_FANOUT)
            self._count("gossiped")
        except LimitExceededError:
            # Too big for a packet: push it over the sync stream to a few members instead; they
            # pass it on through their own periodic syncs.
            self._count("too_big_for_gossip")
            for member in await self._alive_peers(GOSSIP_FANOUT):
                self._want(member.name, member.address)
        return record

    # ---- receiving --------------------------------------------------------------------------

    def _accept(self, record: SignedRecord) -> None:
        result = self.table.offer(record)
        self._count(result.outcome)
        if result.outcome == "unknown_owner":
            self._park(record)
        if result.changed:
            held = self._pending.get(record.owner)
            if held is not None and held.version <= record.version:
                del self._pending[record.owner]
            self._on_change()

    def _park(self, record: SignedRecord) -> None:
        held = self._pending.get(record.owner)
        if held is not None:
            if held.version >= record.version:
                return
            del self._pending[record.owner]  # re-insert: newest owners are evicted last
        elif len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
            self._count("pending_evicted")
        self._pending[record.owner] = record

    def _accept_bytes(self, data: bytes) -> None:
        try:
            record = decode_record(data)
        except DecodeError as exc:
            self._count(f"decode_error.{exc.reason}")
            return
        self._accept(record)

    def _on_user_message(self, src: Address, payload: bytes) -> None:
        if not payload.startswith(RECORD_TAG):
            return  # b"C" is the config replica's; anything else is not ours either
        self._accept_bytes(payload[1:])

    def _on_member(self, event: MemberEvent) -> None:
        name = event.name
        if name == self.name:
            return
        if event.kind == "reap":
            self.keys.forget(name)
            self._pending.pop(name, None)
            self._wanted.pop(name, None)
            if self.table.reap(name):
                self._on_change()
            return
        if event.cert or event.meta:
            self.learn(name, event.meta, event.address, event.cert)
        if event.kind == "join" and event.address is not None:
            # A new or returning member (a heal looks like this too): exchange records now
            # rather than at the next periodic sync.
            self._want(name, event.address)
        # Its state changed (suspect, dead, alive): the catalog's view of its instances changes.
        self._on_change()

    def learn(self, name: str, meta_bytes: bytes, address: Address | None, cert: bytes) -> None:
        """Take a member's certificate (from SWIM, which checked it) and the record-version hint
        in its metadata."""
        if cert and self.keys.learn(name, cert):
            parked = self._pending.pop(name, None)
            if parked is not None:
                self._accept(parked)
        if not meta_bytes:
            return
        try:
            meta = decode_meta(meta_bytes)
        except DecodeError as exc:
            self._count(f"meta_invalid.{exc.reason}")
            return
        held = self.table.get(name)
        if address is not None and meta.record_version > (held.version if held else 0):
            self._want(name, address)

    # ---- anti-entropy -----------------------------------------------------------------------

    def _want(self, name: str, address: Address) -> None:
        if name not in self._wanted and len(self._wanted) >= MAX_WANTED:
            self._count("sync_wanted_dropped")
            return
        self._wanted[name] = address
        if self._wanted_event is not None:
            self._wanted_event.set()

    async def _alive_peers(self, k: int) -> list[Any]:
        peers = [
            m
            for m in await self.agent.members()
            if m.name != self.name and m.state is MemberState.ALIVE
        ]
        return self.agent.rng.sample(peers, min(k, len(peers)))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Periodic syncs with a random member; out-of-turn ones as members are wanted."""
        self._wanted_event = trio.Event()
        if self._wanted:
            self._wanted_event.set()
        task_status.started()
        rng = self.agent.rng
        while True:
            with trio.move_on_after(SYNC_INTERVAL_S * (0.5 + rng.random())):
                await self._wanted_event.wait()
            self._wanted_event = trio.Event()
            if self._wanted:
                targets = list(self._wanted.values())
                self._wanted.clear()
            else:
                targets = [m.address for m in await self._alive_peers(1)]
            for address in targets:
                await self.sync_with(address)

    async def sync_with(self, address: Address) -> bool:
        """One push-pull of records with the agent at ``address``; False if it failed."""
        try:
            with trio.fail_after(self.agent.stream_timeout_s):
                request = _pack({"v": self.table.versions()})
                stream = await self.agent.open_stream(address, SYNC_KIND, request)
                try:
                    reply = _unpack_map(await stream.receive(), "reply")
                    for data in _record_list(reply.get("r")):
                        self._accept_bytes(data)
                    theirs = _versions(reply.get("v"))
                    push = self.table.newer_than(theirs)[:MAX_SYNC_RECORDS]
                    await stream.send(_pack({"r": [encode_record(r) for r in push]}))
                finally:
                    await stream.aclose()
        except (
            OSError,
            EOFError,
            DecodeError,
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            self._count("sync_failed")
            return False
        self._count("sync_ok")
        return True

    async def _serve_sync(self, stream: SealedStream, src: Address, body: bytes) -> None:
        # Errors (bad frames, timeouts, a peer hanging up) are counted by the runtime's stream
        # dispatcher, which owns the stream and its deadline.
        theirs = _versions(_unpack_map(body, "request").get("v"))
        newer = self.table.newer_than(theirs)[:MAX_SYNC_RECORDS]
        await stream.send(
            _pack({"r": [encode_record(r) for r in newer], "v": self.table.versions()})
        )
        push = _unpack_map(await stream.receive(), "push")
        for data in _record_list(push.get("r")):
            self._accept_bytes(data)
