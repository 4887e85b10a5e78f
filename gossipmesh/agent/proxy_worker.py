"""``python -m gossipmesh.agent.proxy_worker FD INDEX``: one proxy worker process of an agent.

Theory of operation
-------------------
With ``--proxy-workers N`` the agent runs N-1 of these (agent/worker_pool.py) beside its own
proxy. Each is a fresh interpreter (not a fork of the agent's trio process) with its own trio
loop and its own ``Proxy(reuse_port=True)`` on the addresses the agent's proxy bound, so the
kernel spreads new connections over N processes and the data plane uses N cores. It shares
nothing with the others: pools, outlier state, retry budgets and counters are per process.

Everything it knows comes from its agent over the control channel on descriptor FD
(agent/worker_channel.py): first a ``WorkerSetup`` (addresses, local services, route table,
policies, workload credentials, trust store contents, the catalog's "node hosts service"
facts), then every change to those, metrics requests and ``stop``. Peers' certificates are
judged by its own ``MeshAuthority`` over a copy of the agent's trust store, replaced whenever the
agent sends new trust (which makes ``PeerWatch`` recheck every live connection, as in the agent).
With ``--access-log`` it appends its own requests' lines to the same file (access_log.py says
why they do not interleave). It answers with ``ready`` once serving, ``snapshot`` for each metrics request and ``audit`` for
each security log line (the agent writes them; at most ``AUDIT_QUEUE`` waiting, the rest counted
as dropped in the next snapshot's log line). It never opens the agent's files or keys beyond the
credentials it is handed.

It dies with its agent twice over: the kernel sends it SIGTERM when the agent's trio thread
dies (``PR_SET_PDEATHSIG``, set before exec by dataplane/process.py's ``Child``), and it exits
when the control channel reaches end of file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sys
from typing import Any

import trio

from gossipmesh.agent.access_log import access_log_fd
from gossipmesh.agent.peer_authority import MeshAuthority
from gossipmesh.agent.worker_channel import (
    CREDENTIALS,
    HOSTS,
    MAX_COMMAND_BYTES,
    MAX_TEXT,
    METRICS,
    SETUP,
    STOP,
    TABLE,
    TRUST,
    AuditEvent,
    FrameReader,
    Ready,
    Snapshot,
    Trust,
    WorkerSetup,
    decode_command,
    encode_report,
)
from gossipmesh.agent.worker_metrics import snapshot
from gossipmesh.identity.truststore import TrustStore
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.mtls import MeshTls
from gossipmesh.proxy.record_sinks import AccessLog
from gossipmesh.proxy.server import Proxy

AUDIT_QUEUE = 256
READ_BYTES = 256 * 1024

log = logging.getLogger("gossipmesh.proxy")


class TrustCopy:
    """The worker's copy of the agent's trust store (``MeshAuthority`` reads ``.trust``)."""

    def __init__(self, trust: Trust) -> None:
        self.trust = TrustStore(trust[0], trust[1], trust[2])


class Worker:
    """One worker's proxy and the commands that change it."""

    def __init__(self, setup: WorkerSetup, outbox: trio.MemorySendChannel[bytes]) -> None:
        self.outbox = outbox
        self.audit_dropped = 0
        self.trust = TrustCopy(setup.trust)
        self.authority = MeshAuthority(lambda: self.trust)
        self.authority.update_hosts({n: frozenset(s) for n, s in setup.hosts.items()})
        mtls = MeshTls(setup.credentials, self.authority, plaintext_inbound=setup.plaintext_inbound)
        self.proxy = Proxy(
            setup.table.table(),
            outbound=setup.outbound,
            inbound=setup.inbound,
            local_services=setup.local_services,
            tcp_listeners=setup.tcp,
            rng=random.Random(setup.seed),
            metrics=ProxyMetrics(worker=str(setup.index)),
            reuse_port=True,
            mtls=mtls,
            outbound_listeners=setup.outbound_services,
            audit=self.audit,
        )
        self.proxy.update_policies(setup.table.policies())
        self.proxy.requests.node = setup.node
        self.access: AccessLog | None = None
        if setup.access_log is not None:
            fd = access_log_fd(setup.access_log)
            ratio, per_s = setup.access_log_sample_ratio, setup.access_log_max_lines_per_s
            self.access = AccessLog(fd, ratio, per_s)
            self.proxy.requests.add(self.access)

    def audit(self, event: str, fields: dict[str, Any]) -> None:
        clean = {k: _scalar(v) for k, v in list(fields.items())[:32]}
        try:
            self.outbox.send_nowait(encode_report(AuditEvent(event, clean)))
        except trio.WouldBlock:
            self.audit_dropped += 1

    async def apply(self, kind: str, payload: Any) -> bool:
        """Carry out one command; False for ``stop``."""
        proxy = self.proxy
        if kind == TABLE:
            proxy.update_table(payload.table())
            proxy.update_policies(payload.policies())
        elif kind == CREDENTIALS:
            proxy.update_credentials(payload)
        elif kind == TRUST:
            self.trust = TrustCopy(payload)  # a new store: the authority's version moves on
        elif kind == HOSTS:
            self.authority.update_hosts({n: frozenset(s) for n, s in payload.items()})
        elif kind == METRICS:
            if self.audit_dropped:
                log.warning("audit lines dropped: %d (the channel was full)", self.audit_dropped)
                self.audit_dropped = 0
            data = snapshot(proxy.metrics, proxy.endpoint_states())
            await self.outbox.send(encode_report(Snapshot(payload, data)))
        elif kind == STOP:
            return False
        else:
            log.warning("unknown command %r ignored", kind)
        return True


def _scalar(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, int | float | bool):
        return value
    return str(value)[:MAX_TEXT]


async def commands(stream: trio.SocketStream) -> Any:
    """The agent's commands, in order, until end of file."""
    reader = FrameReader(MAX_COMMAND_BYTES)
    while data := await stream.receive_some(READ_BYTES):
        for body in reader.feed(data):
            yield decode_command(body)


async def writer(stream: trio.SocketStream, outbox: trio.MemoryReceiveChannel[bytes]) -> None:
    async for data in outbox:
        await stream.send_all(data)


async def serve(sock: socket.socket) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    send, receive = trio.open_memory_channel[bytes](AUDIT_QUEUE)
    incoming = commands(stream)
    first = await anext(incoming, None)
    if first is None:
        return  # the agent went away before saying anything
    kind, setup = first
    if kind != SETUP or not isinstance(setup, WorkerSetup):
        raise SystemExit(f"proxy worker: expected {SETUP}, not {kind!r}")
    worker = Worker(setup, send)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.proxy.serve)
        if worker.access is not None:
            nursery.start_soon(worker.access.run)
        nursery.start_soon(writer, stream, receive)
        await send.send(encode_report(Ready(os.getpid())))
        async for kind, payload in incoming:
            if not await worker.apply(kind, payload):
                break
        # ``stop`` or end of file (the agent is gone): serve no more.
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit() or not argv[1].isdigit():
        sys.stderr.write("usage: python -m gossipmesh.agent.proxy_worker FD INDEX\n")
        return 2
    fd, index = int(argv[0]), int(argv[1])
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"proxy worker {index}: %(message)s"
    )
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
