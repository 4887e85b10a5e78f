"""The proxy's own bounds: sizes, counts and the timeouts that are not per service.

Every byte from a client or an upstream is hostile until parsed, so each buffer, header block,
connection and idle connection has a limit here; per-service timeouts and breaker limits live in
the route table (``ServiceSettings``). docs/LIMITS.md gives each default and why; ``/metrics``
exports them (``gossipmesh_proxy_limit{name}``) next to the counters they bound.

Memory per client connection. Nothing large is allocated per connection: a client's bytes are
read into one receive buffer the whole proxy shares (the parser copies what it keeps before the
next read), and the buffer a response is read into is taken from a small free list for one
exchange and given back when it ends (``max_pooled_buffers`` kept). So an idle connection costs
its socket, its parser and a few small objects (about 2 KiB), and 10,000 idle connections cost
tens of MB, not the 32 KiB x 2 each they cost before (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

OUTBOUND, INBOUND, TCP = "outbound", "inbound", "tcp"  # listener directions (metric labels too)


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    max_header_bytes: int = 65536  # request line + header block (431 beyond)
    max_header_count: int = 100
    recv_buffer_bytes: int = 32768  # one read; bounds the body bytes held per exchange too
    max_pooled_buffers: int = 64  # response buffers kept for reuse between exchanges
    # Client connections open at once on one listener (each TCP listener counts apart); a new
    # one past it is refused (503 on HTTP listeners) and counted.
    max_connections_per_listener: int = 16384
    # A whole request head must arrive within this of its first byte (of the accept, for a
    # connection's first request): a client sending a header byte now and then is closed.
    head_timeout_ms: int = 10_000
    keepalive_idle_ms: int = 60_000  # a keep-alive connection with no request this long closes
    client_idle_ms: int = 60_000  # a request body that stops arriving for this long
    tunnel_idle_ms: int = 3_600_000  # WebSocket / TCP splice with no bytes either way
    max_idle_per_upstream: int = 64
    fairness_every: int = 16
    watchdog_tick_ms: int = 50
    pool_sweep_ms: int = 1000
    max_connect_response_bytes: int = 16384
    # Descriptors client and upstream connections may never take: kept for the agent's admin
    # API, gossip and config streams, health checks and files (descriptors.py).
    reserved_descriptors: int = 256
    # HTTP/2 (h2serve.py, h2link.py). A first read that is a strict prefix of the HTTP/2 preface
    # must become the whole preface (or stop matching) within this (detect.py).
    detect_timeout_ms: int = 1000
    h2_max_concurrent_streams: int = 128  # SETTINGS_MAX_CONCURRENT_STREAMS we announce
    # What a peer may send us unacknowledged on one stream / on one connection: the body bytes
    # the proxy can hold per stream and per connection, each direction (flow control).
    h2_stream_window_bytes: int = 262_144
    h2_connection_window_bytes: int = 1_048_576
    # Frames queued for a peer that does not read (control frames are not flow controlled).
    h2_max_send_buffer_bytes: int = 2_097_152
    # A request body held for a retry (a gRPC call's messages): past it the stream is not
    # replayed (but still streamed).
    h2_replay_bytes: int = 65_536

    def items(self) -> list[tuple[str, int]]:
        """Every limit by name (for ``/metrics``)."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


__all__ = ["INBOUND", "OUTBOUND", "TCP", "ProxyLimits"]
