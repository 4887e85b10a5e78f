"""The web dashboard at ``/ui/`` on every agent's admin API: static files, read-only, no build step.

Theory of operation
-------------------
The page (``gossipmesh/agent/ui/``: one HTML file, one script, one stylesheet, shipped as package
data) is plain JavaScript that polls this agent's admin API with ``fetch``: ``/v1/self``,
``/v1/members``, ``/v1/services``, ``/v1/stats`` (every alive agent's traffic, merged),
``/v1/config``, ``/v1/config-history/KEY`` and ``/v1/config-conflicts``. It only reads. Nothing
is loaded from anywhere else (no CDN): the Content-Security-Policy allows this origin only.

This module serves those three files from memory (read once, at the first request for the page:
an agent nobody opens the dashboard of holds neither the files nor ``importlib.resources``, which
brings ``zipfile`` with it, issue 19), by name from a fixed table, so no path reaches the file
system. They need no token (agent/admin_auth.py): they are
the package's code, not data. The API calls do, where the API asks for one: on a loopback admin
address the reads are open; on a TLS address every call needs the admin token, which the operator
gives the page in the URL fragment (``https://HOST:PORT/ui/#token=TOKEN``, never sent to the
server, removed from the address bar at once) or in its login form. The page keeps it in the
tab's ``sessionStorage`` (gone when the tab closes) and sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gossipmesh.agent.http import HTTPError, Request, Response, StreamResponse

if TYPE_CHECKING:
    from gossipmesh.agent.runtime import Agent

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = (
    ("content-security-policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
     "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)  # fmt: skip


def load_files() -> dict[str, bytes]:
    from importlib.resources import files

    root = files("gossipmesh.agent").joinpath("ui")
    return {name: root.joinpath(name).read_bytes() for name in FILES}


def install_dashboard(agent: Agent) -> None:
    """Serve ``GET /ui/`` (the page) and ``GET /ui/NAME`` (its script and stylesheet)."""
    content: dict[str, bytes] = {}

    def send(name: str) -> Response:
        if not content:
            content.update(load_files())
        body = content[name]

        async def one_chunk() -> AsyncIterator[bytes]:
            yield body

        return StreamResponse(one_chunk(), content_type=FILES[name], headers=SECURITY_HEADERS)

    async def index(req: Request) -> Response:
        return send("index.html")

    async def asset(req: Request) -> Response:
        name = req.path.removeprefix("/ui/")
        if name not in FILES:
            raise HTTPError(404, "not_found", f"no such dashboard file {name[:100]!r}")
        return send(name)

    async def moved(req: Request) -> Response:
        async def empty() -> AsyncIterator[bytes]:
            yield b""

        return StreamResponse(empty(), "text/plain", 308, (("location", "/ui/"),))

    agent.router.add("GET", "/ui", moved)
    agent.router.add("GET", "/ui/", index)
    agent.router.add_prefix("GET", "/ui/", asset)


__all__ = ["FILES", "install_dashboard"]
