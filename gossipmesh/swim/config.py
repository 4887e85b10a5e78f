"""Settings of the SWIM core, frozen, with memberlist's presets.

Theory of operation: every knob of the protocol lives here as a plain ``int`` with its unit in
its name, so a config is a value that can be compared, printed, hashed and passed to thousands of
simulated nodes. ``__post_init__`` rejects nonsense early (a probe timeout longer than the probe
interval would make every probe fail) with a ``UsageError`` that names the field. The presets copy
hashicorp/memberlist's ``DefaultLANConfig``, ``DefaultWANConfig`` and ``DefaultLocalConfig`` (the
Lifeguard-era values) so that our timing can be compared with Serf/Consul directly; the reconnect
and reap settings copy Serf's defaults (reconnect to failed members for 24 h).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gossipmesh.errors import UsageError

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """SWIM + Lifeguard settings. Defaults are memberlist's LAN preset."""

    # How often one member is probed (ping). Lower detects failures faster at the cost of
    # bandwidth. Range 10 ms .. 10 min; LAN 1 s, WAN 5 s.
    probe_interval_ms: int = 1000
    # How long to wait for a direct ack before asking others (ping-req). Should be about the
    # 99th-percentile RTT. Must be below probe_interval_ms; LAN 500 ms, WAN 3 s.
    probe_timeout_ms: int = 500
    # How many members relay an indirect probe (ping-req) when the direct one fails. 0..16.
    indirect_checks: int = 3
    # λ: each broadcast is piggybacked retransmit_mult * ceil(log10(n + 1)) times. 1..16.
    retransmit_mult: int = 4
    # α: suspicion minimum = suspicion_mult * max(1, log10(n)) * probe_interval. 1..32
    # (Lifeguard expects suspicion_mult - 2 independent confirmations, so >= 3 is useful).
    suspicion_mult: int = 4
    # β: suspicion maximum = suspicion_max_timeout_mult * minimum; the timeout starts there and
    # shrinks with confirmations. 1..64.
    suspicion_max_timeout_mult: int = 6
    # Lifeguard local health: the score ranges 0..awareness_max_multiplier-1 and multiplies the
    # probe interval and timeout by (score + 1). 1 disables it. 1..64.
    awareness_max_multiplier: int = 8
    # Dedicated gossip round: every gossip_interval_ms send queued broadcasts to gossip_nodes
    # random members. 0 disables the round (piggybacking on probes still happens).
    gossip_interval_ms: int = 200
    gossip_nodes: int = 3
    # Keep gossiping to members this long after they were declared dead, so a falsely accused
    # member hears about it and refutes. 0..1 day.
    gossip_to_dead_ms: int = 30_000
    # Full state exchange over TCP with one random member, scaled up for clusters over 32
    # nodes. 0 disables the periodic exchange (join still uses it).
    push_pull_interval_ms: int = 30_000
    # How long the runtime should wait for a push-pull stream (memberlist's TCPTimeout).
    push_pull_timeout_ms: int = 10_000
    # Largest push-pull payload accepted, and the stream frame limit the runtime should use.
    push_pull_max_bytes: int = 16 * 1024 * 1024
    # Outgoing periodic/reconnect push-pulls in flight at once; more are skipped and counted.
    push_pull_concurrency_max: int = 4
    # Largest UDP payload (plaintext) we build or accept. Every node of a cluster must agree.
    # 256..65507; 1400 keeps datagrams under a 1500 MTU once encrypted.
    packet_size_bytes: int = 1400
    # Partition healing (Serf's reconnect): every reconnect_interval_ms maybe push-pull with a
    # random member held DEAD for less than reconnect_timeout_ms. 0 interval disables.
    reconnect_interval_ms: int = 30_000
    reconnect_timeout_ms: int = 24 * HOUR_MS
    # Forget DEAD and LEFT members this long after they changed state (emit MemberReaped).
    # Must be >= reconnect_timeout_ms, since reconnecting needs the member's address.
    dead_reap_ms: int = 24 * HOUR_MS
    # Bounded memory: most broadcasts queued for piggybacking (oldest, most-sent dropped first).
    broadcast_queue_max: int = 4096
    # Bounded memory: how many recent user-payload digests are remembered for de-duplication.
    user_dedupe_max: int = 4096
    # Bounded memory: ping-reqs we relay at once on behalf of others; more are dropped.
    indirect_pending_max: int = 1024

    def __post_init__(self) -> None:
        _range(self, "probe_interval_ms", 10, 600_000)
        _range(self, "probe_timeout_ms", 1, self.probe_interval_ms - 1)
        _range(self, "indirect_checks", 0, 16)
        _range(self, "retransmit_mult", 1, 16)
        _range(self, "suspicion_mult", 1, 32)
        _range(self, "suspicion_max_timeout_mult", 1, 64)
        _range(self, "awareness_max_multiplier", 1, 64)
        _range(self, "gossip_interval_ms", 0, 600_000)
        _range(self, "gossip_nodes", 0, 64)
        _range(self, "gossip_to_dead_ms", 0, 24 * HOUR_MS)
        _range(self, "push_pull_interval_ms", 0, 24 * HOUR_MS)
        _range(self, "push_pull_timeout_ms", 1, 600_000)
        _range(self, "push_pull_max_bytes", 1024, 1024 * 1024 * 1024)
        _range(self, "push_pull_concurrency_max", 1, 1024)
        _range(self, "packet_size_bytes", 256, 65_507)
        _range(self, "reconnect_interval_ms", 0, 24 * HOUR_MS)
        _range(self, "reconnect_timeout_ms", 0, 365 * 24 * HOUR_MS)
        _range(self, "dead_reap_ms", self.reconnect_timeout_ms, 365 * 24 * HOUR_MS)
        _range(self, "broadcast_queue_max", 16, 1_000_000)
        _range(self, "user_dedupe_max", 16, 1_000_000)
        _range(self, "indirect_pending_max", 1, 1_000_000)

    @classmethod
    def lan(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultLANConfig: 1 s probes, 500 ms timeout, α=4, β=6, 30 s push-pull."""
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultWANConfig: 5 s probes, 3 s timeout, α=6, gossip 500 ms to 4."""
        base: dict[str, Any] = dict(
            probe_interval_ms=5000,
            probe_timeout_ms=3000,
            suspicion_mult=6,
            gossip_interval_ms=500,
            gossip_nodes=4,
            gossip_to_dead_ms=60_000,
            push_pull_interval_ms=60_000,
            push_pull_timeout_ms=30_000,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def local(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultLocalConfig: 200 ms timeout, 1 indirect check, λ=2, α=3."""
        base: dict[str, Any] = dict(
            probe_interval_ms=1000,
            probe_timeout_ms=200,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            gossip_interval_ms=100,
            gossip_to_dead_ms=15_000,
            push_pull_interval_ms=15_000,
            push_pull_timeout_ms=1000,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SwimConfig:
        """``lan``, ``wan`` or ``local`` by name (for ``--profile``)."""
        makers = {"lan": cls.lan, "wan": cls.wan, "local": cls.local}
        if name not in makers:
            raise UsageError(f"unknown profile {name!r} (expected lan, wan or local)")
        return makers[name](**overrides)

    def replace(self, **changes: Any) -> SwimConfig:
        return dataclasses.replace(self, **changes)


def _range(cfg: SwimConfig, field: str, lo: int, hi: int) -> None:
    value = getattr(cfg, field)
    if type(value) is not int:
        raise UsageError(f"swim config {field}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise UsageError(f"swim config {field}={value}: must be in {lo}..{hi}")
