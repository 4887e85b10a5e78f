"""``gossipmesh.doctor``'s checks, each a pure function of admin API answers: what counts as a
problem, what is only skipped, and that every problem says what to do."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.client import AdminClient, AdminError, AgentUnreachable
from gossipmesh.doctor import (
    CLOCK_SKEW_LIMIT_MS,
    MIN_NOFILE,
    RENEW_WITHIN_DAYS,
    Status,
    check_certificate,
    check_clocks,
    check_conflicts,
    check_descriptors,
    check_keys,
    check_members,
    check_ports,
    diagnose,
)
from gossipmesh.ids import Address

DAY_MS = 86_400_000
NOW_MS = 1_800_000_000_000


def node(primary: str, *keys: str, ok: bool = True, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "primary": primary, "keys": [primary, *keys], **extra}


def keys_answer(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, int] = {}
    for n in nodes.values():
        for k in n["keys"] if n["ok"] else []:
            summary[k] = summary.get(k, 0) + 1
    return {"nodes": nodes, "keys": summary, "num_nodes": len(nodes)}


def test_members_dead_or_suspect_is_a_problem_naming_them() -> None:
    healthy = check_members([{"name": "a", "state": "alive"}, {"name": "b", "state": "left"}])
    assert healthy.status is Status.OK and "1 alive" in healthy.detail
    found = check_members(
        [
            {"name": "a", "state": "alive"},
            {"name": "c", "state": "dead"},
            {"name": "b", "state": "suspect"},
        ]  # fmt: skip
    )
    assert found.status is Status.PROBLEM
    assert "dead: c" in found.detail and "suspect: b" in found.detail and found.advice


def test_keys_agreeing_is_ok() -> None:
    answer = keys_answer({"a": node("k1", "k0"), "b": node("k1", "k0")})
    found = check_keys(answer, {"reasons": []})
    assert found.status is Status.OK and "primary k1" in found.detail


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        ({"a": node("k1"), "b": node("k2", "k1")}, "different primary"),
        ({"a": node("k1", "k2"), "b": node("k1")}, "held by only some"),
        (
            {"a": node("k1"), "b": {"ok": False, "keys": [], "error": "unreachable"}},
            "no answer from b",
        ),
    ],
)
def test_keys_disagreeing_is_a_problem(nodes: dict[str, Any], words: str) -> None:
    found = check_keys(keys_answer(nodes), {"reasons": []})
    assert found.status is Status.PROBLEM and words in found.detail and found.advice


def test_decrypt_failures_are_a_key_problem() -> None:
    health = {"reasons": ["3 messages failed to decrypt in the last 60 s, from 10.0.0.9:7946"]}
    found = check_keys(keys_answer({"a": node("k1")}), health)
    assert found.status is Status.PROBLEM and "10.0.0.9" in found.detail


def test_keys_without_token_is_skipped_not_failed() -> None:
    found = check_keys(AdminError(401, "unauthorized", ""), {"reasons": []})
    assert found.status is Status.SKIPPED and "token" in found.detail


def test_clocks_count_only_offsets_beyond_the_round_trip() -> None:
    me = {"wall_ms": NOW_MS}
    near = keys_answer({"b": node("k", clock_offset_ms=CLOCK_SKEW_LIMIT_MS + 40, rtt_ms=100)})
    assert check_clocks(near, me, NOW_MS, 0).status is Status.OK
    far = keys_answer({"b": node("k", clock_offset_ms=-(CLOCK_SKEW_LIMIT_MS + 500), rtt_ms=10)})
    found = check_clocks(far, me, NOW_MS, 0)
    assert found.status is Status.PROBLEM and "b -1500 ms" in found.detail and "NTP" in found.advice


def test_clock_of_this_host_against_the_agent() -> None:
    me = {"wall_ms": NOW_MS + 10_000}
    found = check_clocks(AdminError(401, "unauthorized", ""), me, NOW_MS, 20)
    assert found.status is Status.PROBLEM and "this host" in found.detail
    same = check_clocks(AdminError(401, "unauthorized", ""), {"wall_ms": NOW_MS + 5}, NOW_MS, 10)
    assert same.status is Status.OK and "needs the admin token" in same.detail


def test_descriptors() -> None:
    proxy = {"outbound": "127.0.0.1:4140"}
    low = {"limits": {"nofile_soft": 1024, "open_fds": 30}, "listeners": proxy}
    found = check_descriptors(low)
    assert found.status is Status.PROBLEM and str(MIN_NOFILE) in found.detail
    assert "LimitNOFILE" in found.advice
    no_proxy = {"limits": {"nofile_soft": 1024, "open_fds": 30}, "listeners": {"outbound": None}}
    assert check_descriptors(no_proxy).status is Status.OK
    full = {"limits": {"nofile_soft": 65536, "open_fds": 60000}, "listeners": proxy}
    assert check_descriptors(full).status is Status.PROBLEM
    assert check_descriptors({}).status is Status.SKIPPED


def test_ports_try_the_advertised_host_for_a_wildcard_listener() -> None:
    tried: list[Address] = []

    def connect(address: Address) -> str | None:
        tried.append(address)
        return "connection refused" if address.port == 4143 else None

    me = {
        "address": "10.1.2.3:7946",
        "listeners": {"inbound": "0.0.0.0:4143", "outbound": "127.0.0.1:4140"},
    }
    found = check_ports(me, False, connect)
    assert tried == [Address("10.1.2.3", 7946), Address("10.1.2.3", 4143)]  # outbound: local only
    assert found.status is Status.PROBLEM and "inbound proxy 10.1.2.3:4143" in found.detail
    assert "firewall" in found.advice


def cert(not_after_ms: int, playground: bool = False) -> dict[str, Any]:
    return {"node_cert": {"spiffe_id": "spiffe://c/node/a", "not_after_ms": not_after_ms,
                          "playground": playground}}  # fmt: skip


def test_certificate_expiry() -> None:
    assert check_certificate(cert(NOW_MS + 300 * DAY_MS), NOW_MS).status is Status.OK
    soon = check_certificate(cert(NOW_MS + (RENEW_WITHIN_DAYS - 1) * DAY_MS), NOW_MS)
    assert soon.status is Status.PROBLEM and "expires in" in soon.detail
    assert "ca issue-node" in soon.advice
    gone = check_certificate(cert(NOW_MS - DAY_MS), NOW_MS)
    assert gone.status is Status.PROBLEM and "expired" in gone.detail
    play = check_certificate(cert(NOW_MS - DAY_MS, playground=True), NOW_MS)
    assert play.status is Status.OK and "playground" in play.detail


def test_conflicts() -> None:
    assert check_conflicts({"conflicts": [], "count": 0}).status is Status.OK
    found = check_conflicts({"conflicts": [{"key": "route/web"}], "count": 1})
    assert found.status is Status.PROBLEM and "route/web" in found.detail
    assert check_conflicts(AdminError(404, "not_found", "")).status is Status.SKIPPED


def test_unreachable_agent_is_one_problem_and_nothing_else() -> None:
    class Down(AdminClient):
        def self_info(self) -> dict[str, Any]:
            raise AgentUnreachable("cannot reach the gossipmesh agent at 127.0.0.1:9")

    findings = diagnose(Down("127.0.0.1:9"))
    assert [(f.check, f.status) for f in findings] == [("agent", Status.PROBLEM)]
    assert "--agent" in findings[0].advice
