"""TCP listeners: a raw TCP connection spliced to a balanced endpoint of one service.

Theory of operation
-------------------
A TCP service has no requests, so the pipeline runs once per connection: the service's cluster
is the destination (no route), the balancer picks an endpoint, a connect failure counts against
it (outlier detection) and the next endpoint not tried yet is asked, up to the service's retry
attempts. A remote endpoint is reached through its agent's inbound listener with a CONNECT
(tunnels.py); then bytes are spliced both ways until either side ends.
"""

from __future__ import annotations

import logging
import socket
from random import Random

from gossipmesh.proxy.clock import Clock
from gossipmesh.proxy.deadlines import Deadlines
from gossipmesh.proxy.limits import TCP
from gossipmesh.proxy.metrics import ProxyMetrics
from gossipmesh.proxy.pipeline import Accounting, pick_endpoint
from gossipmesh.proxy.routing import Dest, Directory
from gossipmesh.proxy.sockio import IO, ConnectFailed, ConnLost, SockIO
from gossipmesh.proxy.tunnels import Tunnels
from gossipmesh.proxy.upstream import Overloaded, Upstreams

log = logging.getLogger("gossipmesh.proxy")


class TcpProxy:
    __slots__ = ("directory", "upstreams", "tunnels", "accounting", "deadlines", "rng", "clock")

    def __init__(
        self,
        directory: Directory,
        upstreams: Upstreams,
        tunnels: Tunnels,
        accounting: Accounting,
        deadlines: Deadlines,
        rng: Random,
    ) -> None:
        self.directory = directory
        self.upstreams = upstreams
        self.tunnels = tunnels
        self.accounting = accounting
        self.deadlines = deadlines
        self.rng = rng
        self.clock: Clock = deadlines.clock

    @property
    def metrics(self) -> ProxyMetrics:
        return self.accounting.metrics

    async def serve(self, sock: socket.socket, addr: object, service: str) -> None:
        """Serve one accepted connection (non-blocking) of TCP service ``service``."""
        m = self.metrics
        m.open_connections[TCP] += 1
        m.connections_total[TCP] += 1
        listener = f"tcp:{service}"
        lc = m.listener_connections
        lc[listener] = lc.get(listener, 0) + 1
        down = SockIO(sock, self.upstreams.budget)
        self.deadlines.add(down)
        up: IO | None = None
        try:
            d = self.directory.view.dests.get((service, ()))
            if d is None or not d.endpoints:
                m.error(service, "no_healthy_endpoint")
                return
            opened = await self.connect(d)
            if opened is None:
                m.error(service, "upstream_connect_failure")
                return
            up, tail = opened
            if tail:
                await down.send_all(tail)
            await self.tunnels.splice(down, up)
        except ConnLost:
            pass
        except Exception:
            log.exception("tcp connection for %s failed", service)
        finally:
            self.deadlines.discard(down)
            down.close()
            if up is not None:
                self.upstreams.discard(up)
            m.open_connections[TCP] -= 1
            lc[listener] -= 1

    async def connect(self, d: Dest) -> tuple[IO, bytes] | None:
        """A connection to an endpoint of ``d`` (and the bytes the peer sent past its CONNECT
        answer), trying up to ``1 + retry_attempts`` endpoints; None if every try failed."""
        settings = d.settings
        tried: list[int] = []
        for _ in range(1 + settings.retry_attempts):
            now_ns = self.clock.now_ns()
            idx = pick_endpoint(d, self.rng, now_ns, self.accounting.horizon_ns, tried)
            if idx < 0:
                return None
            tried.append(idx)
            ep = d.endpoints[idx]
            io: IO | None = None
            try:
                io = await self.upstreams.open_endpoint(ep, settings.connect_ms, d.service)
                tail = b""
                if ep.inbound is not None:
                    tail = await self.tunnels.mesh_connect(io, ep, settings)
            except Overloaded:
                return None  # the descriptor budget is spent: no endpoint's fault
            except (ConnectFailed, ConnLost) as e:
                if io is not None:
                    self.upstreams.discard(io)
                self.accounting.connect_failed(d.states[idx], self.clock.now_ns(), d)
                log.debug("tcp %s: %s failed: %s", d.service, ep.key, e)
                continue
            self.accounting.record(d.states[idx], False, self.clock.now_ns(), d)
            return io, tail
        return None


__all__ = ["TcpProxy"]
