"""Every malformed value in an admin API body is a 400 naming its field, never a 500.

The check is generic (``http.Request.json``), so it is exercised on the endpoints that take a
body: the two phases of a signed config write, join, keys and fault injection, on an in-process
agent."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from admin_http import http
from test_replica_inproc import make_agent, start

from gossipmesh.agent.http import MAX_INT_DIGITS, MAX_JSON_DEPTH, unusable_value

BIG = "1" + "0" * 5000  # 5,001 digits: Python refuses to convert it (4,300 at most)
VALUES = {
    "integer of 5001 digits": BIG,
    "integer of 5001 digits ": "-" + BIG,
    "out of range": "1e999",
    "NaN is not a JSON number": "NaN",
    "-Infinity is not a JSON number": "-Infinity",
    "lone surrogate": '"\\ud800"',
    f"nested deeper than {MAX_JSON_DEPTH}": "[" * 100 + "]" * 100,
    "nested deeper than": "[" * 5000 + "]" * 5000,
}
# (method, path, body with {} where the value goes, the field the error must name)
PLACES = [
    (
        "POST",
        "/v1/config/prepare",
        '{{"items": {{"service/api": {{"retry": {{"attempts": {}}}}}}}}}',
        "items.service/api.retry.attempts",
    ),
    (
        "POST",
        "/v1/config/prepare",
        '{{"items": {{"route/r": {{"destinations": [{{"service": "a", "weight": {}}}]}}}}}}',
        "items.route/r.destinations[0].weight",
    ),
    (
        "POST",
        "/v1/config/commit",
        '{{"entries": [{{"key": "route/r", "counter": {}}}]}}',
        "entries[0].counter",
    ),
    ("POST", "/v1/join", '{{"addresses": [{}]}}', "addresses[0]"),
    ("POST", "/v1/keys", '{{"op": "install", "key": {}}}', "key"),
    ("POST", "/v1/faults", '{{"drop": [{}]}}', "drop[0]"),
]


async def test_malformed_values_are_400_naming_the_field(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    agent = await start(nursery, make_agent("a1", "127.0.0.1", tmp_path, faults=True))
    for method, path, template, field in PLACES:
        for why, value in VALUES.items():
            status, data = await http(agent, method, path, template.format(value).encode())
            assert status == 400, (path, why, data)
            assert data["error"] == "bad_value", (path, why, data)
            detail = data["detail"]
            assert why.strip() in detail, (path, why, detail)
            if "nested" not in why:
                assert detail.startswith(field + ":"), (path, why, detail)
    # Still serving, and nothing was written.
    status, data = await http(agent, "GET", "/v1/config")
    assert status == 200 and data["count"] == 0


@pytest.mark.parametrize(
    ("address", "why"),
    [("a\x00b", "control"), ("x" * 300, "longer than DNS"), ("h:²", "not a number")],
)
async def test_an_unusable_join_address_is_400_not_a_failed_join(
    nursery: trio.Nursery, tmp_path: Path, address: str, why: str
) -> None:
    agent = await start(nursery, make_agent("a1", "127.0.0.1", tmp_path))
    status, data = await http(agent, "POST", "/v1/join", {"addresses": [address]})
    assert status == 400 and data["error"] == "bad_address" and why in data["detail"], data


def test_unusable_value_walks_iteratively_and_names_the_path() -> None:
    assert unusable_value({"a": [1, "x", {"b": 2.5}]}) is None
    assert (
        unusable_value({"a": [1, {"b\ud800": 1}]})
        == "a[1]: a key is not valid Unicode text (a lone surrogate)"
    )
    deep: list[object] = []
    cur = deep
    for _ in range(100_000):  # deeper than any recursion limit: the walk must not recurse
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    problem = unusable_value(deep)
    assert problem is not None and problem.endswith(f"nested deeper than {MAX_JSON_DEPTH} levels")
    assert MAX_INT_DIGITS < 4300
