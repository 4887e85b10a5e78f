"""The descriptor budget: client connections can never take the agent's reserved descriptors.

Theory of operation
-------------------
A process has ``limit`` descriptors (its soft RLIMIT_NOFILE, which the agent raises at start).
With 1,024 of them, 1,100 idle connections to the inbound listener left the agent unable to
accept an admin request, a config stream or a gossip join (issue 13). So the proxy keeps to a
budget: ``reserve`` descriptors (``ProxyLimits.reserved_descriptors``) are for everything else
the agent does, and so are the ``baseline`` it already had open when the proxy started
(listeners, files, epoll). The proxy's own sockets (clients, upstreams, tunnels) are counted in
``in_use``; ``SockIO``/``StreamIO`` add and remove themselves (sockio.py), so a socket closed by
the watchdog is given back too.

Two thresholds over ``cap = limit - reserve - baseline``:

- a client connection is accepted only while ``in_use < client_cap``, an eighth of ``cap``
  (at least ``MIN_UPSTREAM_SHARE``) below it, so that the clients already in can still reach
  their upstreams; a refused client is closed at once and counted (``refused``);
- an upstream connection is opened only while ``in_use < cap``; past it the request gets 503
  ``overloaded`` (limit ``descriptors``), never an error that would eject a healthy endpoint.

Pure bookkeeping (the rlimit is read once, by ``for_process``); the limits are exported in
``/metrics`` (``gossipmesh_proxy_descriptors``).
"""

from __future__ import annotations

import os
import resource

MIN_UPSTREAM_SHARE = 16


class DescriptorBudget:
    __slots__ = ("limit", "reserve", "baseline", "in_use", "peak")

    def __init__(self, limit: int, reserve: int, baseline: int = 0) -> None:
        self.limit = limit
        self.reserve = reserve
        self.baseline = baseline
        self.in_use = 0  # the proxy's open sockets
        self.peak = 0

    @classmethod
    def for_process(cls, reserve: int) -> DescriptorBudget:
        """The budget of this process now: its soft limit, and what is already open."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        try:
            baseline = len(os.listdir("/proc/self/fd"))
        except OSError:
            baseline = 0
        return cls(limit, reserve, baseline)

    @property
    def cap(self) -> int:
        """Descriptors the proxy may hold at most."""
        return max(0, self.limit - self.reserve - self.baseline)

    @property
    def client_cap(self) -> int:
        """Descriptors the proxy holds at most when it accepts another client."""
        cap = self.cap
        return max(0, cap - max(MIN_UPSTREAM_SHARE, cap // 8))

    def may_accept(self) -> bool:
        return self.in_use < self.client_cap

    def may_connect(self) -> bool:
        return self.in_use < self.cap

    def opened(self) -> None:
        n = self.in_use = self.in_use + 1
        if n > self.peak:
            self.peak = n

    def closed(self) -> None:
        self.in_use -= 1


__all__ = ["MIN_UPSTREAM_SHARE", "DescriptorBudget"]
