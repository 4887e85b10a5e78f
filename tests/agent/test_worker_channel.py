"""The proxy workers' control channel: framing, and the agent's checks on what a worker says."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from gossipmesh.agent.catalog import Catalog, TableInputs
from gossipmesh.agent.worker_channel import (
    MAX_REPORT_BYTES,
    TABLE,
    AuditEvent,
    ChannelError,
    FrameReader,
    Ready,
    Snapshot,
    decode_command,
    decode_report,
    encode_command,
    encode_report,
    frame,
)
from gossipmesh.proxy.table import Endpoint


def body(*parts: Any) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


def test_frames_come_out_whole_however_the_bytes_are_cut() -> None:
    data = frame(b"one") + frame(b"") + frame(b"three")
    reader = FrameReader(100)
    out = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert out == [b"one", b"", b"three"]
    assert reader.buf == bytearray()


def test_an_oversized_length_is_refused_before_buffering() -> None:
    reader = FrameReader(MAX_REPORT_BYTES)
    with pytest.raises(ChannelError, match="frame of"):
        reader.feed((MAX_REPORT_BYTES + 1).to_bytes(4, "big"))


def test_reports_round_trip() -> None:
    for report in (
        Ready(1234),
        Snapshot(7, {"requests": []}),
        AuditEvent("mesh_peer_refused", {"reason": "revoked", "n": 3, "ok": False, "x": None}),
    ):
        (raw,) = FrameReader(MAX_REPORT_BYTES).feed(encode_report(report))
        assert decode_report(raw) == report


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never used in msgpack
        b"",
        body(),
        body("ready"),
        body("ready", -1),
        body("ready", True),
        body("ready", 2**40),
        body("snapshot", 1, [1, 2]),
        body("snapshot", -1, {}),
        body("audit", "Bad Event", {}),
        body("audit", "ok", {"k": [1, 2]}),
        body("audit", "ok", {"k": {"a": 1}}),
        body("audit", "ok", {"BAD KEY": 1}),
        body("audit", "ok", {f"k{i}": i for i in range(40)}),
        body("audit", "ok", {"k": "x" * 5000}),  # a string past MAX_TEXT
        body("setup", b"\x80\x04pickle"),  # an agent -> worker kind: never accepted back
        body("ready", msgpack.ExtType(1, b"x")),
        msgpack.packb({"kind": "ready"}),
        msgpack.packb([1, 2]),
    ],
)
def test_a_hostile_report_is_refused(raw: bytes) -> None:
    with pytest.raises(ChannelError):
        decode_report(raw)


def test_no_report_is_ever_unpickled() -> None:
    """A pickle inside a report is just bytes to the agent, refused as a field of no kind."""
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    for raw in (evil, body("snapshot", 1, evil), body("audit", "x", {"k": evil})):
        with pytest.raises(ChannelError):
            decode_report(raw)


def test_commands_carry_the_proxy_inputs() -> None:
    """The table travels as its inputs and is built alike on both sides: the built table holds
    the compiled build's objects, which do not pickle (the compiled CI run holds this to the
    real thing through test_proxy_workers.py)."""
    ep = Endpoint("n2", "10.0.0.2", 80)
    inputs = TableInputs(Catalog(endpoints={"api": (ep,)}), 3, 1_700_000_000_000)
    (raw,) = FrameReader(2**20).feed(encode_command(TABLE, inputs))
    kind, got = decode_command(raw)
    assert kind == TABLE
    assert got == inputs
    table, mine = got.table(), inputs.table()
    assert (table.services, table.clusters, table.version) == (mine.services, mine.clusters, 3)
