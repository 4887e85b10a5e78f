"""The agent's pure-ish pieces alone: settings, data dir, timer heap, sealed stream frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from gossipmesh.agent.settings import AgentSettings, load_settings
from gossipmesh.agent.store import DataDir
from gossipmesh.agent.streams import SealedStream, decode_first, encode_first
from gossipmesh.agent.timers import TimerHeap
from gossipmesh.crypto import Keyring, encode_key
from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address

KEY = bytes(range(32))


def test_settings_defaults_and_flags() -> None:
    s = load_settings({"name": "n1", "bind": "127.0.0.2:8000", "join": ["127.0.0.3", "h:9"]})
    assert s.name == "n1" and s.bind == Address("127.0.0.2", 8000)
    assert s.join == (Address("127.0.0.3", 7946), Address("h", 9))
    assert s.admin == Address("127.0.0.1", 7947) and s.profile == "lan" and s.cluster == "default"
    assert AgentSettings(bind=Address("0.0.0.0", 1)).advertised() == Address("0.0.0.0", 1)


def test_settings_toml_under_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        'name = "from-file"\nprofile = "wan"\ndata-dir = "/tmp/x"\njoin = ["10.0.0.1:7946"]\n'
        f'encrypt = "{encode_key(KEY)}"\n'
    )
    s = load_settings({"name": "from-flag", "profile": None}, cfg)
    assert s.name == "from-flag" and s.profile == "wan" and s.data_dir == Path("/tmp/x")
    assert s.join == (Address("10.0.0.1", 7946),) and s.encrypt == encode_key(KEY)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"profile": "moon"}, "profile"),
        ({"bind": "1.2.3.4:70000"}, "out of range"),
        ({"encrypt": "abc"}, "encrypt"),
        ({"name": ""}, "name"),
        ({"bogus": 1}, "unknown setting"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_settings_rejects(flags: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        load_settings(flags)


def test_settings_bad_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings({}, bad)
    bad.write_text("colour = 'red'")
    with pytest.raises(UsageError, match="unknown setting"):
        load_settings({}, bad)
    with pytest.raises(UsageError, match="cannot read"):
        load_settings({}, tmp_path / "missing.toml")


def test_data_dir_incarnation_rises_per_boot_and_peers_round_trip(tmp_path: Path) -> None:
    store = DataDir(tmp_path / "d")
    first = store.boot_incarnation()
    store.save_incarnation(first + 7)  # refutations during the run
    assert store.boot_incarnation() == first + 8
    assert store.load_peers() == []
    store.save_peers([Address("127.0.0.3", 7946), Address("127.0.0.2", 7946)])
    assert store.load_peers() == [Address("127.0.0.2", 7946), Address("127.0.0.3", 7946)]
    (tmp_path / "d" / "peers.json").write_text("{garbage")
    assert store.load_peers() == []


def test_timer_heap_fires_in_deadline_order() -> None:
    heap = TimerHeap()
    heap.push("b", 20)
    heap.push("a", 10)
    heap.push("c", 20)
    assert heap.next_deadline() == 10
    assert heap.pop_due(9) == []
    assert heap.pop_due(20) == ["a", "b", "c"]
    assert heap.next_deadline() is None and len(heap) == 0


def test_first_frame_kind() -> None:
    assert decode_first(encode_first("pushpull", b"body")) == ("pushpull", b"body")
    for bad in (b"", b"\x00x", b"\x09short", b"\xff" + b"a" * 300):
        with pytest.raises(DecodeError):
            decode_first(bad)
    with pytest.raises(ValueError):
        encode_first("", b"")


async def test_sealed_stream_round_trip_and_limits() -> None:
    left, right = trio.testing.memory_stream_pair()
    ring = Keyring([KEY])
    a = SealedStream(left, ring, b"aad", max_frame_bytes=1024)
    b = SealedStream(right, ring, b"aad", max_frame_bytes=1024)
    await a.send(b"hello")
    await a.send(b"world")
    assert await b.receive() == b"hello"
    assert await b.receive() == b"world"
    # A header announcing more than the limit is rejected before anything is buffered.
    await left.send_all((10_000).to_bytes(4, "big"))
    with pytest.raises(DecodeError, match="oversize"):
        await b.receive()


async def test_sealed_stream_wrong_aad_and_truncation() -> None:
    left, right = trio.testing.memory_stream_pair()
    ring = Keyring([KEY])
    await SealedStream(left, ring, b"cluster-a").send(b"x")
    with pytest.raises(DecodeError, match="decrypt"):
        await SealedStream(right, ring, b"cluster-b").receive()
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"\x00\x00\x00\x40partial")
    await left.aclose()
    with pytest.raises(DecodeError, match="truncated"):
        await SealedStream(right, ring, b"").receive()
