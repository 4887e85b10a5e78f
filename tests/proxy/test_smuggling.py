"""Request smuggling: every ambiguous framing is refused, and nobody else's answer is ever harmed.

Each case of the corpus is sent through one leg while other clients ("victims") send requests on
their own keep-alive connections, sharing the proxy's upstream pool with the attacker:

- ``outbound``: app -> outbound listener -> backend;
- ``inbound``: peer -> inbound listener (``x-gossipmesh-dest``) -> backend;
- ``mesh``: app -> outbound -> peer inbound -> backend (both hops).

A refused case must get one 400 and its connection closed, and its smuggled request must never
reach a backend; an accepted one (framing a strict parser reads one way only) gets its own
answers in order. Every victim must get the answer to its own request (``/echo/...`` answers
with the target it was asked for). The upstream side: a response longer or shorter than its own
framing must not leave bytes on a pooled connection for the next request to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import trio
from proxy_helpers import Backend, Client, service, start_mesh

from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table

SMUGGLED = b"GET /echo/SMUGGLED HTTP/1.1\r\nHost: web\r\n\r\n"
LEN = len(SMUGGLED)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


# (name, head lines after the request line and Host, body) of requests that must be refused.
REFUSED: list[tuple[str, bytes, bytes]] = [
    ("cl_te", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + LEN), b"0\r\n\r\n"),
    ("te_cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", _chunked(SMUGGLED)),
    ("te_xchunked", b"Transfer-Encoding: xchunked\r\n", _chunked(SMUGGLED)),
    ("te_chunked_identity", b"Transfer-Encoding: chunked, identity\r\n", _chunked(SMUGGLED)),
    ("te_identity_chunked", b"Transfer-Encoding: identity, chunked\r\n", _chunked(SMUGGLED)),
    (
        "te_two_fields",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        _chunked(SMUGGLED),
    ),
    (
        "te_twice_chunked",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        _chunked(SMUGGLED),
    ),
    ("te_vertical_tab", b"Transfer-Encoding:\x0bchunked\r\n", _chunked(SMUGGLED)),
    ("te_trailing_tab", b"Transfer-Encoding: chunked\t\r\n", _chunked(SMUGGLED)),
    ("te_trailing_space", b"Transfer-Encoding: chunked \r\n", _chunked(SMUGGLED)),
    ("te_uppercase", b"Transfer-Encoding: CHUNKED\r\n", _chunked(SMUGGLED)),
    ("te_trailing_junk", b"Transfer-Encoding: chunked;x\r\n", _chunked(SMUGGLED)),
    ("te_trailing_token", b"Transfer-Encoding: chunkedx\r\n", _chunked(SMUGGLED)),
    ("te_space_before_colon", b"Transfer-Encoding : chunked\r\n", _chunked(SMUGGLED)),
    ("te_obs_fold", b"X-Pad: y\r\n Transfer-Encoding: chunked\r\n", _chunked(SMUGGLED)),
    ("te_folded_value", b"Transfer-Encoding:\r\n chunked\r\n", _chunked(SMUGGLED)),
    ("cl_duplicate", b"Content-Length: %d\r\nContent-Length: %d\r\n" % (LEN, LEN), SMUGGLED),
    ("cl_duplicate_differ", b"Content-Length: 0\r\nContent-Length: %d\r\n" % LEN, SMUGGLED),
    ("cl_list", b"Content-Length: %d, %d\r\n" % (LEN, LEN), SMUGGLED),
    ("cl_plus_sign", b"Content-Length: +%d\r\n" % LEN, SMUGGLED),
    ("cl_hex", b"Content-Length: 0x%x\r\n" % LEN, SMUGGLED),
    (
        "connection_content_length",
        b"Connection: content-length\r\nContent-Length: %d\r\n" % LEN,
        SMUGGLED,
    ),  # fmt: skip
    (
        "connection_transfer_encoding",
        b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n",
        _chunked(SMUGGLED),
    ),
    ("connection_host", b"Connection: host\r\n", b""),
    ("connection_keep_alive_host", b"Connection: keep-alive, Host\r\n", b""),
    ("connection_mesh_dest", b"Connection: x-gossipmesh-dest\r\n", b""),
    ("connection_request_id", b"Connection: x-request-id\r\nX-Request-Id: abc\r\n", b""),
    ("two_hosts", b"Host: evil\r\n", b""),
    (
        "chunk_size_junk",
        b"Transfer-Encoding: chunked\r\n",
        b"%x x\r\n%s\r\n0\r\n\r\n" % (LEN, SMUGGLED),
    ),
    ("chunk_bare_lf", b"Transfer-Encoding: chunked\r\n", b"%x\n%s\n0\n\n" % (LEN, SMUGGLED)),
    ("nul_in_value", b"X-Pad: a\x00b\r\n", b""),
    ("bare_cr", b"X-Pad: a\rTransfer-Encoding: chunked\r\n", _chunked(SMUGGLED)),
]
# Whole requests (their own request line) that must be refused.
REFUSED_RAW: list[tuple[str, bytes]] = [
    (
        "te_http_1_0",
        b"POST /echo/a HTTP/1.0\r\nHost: web\r\n{X}Transfer-Encoding: chunked\r\n\r\n"
        + _chunked(SMUGGLED),
    ),  # fmt: skip
    ("request_line_junk", b"GET /echo/a HTTP/1.1 x\r\nHost: web\r\n{X}\r\n" + SMUGGLED),
    ("request_line_version", b"GET /echo/a HTTP/2.0\r\nHost: web\r\n{X}\r\n" + SMUGGLED),
    ("request_line_space", b"GET /echo/a b HTTP/1.1\r\nHost: web\r\n{X}\r\n" + SMUGGLED),
    ("request_line_tab", b"GET\t/echo/a HTTP/1.1\r\nHost: web\r\n{X}\r\n" + SMUGGLED),
    ("bare_lf_request_line", b"GET /echo/a HTTP/1.1\nHost: web\n{X}\n" + SMUGGLED),
    ("bare_lf_header", b"GET /echo/a HTTP/1.1\r\nHost: web\n{X}X-Pad: y\r\n\r\n" + SMUGGLED),
]
# Framing a strict parser reads one way only: served, answers in order, on the client's own
# connection. (A tab before a field value is optional whitespace, RFC 9110 §5.6.3, and llhttp
# strips it before anyone sees the value; the proxy re-frames every body it forwards anyway.)
ACCEPTED: list[tuple[str, bytes, list[bytes]]] = [
    (
        "get_with_body_then_pipelined",
        b"GET /echo/a HTTP/1.1\r\nHost: web\r\n{X}Content-Length: %d\r\n\r\n%s" % (LEN, SMUGGLED)
        + b"GET /echo/b HTTP/1.1\r\nHost: web\r\n{X}Connection: close\r\n\r\n",
        [b"/echo/a", b"/echo/b"],
    ),
    (
        "post_with_body_then_pipelined",
        b"POST /echo/c HTTP/1.1\r\nHost: web\r\n{X}Content-Length: %d\r\n\r\n%s" % (LEN, SMUGGLED)
        + b"GET /echo/d HTTP/1.1\r\nHost: web\r\n{X}Connection: close\r\n\r\n",
        [b"/echo/c", b"/echo/d"],
    ),
    (
        "te_leading_tab",
        b"POST /echo/e HTTP/1.1\r\nHost: web\r\n{X}Transfer-Encoding:\tchunked\r\n\r\n"
        + _chunked(SMUGGLED)
        + b"GET /echo/f HTTP/1.1\r\nHost: web\r\n{X}Connection: close\r\n\r\n",
        [b"/echo/e", b"/echo/f"],
    ),
]

VICTIMS = 4
VICTIM_REQUESTS = 5


@dataclass
class Leg:
    attack_addr: tuple[str, int]
    victim_addr: tuple[str, int]
    extra: bytes  # header lines every request on this leg carries (the inbound's destination)
    backends: list[Backend]


def refused_requests(extra: bytes) -> list[tuple[str, bytes]]:
    out = [
        (name, b"POST /echo/attacker HTTP/1.1\r\nHost: web\r\n" + extra + lines + b"\r\n" + body)
        for name, lines, body in REFUSED
    ]
    out += [(name, raw.replace(b"{X}", extra)) for name, raw in REFUSED_RAW]
    return out


async def read_until_close(stream: trio.SocketStream, name: str) -> bytes:
    """Everything until the peer closes; a generous bound so a hang fails instead of blocking."""
    out = bytearray()
    with trio.move_on_after(10):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return bytes(out)  # a reset after the answer: closed all the same
            if not chunk:
                return bytes(out)
            out += chunk
    raise AssertionError(f"{name}: the connection stayed open; received {bytes(out)[:300]!r}")


async def victim(leg: Leg, tag: str, wrong: list[str]) -> None:
    c = await Client.open(leg.victim_addr)
    headers = [tuple(leg.extra.decode().strip().split(": ", 1))] if leg.extra else []
    try:
        for j in range(VICTIM_REQUESTS):
            target = f"/echo/{tag}-{j}"
            r = await c.request("GET", target, "web", headers=headers)  # type: ignore[arg-type]
            if (r.status, r.body) != (200, target.encode()):
                wrong.append(f"{target} got {r.status} {r.body[:60]!r}")
            await trio.sleep(0)
    finally:
        await c.aclose()


async def attack_with_victims(leg: Leg, name: str, attack: bytes, wrong: list[str]) -> bytes:
    """Send ``attack`` on its own connection while victims use theirs; what came back."""
    answer = b""

    async def attacker() -> None:
        nonlocal answer
        stream = await trio.open_tcp_stream(*leg.attack_addr)
        try:
            await stream.send_all(attack)
            answer = await read_until_close(stream, name)
        finally:
            await stream.aclose()

    async with trio.open_nursery() as n:
        for i in range(VICTIMS):
            n.start_soon(victim, leg, f"{name}-v{i}", wrong)
        n.start_soon(attacker)
    return answer


def statuses(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)


async def run_corpus(leg: Leg) -> None:
    wrong: list[str] = []
    for name, attack in refused_requests(leg.extra):
        answer = await attack_with_victims(leg, name, attack, wrong)
        assert statuses(answer) == [b"400"], (name, answer[:200])
    for name, raw, targets in ACCEPTED:
        answer = await attack_with_victims(leg, name, raw.replace(b"{X}", leg.extra), wrong)
        got = re.findall(rb"\r\n\r\n(/echo/[a-z]+)", answer)
        assert statuses(answer) == [b"200"] * len(targets) and got == targets, (name, answer)
    assert wrong == []
    # Accepted cases carry SMUGGLED as body bytes; no case may get it read as a request.
    smuggled = [t for be in leg.backends for t in be.seen_targets if b"SMUGGLED" in t]
    assert smuggled == [], smuggled


@pytest.mark.parametrize("leg_name", ["outbound", "inbound", "mesh"])
async def test_smuggling_corpus_is_refused_and_victims_get_their_own_answers(
    nursery: trio.Nursery, leg_name: str
) -> None:
    mesh = await start_mesh(nursery, {"web": ["w1"]})
    backends = mesh.backends["web"]
    be = backends[0]
    assert mesh.b_addr.inbound is not None
    if leg_name == "outbound":
        table = build_route_table({}, {}, {"web": [Endpoint("a", be.host, be.port)]})
        mesh.a.update_table(table)
        leg = Leg(mesh.outbound, mesh.outbound, b"", backends)
    elif leg_name == "inbound":
        dest = b"x-gossipmesh-dest: %s:%d\r\n" % (be.host.encode(), be.port)
        leg = Leg(mesh.b_addr.inbound, mesh.b_addr.inbound, dest, backends)
    else:
        leg = Leg(mesh.outbound, mesh.outbound, b"", backends)
    await run_corpus(leg)


class RawBackend:
    """An upstream that gets framing wrong on purpose. ``/echo/X`` is answered properly;
    ``/longer`` with its answer and then, unasked, a second response (``poisoned`` is set once
    it was sent); ``/shorter`` with fewer body bytes than its Content-Length, the rest and a
    second response only ``late_s`` later (``late_sent``)."""

    def __init__(self, late_s: float) -> None:
        self.late_s = late_s
        self.port = 0
        self.poisoned = trio.Event()
        self.late_sent = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self.conn, listeners)

    async def conn(self, stream: trio.SocketStream) -> None:
        buf = b""
        poison = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED"
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                if target == b"/longer":
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await trio.sleep(0.05)  # after the proxy pooled the connection
                    await stream.send_all(poison)
                    self.poisoned.set()
                elif target == b"/shorter":
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                    await trio.sleep(self.late_s)
                    await stream.send_all(b"rest!" + poison)
                    self.late_sent.set()
                else:
                    body = target
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                    )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


@pytest.mark.parametrize("engine", ["epoll", "tasks"])
async def test_a_response_off_its_framing_poisons_no_pooled_connection(
    nursery: trio.Nursery, engine: str
) -> None:
    be = RawBackend(late_s=0.5)
    await nursery.start(be.run)
    proxy = Proxy(outbound=("127.0.0.1", 0), inbound=None, engine=engine)
    addr = await nursery.start(proxy.serve)
    assert addr.outbound is not None
    svc = service("web", {"timeouts": {"per_try_ms": 200, "idle_ms": 200}})
    table = build_route_table({"web": svc}, {}, {"web": [Endpoint("a", "127.0.0.1", be.port)]})
    proxy.update_table(table)
    c = await Client.open(addr.outbound)
    r = await c.request("GET", "/longer", "web")
    assert (r.status, r.body) == (200, b"ok")
    await be.poisoned.wait()
    for i in range(5):
        r = await c.request("GET", f"/echo/v{i}", "web")
        assert (r.status, r.body) == (200, f"/echo/v{i}".encode())
    # Shorter than its framing: the client's connection ends (its answer was cut), and the
    # upstream connection with it; nothing that arrives later reaches anyone.
    stream = await trio.open_tcp_stream(*addr.outbound)
    await stream.send_all(b"GET /shorter HTTP/1.1\r\nHost: web\r\n\r\n")
    cut = await read_until_close(stream, "shorter")
    await stream.aclose()
    assert cut.startswith(b"HTTP/1.1 200") and cut.endswith(b"short"), cut
    with trio.move_on_after(1):
        await be.late_sent.wait()  # (or the proxy closed that connection before they went)
    for i in range(5):
        r = await c.request("GET", f"/echo/w{i}", "web")
        assert (r.status, r.body) == (200, f"/echo/w{i}".encode())
    await c.aclose()
