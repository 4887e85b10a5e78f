"""The dashboard's static files at /ui/: served from the package with a strict CSP, by name only,
and the only thing on a TLS admin address that needs no token (they hold no data)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from gossipmesh.agent.admin_auth import AdminAuth
from gossipmesh.agent.dashboard import FILES
from gossipmesh.agent.log import EventLog
from gossipmesh.agent.runtime import Agent
from gossipmesh.agent.settings import load_settings
from gossipmesh.crypto import Keyring
from gossipmesh.ids import Address


@pytest.fixture
async def agent(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Agent]:
    settings = load_settings({"name": "a", "bind": "127.0.0.2:0", "admin": "127.0.0.2:0",
                              "profile": "local", "cluster": "t", "no_proxy": True,
                              "data_dir": str(tmp_path / "a")})  # fmt: skip
    log = EventLog(stream=open(tmp_path / "a.log", "a"), level="debug")  # noqa: SIM115
    a = await nursery.start(Agent(settings, keyring=Keyring([bytes(32)]), log=log).run)
    yield a
    a.stop()


async def get(agent: Agent, path: str) -> tuple[int, dict[str, str], bytes]:
    assert agent.admin_address is not None
    stream = await trio.open_tcp_stream(agent.admin_address.host, agent.admin_address.port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
        )
        buf = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return int(lines[0].split(" ")[1]), headers, body


async def test_the_page_its_script_and_stylesheet(agent: Agent) -> None:
    status, headers, body = await get(agent, "/ui/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="/ui/app.js"' in body and b"http" not in body.split(b"<main>")[0]
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "https:" not in csp
    for name, kind in FILES.items():
        status, headers, body = await get(agent, f"/ui/{name}")
        assert status == 200 and headers["content-type"] == kind and body
    script = (await get(agent, "/ui/app.js"))[2]
    assert b"innerHTML" not in script  # data goes in as text only
    assert (await get(agent, "/ui"))[:2][0] == 308
    assert (await get(agent, "/ui"))[1]["location"] == "/ui/"
    for path in ("/ui/nope.js", "/ui/../v1/keys", "/ui/%2e%2e/v1/keys", "/ui/app.js/x"):
        assert (await get(agent, path))[0] == 404, path


def test_only_the_static_files_are_open_on_a_tls_address() -> None:
    auth = AdminAuth(Address("10.0.0.1", 7947), None, Counter(), EventLog(level="error"))
    assert not auth.needs_token("GET", "/ui/") and not auth.needs_token("GET", "/ui/app.js")
    assert not auth.needs_token("GET", "/ui")
    for method, path in (("GET", "/v1/stats"), ("GET", "/v1/members"), ("POST", "/ui/"),
                         ("GET", "/uix"), ("GET", "/metrics")):  # fmt: skip
        assert auth.needs_token(method, path), (method, path)
