"""The proxy's own bounds: sizes, counts and the timeouts that are not per service.

Every byte from a client or an upstream is hostile until parsed, so each buffer, header block and
idle connection has a limit here; per-service timeouts and breaker limits live in the route table
(``ServiceSettings``).
"""

from __future__ import annotations

from dataclasses import dataclass

OUTBOUND, INBOUND, TCP = "outbound", "inbound", "tcp"  # listener directions (metric labels too)


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    max_header_bytes: int = 65536
    max_header_count: int = 100
    recv_buffer_bytes: int = 32768  # per direction per connection; bounds body memory too
    client_idle_ms: int = 60000  # downstream keep-alive idle and header-read timeout
    tunnel_idle_ms: int = 3_600_000  # WebSocket / TCP splice with no bytes either way
    max_idle_per_upstream: int = 64
    fairness_every: int = 16
    watchdog_tick_ms: int = 50
    pool_sweep_ms: int = 1000
    max_connect_response_bytes: int = 16384


__all__ = ["INBOUND", "OUTBOUND", "TCP", "ProxyLimits"]
