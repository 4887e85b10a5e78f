"""A proxy worker's handling of its agent's commands (agent/proxy_worker.py), in process: what
each command changes in the worker's proxy and in its judgement of peers."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))

from mtls_helpers import Pki, Wall  # noqa: E402

from gossipmesh.agent.catalog import Catalog, TableInputs  # noqa: E402
from gossipmesh.agent.proxy_worker import Worker  # noqa: E402
from gossipmesh.agent.worker_channel import (  # noqa: E402
    CREDENTIALS,
    HOSTS,
    MAX_REPORT_BYTES,
    METRICS,
    SETUP,
    STOP,
    TABLE,
    TRUST,
    FrameReader,
    Ready,
    Snapshot,
    WorkerSetup,
    decode_report,
    encode_command,
)
from gossipmesh.config.policy import PolicyConfig  # noqa: E402
from gossipmesh.identity import fingerprint  # noqa: E402
from gossipmesh.proxy.table import Endpoint  # noqa: E402


def setup_for(pki: Pki) -> WorkerSetup:
    trust = pki.trust
    return WorkerSetup(
        1, ("127.0.0.1", 0), ("127.0.0.1", 0), {}, {}, {"api": [("127.0.0.1", 9)]}, False, 7,
        TableInputs(Catalog(), 0, 0), pki.credentials("n2", ["api"]),
        (trust.trust_domain, trust.roots, ()), {"n1": ["web"], "n2": ["api"]},
        "n2", None, 1.0, 1000,
    )  # fmt: skip


async def test_each_command_reaches_the_proxy_or_the_authority() -> None:
    pki = Pki(Wall())
    send, receive = trio.open_memory_channel[bytes](8)
    worker = Worker(setup_for(pki), send)
    caller = pki.workload("n1", "web").chain[0]
    assert worker.authority.check_client(caller) != "not_hosting"

    endpoint = Endpoint("n2", "10.0.0.2", 80)
    deny = PolicyConfig("no-web", "api", "deny", from_services=("web",))
    catalog = Catalog(endpoints={"api": (endpoint,)}, policies={deny.name: deny})
    assert await worker.apply(TABLE, TableInputs(catalog, 9, 0))
    assert worker.proxy.table.version == 9
    cluster = worker.proxy.table.cluster_for_service("api")
    assert cluster is not None and cluster.endpoints == (endpoint,)
    rules = worker.proxy.directory.policies.get("api")
    assert rules is not None and [r.name for r in rules.deny] == ["no-web"]
    renewed = pki.credentials("n2", ["api"])
    assert await worker.apply(CREDENTIALS, renewed)
    assert worker.proxy.mtls is not None

    version = worker.authority.version
    assert await worker.apply(HOSTS, {"n2": ["api"]})  # n1 no longer hosts web
    assert worker.authority.version != version
    assert worker.authority.check_client(caller) == "not_hosting"

    version = worker.authority.version
    trust = pki.trust
    revoked = (fingerprint(pki.node("n1").cert_der),)
    assert await worker.apply(HOSTS, {"n1": ["web"], "n2": ["api"]})
    assert await worker.apply(TRUST, (trust.trust_domain, trust.roots, revoked))
    assert worker.authority.version != version  # PeerWatch rechecks every live connection
    assert worker.authority.check_client(caller) == "revoked"

    worker.proxy.metrics.observe("api", "", 200, "inbound", 1000)
    assert await worker.apply(METRICS, 5)
    (raw,) = FrameReader(MAX_REPORT_BYTES).feed(receive.receive_nowait())
    report = decode_report(raw)
    assert isinstance(report, Snapshot) and report.seq == 5
    assert report.data["requests"] == [["api", "", "", "", 200, "inbound", 1]]

    assert not await worker.apply(STOP, None)


async def test_audit_lines_go_to_the_agent_and_a_full_channel_drops_them() -> None:
    pki = Pki(Wall())
    send, receive = trio.open_memory_channel[bytes](1)
    worker = Worker(setup_for(pki), send)
    worker.audit("mesh_peer_refused", {"peer": ("127.0.0.1", 5), "reason": "revoked"})
    worker.audit("mesh_peer_refused", {"reason": "revoked"})  # the channel is full
    (raw,) = FrameReader(MAX_REPORT_BYTES).feed(receive.receive_nowait())
    assert msgpack.unpackb(raw) == [
        "audit", "mesh_peer_refused", {"peer": "('127.0.0.1', 5)", "reason": "revoked"},
    ]  # fmt: skip
    assert worker.audit_dropped == 1


def test_the_worker_process_serves_then_exits_when_its_channel_closes() -> None:
    """The real entry point: setup in, ``ready`` out, and end of file ends it (no signal)."""
    pki = Pki(Wall())
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossipmesh.agent.proxy_worker", str(theirs.fileno()), "1"],
        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    theirs.close()
    try:
        ours.settimeout(30)
        ours.sendall(encode_command(SETUP, setup_for(pki)))
        reader, got = FrameReader(MAX_REPORT_BYTES), []
        while not got:
            got = reader.feed(ours.recv(65536))
        assert decode_report(got[0]) == Ready(proc.pid)
        ours.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_whose_agent_never_spoke_exits_quietly() -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossipmesh.agent.proxy_worker", str(theirs.fileno()), "1"],
        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    theirs.close()
    ours.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == b""
