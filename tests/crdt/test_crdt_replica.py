"""ReplicaCore as a specification: feed it inputs, read the effects it returns.

Each test builds the cores it needs; two cores talk through ``Link``, which carries the bytes of
each exchange leg exactly as a runtime would (no trio, no sockets, no clock).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from crdt_helpers import new_doc, sign

from gossipmesh.crdt.document import Delta
from gossipmesh.crdt.effects import (
    Changed,
    Effect,
    ExchangeKind,
    Gossip,
    OpenExchange,
    Persist,
    Refused,
    SaveSnapshot,
    SaveWriter,
    SendSyncPush,
    SetTimer,
    SyncDone,
    SyncTimer,
)
from gossipmesh.crdt.replica import (
    SPREAD_CONCURRENCY_MAX,
    SYNC_CONCURRENCY_MAX,
    TAG,
    ReplicaConfig,
    ReplicaCore,
    adopt_writer,
    frame,
    make_writer,
    unframe,
)
from gossipmesh.crdt.sync import decode_delta, encode_delta
from gossipmesh.errors import DecodeError, UsageError
from gossipmesh.ids import Address

WALL = 1_790_000_000_000
SMALL = {"protocol": "http"}


def addr(name: str) -> Address:
    return Address(f"10.0.0.{sum(name.encode()) % 250 + 1}", 7946)


def no_bad(key: str, value: Mapping[str, Any]) -> None:
    if "bad" in value:
        raise UsageError("bad value")  # the Validator contract (crdt/entries.py)


def core(name: str = "a", seed: int = 1, **config: Any) -> ReplicaCore:
    return ReplicaCore(name, new_doc(validator=no_bad), f"{name}@0000000{seed}",
                       random.Random(seed), ReplicaConfig(**config))  # fmt: skip


def commit(
    c: ReplicaCore, items: Sequence[tuple[str, Any]], now_ms: int = 0, wall_ms: int = WALL
) -> tuple[Delta, list[Effect]]:
    """Prepare, sign (operator 0) and commit, as the admin API and an operator do."""
    proposal, before = c.prepare(items, wall_ms)
    result, effects = c.commit([sign(e) for e in proposal], now_ms, wall_ms)
    return (result.forward or Delta()), before + effects


def join(c: ReplicaCore, *names: str, state: str = "alive") -> list[Effect]:
    out: list[Effect] = []
    for n in names:
        out += c.member_changed(n, addr(n), state, None, 0)
    return out


def of(effects: Sequence[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def big_batch(n: int = 20, prefix: str = "s") -> list[tuple[str, dict[str, Any] | None]]:
    """A delta too large for one gossip packet."""
    return [(f"service/{prefix}{i:02d}", {"protocol": "tcp", "pad": "x" * 40}) for i in range(n)]


class Link:
    """Runs exchanges between cores the way a runtime does, leg by leg, bytes only."""

    def __init__(self, *cores: ReplicaCore) -> None:
        self.by_address = {addr(c.name): c for c in cores}

    def run(self, initiator: ReplicaCore, ex: OpenExchange, now_ms: int = 0) -> list[Effect]:
        server = self.by_address[ex.to]
        src = addr(initiator.name)
        if ex.token.kind is ExchangeKind.PUSH:
            served = server.serve_push(src, ex.body, now_ms, WALL)
            return initiator.exchange_reply(ex.token, served.reply, now_ms, WALL)
        served = server.serve_sync(src, ex.body, now_ms, WALL)
        effects = initiator.exchange_reply(ex.token, served.reply, now_ms, WALL)
        for push in of(effects, SendSyncPush):
            assert served.awaits_push
            back = server.serve_sync_push(served.peer, push.data, now_ms, WALL)
            effects += initiator.sync_push_reply(ex.token, back.reply, now_ms, WALL)
        return effects


# ---- local writes ----------------------------------------------------------------------------


def test_a_small_commit_is_persisted_first_then_notified_then_gossiped_and_pushed_eagerly() -> None:
    a = core("a")
    join(a, "b", "c", "d", "e")
    delta, effects = commit(a, [("service/api", SMALL)], 0, WALL)
    assert [type(e) for e in effects] == [Persist, Changed, Gossip]
    assert effects[0] == Persist(delta)
    assert effects[1] == Changed(frozenset({"service/api"}))
    assert effects[2] == Gossip(TAG + encode_delta(delta), broadcast=True, fanout=3)
    assert a.counters["config.local_writes"] == 1 and a.counters["config.eager_sent"] == 1


def test_a_commit_too_big_for_a_packet_goes_to_three_alive_members_over_streams() -> None:
    a = core("a")
    join(a, "b", "c", "d", "e")
    join(a, "s", state="suspect")
    delta, effects = commit(a, big_batch(), 0, WALL)
    assert isinstance(effects[0], Persist) and not of(effects, Gossip)
    pushes = of(effects, OpenExchange)
    assert len(pushes) == 3 and {p.token.kind for p in pushes} == {ExchangeKind.PUSH}
    assert addr("s") not in {p.to for p in pushes}  # pushes go to alive members only
    assert unframe(pushes[0].body) == ("a", encode_delta(delta))
    assert a.pushes_in_flight == 3


def test_pushes_beyond_the_concurrency_limit_are_skipped_and_counted() -> None:
    a = core("a")
    join(a, "b", "c", "d")
    for i in range(SPREAD_CONCURRENCY_MAX // 3 + 1):
        commit(a, big_batch(prefix=f"w{i}-"), 0, WALL)
    assert a.pushes_in_flight == 3 * (SPREAD_CONCURRENCY_MAX // 3 + 1)
    _, effects = commit(a, big_batch(), 0, WALL)
    assert not of(effects, OpenExchange) and a.counters["config.spread_skipped"] == 1


def test_a_refused_commit_changes_nothing_and_asks_for_nothing() -> None:
    a = core("a")
    with pytest.raises(UsageError):  # the validator's error
        commit(a, [("service/x", {"bad": 1})], 0, WALL)
    assert a.doc.top(a.writer) == 0 and a.counters["config.local_writes"] == 0
    delta, effects = commit(a, [("service/absent", None)], 0, WALL)  # deleting nothing
    assert delta.entries == () and effects == []


def test_a_full_log_is_snapshotted_after_the_persist_that_filled_it() -> None:
    a = core("a", compact_after=2)
    _, first = commit(a, [("service/a", SMALL)], 0, WALL)
    _, second = commit(a, [("service/b", SMALL)], 0, WALL)
    assert not of(first, SaveSnapshot)
    assert [type(e) for e in second[:2]] == [Persist, SaveSnapshot]
    assert a.counters["config.snapshots"] == 1


def test_gossip_refused_as_too_large_falls_back_to_stream_pushes() -> None:
    a = core("a")
    join(a, "b", "c", "d", "e")
    _, effects = commit(a, [("service/api", SMALL)], 0, WALL)
    (gossip,) = of(effects, Gossip)
    pushes = of(a.gossip_refused(gossip, 0), OpenExchange)
    assert len(pushes) == 3 and unframe(pushes[0].body)[1] == gossip.payload[len(TAG) :]


# ---- merging and forwarding ------------------------------------------------------------------


def test_a_gossiped_delta_is_merged_persisted_and_forwarded_once() -> None:
    a, b = core("a"), core("b", seed=2)
    join(b, "a", "c", "d")
    delta, effects = commit(a, [("service/api", SMALL)], 0, WALL)
    payload = of(effects, Gossip)[0].payload
    first = b.on_user_message(addr("a"), payload, 0, WALL)
    assert [type(e) for e in first] == [Persist, Changed, Gossip]
    forward = first[2]
    assert forward.broadcast is False and forward.fanout == 2  # eager only: the broadcast relays
    fwd = decode_delta(forward.payload[len(TAG) :])
    assert fwd.entries == delta.entries
    assert b.doc.get("service/api") == SMALL
    assert b.on_user_message(addr("a"), payload, 0, WALL) == []  # nothing new: the epidemic ends
    assert b.counters["config.merged_nothing_new"] == 1 and b.counters["config.forwarded"] == 1


def test_payloads_without_the_config_tag_are_not_ours() -> None:
    b = core("b")
    assert b.on_user_message(addr("a"), b"R" + b"a node record", 0, WALL) == []
    assert b.counters["config.gossip_received"] == 0


def test_undecodable_bytes_are_refused_counted_and_change_nothing() -> None:
    b = core("b")
    root = b.doc.root_hash
    result, effects = b.merge_payload(b"\x93garbage", "a", WALL)
    assert result is None and len(effects) == 1
    assert isinstance(effects[0], Refused) and effects[0].whole_delta
    assert b.counters["config.refused"] == 1
    assert b.counters[f"config.refused.{effects[0].reasons[0]}"] == 1
    assert b.doc.root_hash == root


def test_invalid_entries_are_refused_and_never_persisted_or_forwarded() -> None:
    lax = ReplicaCore("a", new_doc(), "a@00000001", random.Random(1))  # a writer without schema
    b = core("b", seed=2)
    delta, _ = commit(lax, [("service/evil", {"bad": 1})], 0, WALL)
    effects = b.on_user_message(addr("a"), TAG + encode_delta(delta), 0, WALL)
    assert of(effects, Refused) == [Refused(str(addr("a")), ("invalid",), whole_delta=False)]
    assert not of(effects, Gossip) and b.doc.get("service/evil") is None
    assert b.counters["config.refused.invalid"] == 1 and b.counters["config.merged_entries"] == 0


# ---- anti-entropy ----------------------------------------------------------------------------


def test_start_arms_the_sync_timer_within_the_jittered_period() -> None:
    a = core("a", sync_interval_ms=3000)
    (timer,) = a.start(1000)
    assert isinstance(timer, SetTimer) and timer.timer == SyncTimer(1)
    assert 1000 + 2250 <= timer.at_ms <= 1000 + 3750
    assert core("a", anti_entropy=False).start(1000) == []


def test_a_new_member_is_synced_at_once_and_the_period_starts_over() -> None:
    a = core("a")
    a.start(0)
    effects = join(a, "b")
    (ex,) = of(effects, OpenExchange)
    assert ex.to == addr("b") and ex.token.kind is ExchangeKind.SYNC and ex.token.peer == "b"
    assert unframe(ex.body)[0] == "a"
    assert of(effects, SetTimer)[0].timer == SyncTimer(2)
    assert a.handle_timer(SyncTimer(1), 5000) == []  # the superseded timer is ignored
    assert a.counters["config.timer_stale"] == 1


def test_triggered_syncs_beyond_the_limit_are_skipped_and_counted() -> None:
    a = core("a")
    names = [f"n{i}" for i in range(SYNC_CONCURRENCY_MAX + 1)]
    effects = join(a, *names)
    assert len(of(effects, OpenExchange)) == SYNC_CONCURRENCY_MAX
    assert a.counters["config.sync_skipped"] == 1 and a.syncs_in_flight == SYNC_CONCURRENCY_MAX


def test_only_joins_and_returns_trigger_a_sync() -> None:
    a = core("a")
    join(a, "b")
    assert a.member_changed("b", addr("b"), "suspect", "alive", 0) == []
    assert of(a.member_changed("b", addr("b"), "alive", "suspect", 0), OpenExchange)
    assert a.member_changed("a", addr("a"), "alive", None, 0) == []  # our own events
    assert "a" not in a.members


def test_the_periodic_timer_syncs_with_one_live_member_and_rearms() -> None:
    a = core("a", anti_entropy=True)
    (armed,) = a.start(0)
    a.member_changed("b", addr("b"), "suspect", "alive", 0)  # known, suspect: still a candidate
    effects = a.handle_timer(armed.timer, armed.at_ms)
    assert [type(e) for e in effects] == [OpenExchange, SetTimer]
    assert effects[0].to == addr("b") and effects[1].at_ms > armed.at_ms


def test_a_four_leg_sync_makes_both_replicas_identical() -> None:
    a, b = core("a"), core("b", seed=2)
    commit(a, [("service/from-a", SMALL)], 0, WALL)
    commit(b, [("service/from-b", SMALL)], 0, WALL)
    join(b, "a")
    (ex,) = of(join(a, "b"), OpenExchange)
    effects = Link(a, b).run(a, ex, now_ms=7)
    assert [type(e) for e in effects] == [SendSyncPush, Persist, Changed, Gossip, SyncDone]
    done = effects[-1]
    assert not done.in_sync and done.pushed_bytes == len(effects[0].data) and done.back_bytes
    assert done.framed_bytes == len(ex.body) and done.sent_bytes < done.framed_bytes
    assert a.doc.root_hash == b.doc.root_hash and len(a.doc.keys()) == 4  # 2 + 2 cert entries
    assert a.syncs_in_flight == 0 and a.counters["config.sync_repaired"] == 1


def test_an_in_sync_pair_exchanges_a_digest_and_a_flag() -> None:
    a, b = core("a"), core("b", seed=2)
    join(b, "a")
    (ex,) = of(join(a, "b"), OpenExchange)
    effects = Link(a, b).run(a, ex)
    (done,) = effects
    assert isinstance(done, SyncDone) and done.in_sync and done.pushed_bytes == 0
    assert a.counters["config.sync_in_sync"] == 1
    assert a.counters["config.sync_bytes"] == done.sent_bytes + done.received_bytes < 50


def test_a_garbage_reply_fails_the_sync_and_frees_its_slot() -> None:
    a = core("a")
    (ex,) = of(join(a, "b"), OpenExchange)
    assert a.exchange_reply(ex.token, b"\xc1", 0, WALL) == []
    assert a.counters["config.sync_failed"] == 1 and a.syncs_in_flight == 0
    assert a.exchange_reply(ex.token, b"", 0, WALL) == []  # settled already: stale, ignored
    assert a.counters["config.exchange_stale"] == 1


def test_a_failed_exchange_frees_its_slot_and_is_counted() -> None:
    a = core("a")
    (ex,) = of(join(a, "b"), OpenExchange)
    assert a.exchange_failed(ex.token, 0) == []
    assert a.syncs_in_flight == 0 and a.counters["config.sync_failed"] == 1
    a.exchange_failed(ex.token, 0)  # a third leg that failed after the reply was handled
    assert a.counters["config.sync_push_failed"] == 1


def test_the_serving_side_refuses_what_it_cannot_read() -> None:
    b = core("b")
    assert b.serve_sync(addr("a"), b"", 0, WALL).reply == b""
    assert b.serve_sync(addr("a"), frame("a", b"\x93junk"), 0, WALL).reply == b""
    assert b.serve_push(addr("a"), b"\x05ab", 0, WALL).reply == b""
    assert b.serve_sync_push("a", b"\x00", 0, WALL).reply == b""
    assert b.counters["config.refused.decode_config_frame"] == 2
    assert b.doc.keys() == new_doc().keys()


def test_a_push_is_acknowledged_after_its_persist_and_frees_its_slot() -> None:
    a, b = core("a"), core("b", seed=2)
    join(a, "b")
    _, effects = commit(a, big_batch(), 0, WALL)
    (push,) = of(effects, OpenExchange)
    served = b.serve_push(addr("a"), push.body, 0, WALL)
    assert served.reply == b"ok" and isinstance(served.effects[0], Persist)
    assert served.peer == "a" and len(b.doc.keys()) == 22
    assert a.exchange_reply(push.token, served.reply, 0, WALL) == []
    assert a.pushes_in_flight == 0 and a.counters["config.push_sent"] == 1


# ---- tombstone GC ----------------------------------------------------------------------------


def test_tombstones_go_after_the_grace_period_and_the_log_is_compacted() -> None:
    a = core("a", gc_grace_ms=60_000, compact_after=100)
    commit(a, [("service/gone", SMALL)], 0, WALL)
    commit(a, [("service/gone", None)], 0, WALL)
    assert a.collect_garbage(0, WALL + 59_999) == ([], [])
    keys, effects = a.collect_garbage(1, WALL + 60_000)
    assert keys == ["service/gone"] and effects == [SaveSnapshot()]
    assert a.counters["config.tombstones_collected"] == 1
    a.member_reaped("b")
    assert "b" not in a.members


def test_a_writer_whose_counters_ran_out_starts_a_new_id_and_says_so() -> None:
    a = core("a")
    a.doc.restore_known({"service/x": {a.writer: 2**53 - 1}})
    old = a.writer
    proposal, effects = a.prepare([("service/x", SMALL)], WALL)
    assert effects == [SaveWriter(a.writer)] and a.writer != old and a.writer.startswith("a@")
    assert proposal[0].writer == a.writer and a.counters["config.writer_rotated"] == 1


def test_gc_runs_at_least_every_thirty_seconds_and_at_most_every_second() -> None:
    assert core(gc_grace_ms=3_600_000).gc_interval_ms() == 30_000
    assert core(gc_grace_ms=0).gc_interval_ms() == 1_000


# ---- identity, framing, configuration, determinism -------------------------------------------


def test_writer_ids_are_name_at_epoch_and_a_store_keeps_only_its_own() -> None:
    writer = make_writer("web-1", random.Random(3))
    assert writer.startswith("web-1@") and len(writer) == len("web-1@") + 8
    assert len(make_writer("n" * 300, random.Random(3)).encode()) == 128
    assert adopt_writer(writer, "web-1") == writer
    assert adopt_writer(writer, "web-2") is None and adopt_writer(None, "web-1") is None


def test_frames_name_their_sender_and_bad_frames_raise_decode_error() -> None:
    assert unframe(frame("node-ä", b"msg")) == ("node-ä", b"msg")
    for bad in (b"", b"\x00x", b"\x09short", b"\x02\xff\xfe"):
        with pytest.raises(DecodeError):
            unframe(bad)


def test_nonsense_configuration_is_refused_by_field_name() -> None:
    with pytest.raises(UsageError, match="sync_interval_ms"):
        ReplicaConfig(sync_interval_ms=0)
    with pytest.raises(UsageError, match="compact_after"):
        ReplicaConfig(compact_after=0)


def test_the_same_seed_and_inputs_give_the_same_effects() -> None:
    def script(seed: int) -> list[Effect]:
        c = core("a", seed=seed)
        out = c.start(0) + join(c, "b", "c", "d", "e", "f")
        out += commit(c, big_batch(), 10, WALL)[1]
        latest = of(out, SetTimer)[-1]
        return out + c.handle_timer(latest.timer, latest.at_ms)

    assert script(5) == script(5)


def test_an_entry_whose_signer_is_unknown_here_fetches_it_from_its_sender() -> None:
    from crdt_helpers import authority

    from gossipmesh.crdt.document import Document

    a = core("a")
    join(a, "b")
    b = ReplicaCore("b", Document(authority()), "b@00000002", random.Random(2))  # no certs yet
    delta, _ = commit(a, [("service/api", SMALL)])
    effects = b.on_user_message(addr("a"), TAG + encode_delta(delta), 0, WALL)
    assert of(effects, Refused)[0].reasons == ("unknown_signer",)
    assert of(effects, OpenExchange) == []  # a is not a member of b's yet
    assert b.member_changed("a", addr("a"), "alive", "alive", 0) == []  # known, no sync yet
    effects = b.on_user_message(addr("a"), TAG + encode_delta(delta), 0, WALL)
    (ex,) = of(effects, OpenExchange)
    assert ex.token.peer == "a" and b.counters["config.signer_fetches"] == 1
    Link(a, b).run(b, ex)
    assert b.doc.get("service/api") == SMALL
