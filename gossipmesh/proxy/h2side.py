"""The proxy's HTTP/2 side, built (and the h2 library imported) at the first HTTP/2 connection.

Why: h2, hpack and hyperframe and our h2*.py modules cost an idle agent 2.5 MiB of RSS (issue
19), and most meshes carry HTTP/1.1 only. ``H2Side`` stands where ``h2serve.H2Front`` stands for
the rest of the proxy (``TaskLoop.h2``, the epoll engine through it, and ``Handshakes.serve_h2``
for ALPN ``h2`` on the mesh hop): the first connection that sniffs as HTTP/2 calls ``build``,
which imports h2serve, h2exchange and h2pool and wires them exactly as they were wired at start
before; every later connection goes straight to the built front. The pool's nursery (the
proxy's, while it serves) and its drain on the way out are passed through.

This is the one lazy boundary of the HTTP/2 stack; nothing per request or per stream runs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from gossipmesh.proxy.downstream import Downstream
    from gossipmesh.proxy.h2pool import H2Pool
    from gossipmesh.proxy.h2serve import H2Front


class H2Side:
    __slots__ = ("_build", "front", "pool", "_nursery")

    def __init__(self, build: Callable[[], tuple[H2Front, H2Pool]]) -> None:
        self._build = build
        self.front: H2Front | None = None  # None until the first HTTP/2 connection
        self.pool: H2Pool | None = None
        self._nursery: trio.Nursery | None = None

    def built(self) -> H2Front:
        if self.front is None:
            self.front, self.pool = self._build()
            self.pool.nursery = self._nursery
        return self.front

    async def detected(self, conn: Downstream, first: bytes) -> bool:
        """``H2Front.detected``: True when ``conn`` is HTTP/1.1 after all."""
        return await self.built().detected(conn, first)

    async def serve(self, conn: Downstream, prefix: bytes = b"") -> None:
        """``H2Front.serve``: ``conn`` as an HTTP/2 server connection until it ends."""
        await self.built().serve(conn, prefix)

    def attach(self, nursery: trio.Nursery) -> None:
        """The proxy serves: upstream HTTP/2 connections run their readers in ``nursery``."""
        self._nursery = nursery
        if self.pool is not None:
            self.pool.nursery = nursery

    def detach(self) -> None:
        """The proxy stopped: close pooled HTTP/2 connections and forget the nursery."""
        self._nursery = None
        if self.pool is not None:
            self.pool.drain()
            self.pool.nursery = None


__all__ = ["H2Side"]
