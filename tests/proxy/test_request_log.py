"""The request log through real proxies: records, the access log's file, sampling, rate, drops."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio
import trio.testing
from proxy_helpers import Client, route, service, start_mesh

from gossipmesh.proxy.record_sinks import AccessLog
from gossipmesh.proxy.request_log import Probe, RequestRecord


class Collect:
    """A sink that wants everything."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def wants(self, p: Probe) -> bool:
        return True

    def take(self, rec: RequestRecord) -> None:
        self.records.append(rec)


async def test_records_on_both_hops_link_and_name_the_destination(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["stable", "canary"]})
    split = route(
        "split",
        {
            "hosts": ["api"],
            "destinations": [
                {"service": "api", "weight": 50, "tags": ["v1"]},
                {"service": "api", "weight": 50, "tags": ["v2"]},
            ],
        },
    )
    mesh.set_table(routes={"split": split}, tags={"stable": ("v1",), "canary": ("v2",)})
    out, inn = Collect(), Collect()
    assert not mesh.a.requests.on
    mesh.a.requests.add(out)
    mesh.b.requests.add(inn)
    assert mesh.a.requests.on
    c = await Client.open(mesh.outbound)
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    bodies = []
    for _ in range(20):
        r = await c.request("GET", "/name?x=1", "api", headers=[("traceparent", trace)])
        assert r.status == 200
        bodies.append(r.body)
    r = await c.request("GET", "/name", "nosuch")
    assert r.status == 404
    await c.aclose()
    assert len(out.records) == 21 and len(inn.records) == 20
    for rec, back, body in zip(out.records, inn.records, bodies, strict=False):
        assert rec.direction == "outbound" and back.direction == "inbound"
        assert rec.trace_id == back.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert rec.parent_span_id == "00f067aa0ba902b7"
        assert back.parent_span_id == rec.span_id and back.span_id != rec.span_id
        assert rec.request_id == back.request_id and len(rec.request_id) == 32
        assert rec.route == "split" and rec.service == "api"
        assert rec.destination == ("api:v1" if body == b"stable" else "api:v2")
        be = mesh.backends["api"][0 if body == b"stable" else 1]
        assert (rec.endpoint, rec.endpoint_address) == ("b", f"{be.host}:{be.port}")
        assert rec.path == "/name" and rec.method == "GET" and rec.authority == "api"
        assert rec.status == 200 and rec.bytes_out > len(body) and rec.bytes_in == 0
        assert rec.total_ns >= rec.upstream_ns >= 0 and rec.retries == 0 and rec.error == ""
    assert {r.destination for r in out.records[:20]} == {"api:v1", "api:v2"}
    miss = out.records[20]
    assert (miss.status, miss.error, miss.service, miss.endpoint) == (404, "no_route", "", "")
    assert miss.authority == "nosuch"  # the Host is the log's, not a service
    mesh.a.requests.remove(out)
    assert not mesh.a.requests.on


async def test_retries_and_proxy_errors_are_recorded(nursery: trio.Nursery) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1", "be2"]})
    svc = service("api", {"load_balancer": {"policy": "round_robin"}})
    mesh.set_table(services={"api": svc})
    log, peer = Collect(), Collect()
    mesh.a.requests.add(log)
    mesh.b.requests.add(peer)
    mesh.backends["api"][1].kill()
    c = await Client.open(mesh.outbound)
    for _ in range(4):
        assert (await c.request("GET", "/name", "api")).status == 200
    mesh.backends["api"][0].kill()
    r = await c.request("GET", "/name", "api")
    await c.aclose()
    assert r.status in (502, 503)
    assert any(rec.retries >= 1 and rec.status == 200 for rec in log.records[:4])
    last = log.records[-1]
    assert last.status == r.status
    # The proxy that made the error answer says why (here: the peer's inbound, relayed by A).
    reason = r.headers["x-gossipmesh-error"]
    assert reason in ("upstream_connect_failure", "no_healthy_endpoint")
    assert reason in (last.error, peer.records[-1].error)


async def test_access_log_lines_hold_no_secret(nursery: trio.Nursery, tmp_path: Path) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    access = AccessLog(fd)
    mesh.a.requests.add(access)
    mesh.b.requests.add(access)
    secrets = [
        ("authorization", "Bearer s3cr3t-t0ken"),
        ("cookie", "sid=c00kie-value; other=2"),
        ("proxy-authorization", "Basic cHJveHktc2VjcmV0"),
    ]
    c = await Client.open(mesh.outbound)
    r = await c.request("GET", "/echo-headers?token=q-secret", "api", headers=secrets)
    assert r.status == 200 and b"s3cr3t-t0ken" in r.body  # the app got them; the log must not
    r = await c.request("POST", "/upload", "api", body=b"x" * 1000, headers=secrets)
    assert r.status == 200
    await c.aclose()
    async with trio.open_nursery() as n:
        n.start_soon(access.run, 0.01)
        await trio.sleep(0.05)
        n.cancel_scope.cancel()
    os.close(fd)
    text = path.read_text()
    for secret in ("s3cr3t", "c00kie", "cHJveHktc2VjcmV0", "q-secret"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4 and access.counters["written"] == 4
    assert {(x["direction"], x["method"], x["path"]) for x in lines} == {
        ("outbound", "GET", "/echo-headers"),
        ("inbound", "GET", "/echo-headers"),
        ("outbound", "POST", "/upload"),
        ("inbound", "POST", "/upload"),
    }
    post = next(x for x in lines if x["method"] == "POST" and x["direction"] == "outbound")
    assert post["bytes_in"] == 1000 and post["status"] == 200
    for key in ("ts", "trace_id", "span_id", "caller", "route", "destination", "endpoint",
                "duration_ms", "upstream_ms", "queue_ms", "retries", "error"):  # fmt: skip
        assert key in post


async def test_sampling_rate_limit_and_full_buffer_are_counted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, {"api": ["be1"]})
    r, w = os.pipe()
    none = AccessLog(w, sample_ratio=0.0)
    limited = AccessLog(w, max_lines_per_s=5)
    small = AccessLog(w, buffer_lines=3)
    for sink in (none, limited, small):
        mesh.a.requests.add(sink)
    c = await Client.open(mesh.outbound)
    for _ in range(30):
        assert (await c.request("GET", "/name", "api")).status == 200
    await c.aclose()
    os.close(r)
    os.close(w)
    assert none.pending == [] and none.counters["dropped_rate"] == 0
    # Virtual time barely moves (loopback in a mock clock): 5 lines, the rest over the rate.
    assert len(limited.pending) == 5 and limited.counters["dropped_rate"] == 25
    assert len(small.pending) == 3 and small.counters["dropped_buffer"] == 27


def test_the_access_log_line_is_the_records_json_whatever_the_text() -> None:
    rec = RequestRecord()
    rec.ts = 1_700_000_000.25
    rec.path = '/a"b\\c\x01\xe9'  # a quote, a backslash, a control character, latin-1
    rec.authority, rec.caller, rec.error = "h\u2028x", "spiffe://c/svc/a", "no_route"
    rec.bytes_in, rec.total_ns, rec.status = None, 1_234_567, 404
    line = rec.json_line()
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == rec.to_json()
    assert json.loads(line)["ts"] == "2023-11-14T22:13:20.250Z"
