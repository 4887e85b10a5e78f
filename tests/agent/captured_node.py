"""A captured node: an attacker holding the gossip key and one node's credentials (its own).

It crafts datagrams and streams with the real codec and seals them with the real keyring, as a
stolen agent could, but runs no agent: it only sends what a test tells it to. What it can sign is
what the node it captured may sign: its own claims and its own accusations.
"""

from __future__ import annotations

import socket
import struct

from gossipmesh.agent.records_sync import RECORD_TAG, SYNC_KIND, NodeMeta, encode_meta
from gossipmesh.agent.streams import encode_first
from gossipmesh.config.identity import RecordSigner
from gossipmesh.crdt.records import RecordBody, SignedRecord, encode_record, make_record
from gossipmesh.crypto import Keyring
from gossipmesh.identity import NodeCredentials, TrustStore
from gossipmesh.identity.membership import MembershipAuthority, VerificationMemo
from gossipmesh.ids import Address
from gossipmesh.swim.authority import Accusation, AccusationKind, AliveClaim
from gossipmesh.swim.messages import Alive, Dead, Message, Suspect, User, encode
from gossipmesh.swim.state_codec import PushPull
from gossipmesh.swim.state_codec import encode_push_pull as encode_state
from gossipmesh.wire import encode_packet

_LEN = struct.Struct(">I")


class CapturedNode:
    def __init__(
        self, cluster: str, keyring: Keyring, credentials: NodeCredentials, address: Address
    ) -> None:
        self.cluster = cluster
        self.keyring = keyring
        self.credentials = credentials
        self.name = credentials.name
        self.address = address
        trust = TrustStore(cluster, roots=credentials.roots)
        self.auth = MembershipAuthority(credentials, VerificationMemo(trust), _wall_ms)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address.as_tuple())
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    # --- sending ---------------------------------------------------------------------------------

    def send(self, to: Address, *msgs: Message) -> None:
        """One sealed datagram carrying ``msgs`` (a compound packet)."""
        data = encode_packet([encode(m) for m in msgs])
        aad = b"gossipmesh/udp/" + self.cluster.encode()
        self.sock.sendto(self.keyring.seal(data, aad), to.as_tuple())
        self.sent += 1

    def stream(self, to: Address, kind: str, body: bytes, *more: bytes) -> bytes:
        """Open a sealed stream, send the first frame (and ``more``), return the first reply."""
        aad = b"gossipmesh/stream/" + self.cluster.encode()
        with socket.create_connection(to.as_tuple(), timeout=30) as s:
            for frame in (encode_first(kind, body), *more):
                sealed = self.keyring.seal(frame, aad)
                s.sendall(_LEN.pack(len(sealed)) + sealed)
            header = _recv_exactly(s, 4)
            return self.keyring.open(_recv_exactly(s, _LEN.unpack(header)[0]), aad)

    def push_pull(self, to: Address, state: PushPull) -> bytes:
        return self.stream(to, "pushpull", encode_state(state))

    def push_records(self, to: Address, *records: SignedRecord) -> None:
        """Hand records to an agent over its repair path (``records-sync``)."""
        import msgpack

        push = msgpack.packb({"r": [encode_record(r) for r in records]}, use_bin_type=True)
        self.stream(to, SYNC_KIND, msgpack.packb({"v": {}}), push)

    # --- what it may sign: its own word ---------------------------------------------------------

    def own_alive(self, incarnation: int, meta: bytes = b"") -> Alive:
        claim = AliveClaim(self.name, incarnation, self.address, meta)
        return Alive(self.name, incarnation, self.address, meta, self.auth.certificate,
                     self.auth.sign_alive(claim))  # fmt: skip

    def own_leave(self, incarnation: int) -> Dead:
        claim = Accusation(AccusationKind.LEFT, self.name, incarnation, self.name)
        return Dead(self.name, incarnation, self.name, True, self.auth.sign_accusation(claim))

    def suspect(self, name: str, incarnation: int) -> Suspect:
        claim = Accusation(AccusationKind.SUSPECT, name, incarnation, self.name)
        return Suspect(name, incarnation, self.name, self.auth.sign_accusation(claim))

    def dead(self, name: str, incarnation: int) -> Dead:
        claim = Accusation(AccusationKind.DEAD, name, incarnation, self.name)
        return Dead(name, incarnation, self.name, False, self.auth.sign_accusation(claim))

    # --- forgeries: claims for others, signed with the only key it has --------------------------

    def forged_alive(
        self, name: str, incarnation: int, address: Address, meta: bytes, cert: bytes | None = None
    ) -> Alive:
        """``name`` alive at ``address``, under ``cert`` (default: ours), signed by us."""
        claim = AliveClaim(self.name, incarnation, address, meta)
        sig = self.auth.sign_alive(claim)
        return Alive(name, incarnation, address, meta, cert or self.auth.certificate, sig)

    def forged_record(
        self, owner: str, version: int, body: RecordBody, signer: bytes | None = None
    ) -> SignedRecord:
        """A record for ``owner`` signed by us, naming ``signer`` (default: our certificate)."""
        own = make_record(self.name, version, body, RecordSigner(self.credentials))
        return SignedRecord(owner, version, own.body, own.signature, signer or own.signer)

    def record_gossip(self, record: SignedRecord) -> User:
        return User(RECORD_TAG + encode_record(record), True)


def proxy_meta(inbound: Address, record_version: int) -> bytes:
    """SWIM metadata advertising ``inbound`` as the node's proxy and a record version."""
    return encode_meta(NodeMeta(inbound.as_tuple(), None, record_version))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _wall_ms() -> int:
    import time

    return int(time.time() * 1000)
