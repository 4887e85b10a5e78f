"""Settings of the SWIM core, frozen, with memberlist-derived presets.

Theory of operation: every knob of the protocol lives here as a plain ``int`` with its unit in
its name, so a config is a value that can be compared, printed, hashed and passed to thousands of
simulated nodes. ``__post_init__`` rejects nonsense early (a probe timeout longer than the probe
interval would make every probe fail) with a ``UsageError`` that names the field. The reconnect
and reap settings copy Serf's defaults (reconnect to failed members for 24 h).

The presets copy hashicorp/memberlist's ``DefaultLANConfig``, ``DefaultWANConfig`` and
``DefaultLocalConfig`` (the Lifeguard-era values) for probing, gossip, retransmits and push-pull,
but not for the suspicion timeout. memberlist ties the number of confirmations it waits for to α
(k = α - 2), so its *minimum* suspicion at 20 members is already 4·log10(20) s = 5.2 s and a real
failure can never be declared faster than that. We decouple them: ``suspicion_confirmations`` (K)
is its own field, and *confirmation probes* (``confirm_probe_fanout``: a few members that hear a
suspicion probe the suspect themselves and, if it is silent, raise their own suspicion) make
those K independent confirmations arrive within about one probe interval. That lets α be halved
while β is doubled, so β·α -- the wait of a *lone*, unconfirmed accuser, which is what protects a
healthy member from one sick accuser -- is exactly memberlist's, and only a suspicion that K
other members confirmed resolves faster (at half memberlist's minimum).

``SwimConfig.memberlist(profile)`` gives memberlist's exact numbers (k = α - 2, no confirmation
probes) for comparisons and for clusters that must behave exactly like Serf/Consul.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gossipmesh.errors import UsageError

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """SWIM + Lifeguard settings. Defaults are the ``lan`` preset."""

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
    # α: suspicion minimum = suspicion_mult * max(1, log10(n)) * probe_interval -- how long a
    # suspicion that K members confirmed still waits for a refutation. 1..32. LAN 2 (memberlist
    # 4): with confirmation probes the confirmations come within ~1 probe interval, so the
    # minimum no longer has to cover waiting for them.
    suspicion_mult: int = 2
    # β: suspicion maximum = suspicion_max_timeout_mult * minimum; the timeout starts there and
    # shrinks with confirmations. 1..64. LAN 12 (memberlist 6): keep β·α equal to memberlist's so
    # a lone accuser waits exactly as long as in memberlist (24·log10(n) probe intervals on LAN).
    suspicion_max_timeout_mult: int = 12
    # K: how many independent confirmations (distinct members other than the accuser) take the
    # timeout from the maximum down to the minimum (log-shaped, memberlist's formula). 0..32;
    # 0 means the timeout is always the minimum (no Lifeguard protection). memberlist uses
    # suspicion_mult - 2. LAN 3: enough agreeing members that one sick accuser plus one flaky
    # link cannot reach the minimum, few enough that confirmation probes deliver them quickly.
    suspicion_confirmations: int = 3
    # Confirmation probes: a member that hears someone else's suspicion of X, and has not
    # probed X itself, probes X once (direct ping carrying the suspicion, then ping-req, like a
    # normal probe) with probability min(1, fanout / (live - 2)), so about this many members do
    # it per suspicion whatever the cluster size. A failed probe raises its own suspicion: an
    # independent confirmation. 0 disables (memberlist's behaviour). 0..64; LAN 6: somewhat more
    # than K, so K confirmations still arrive when a prober or two loses packets.
    confirm_probe_fanout: int = 6
    # Last-word probes (issue 19): a member whose suspicion of X runs out before it has heard X
    # declared dead, and that never failed to reach X itself, probes X once before declaring
    # it. Only about confirm_probe_fanout members per suspicion do so at once (probability
    # min(1, fanout / (live - 2)), as for confirmation probes; members with a Lifeguard health
    # score above 0 always do); the others wait this long for their verdict -- "dead" from a
    # failed last word, or X's refutation -- and probe only if neither came. That keeps a death
    # at O(fanout) last-word probes instead of O(n) in a healthy cluster. 0 sends every last
    # word at once (the behaviour before issue 19). 0..10 min; LAN 500 ms, half a probe
    # interval: the accuser's "dead" reaches most members within it (0.5-0.7 s from the first
    # death to the last member at 100-1,000 nodes), and a member the news misses declares at
    # most this much later than uncapped (BENCHMARKS.md, "Last-word probes capped").
    last_word_grace_ms: int = 500
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
    # Verification work that gossip from one source address may cost us (each new claim's
    # signature or certificate check is one token): a token bucket refilled at
    # verify_rate_per_s up to verify_burst; claims beyond it are dropped and counted
    # (reject.rate_limited). An honest member relays each piece of news once, so the default is
    # far above what a forming 1,000-node cluster sends from one source. At most
    # verify_sources_max buckets are kept (least recently used go first).
    verify_rate_per_s: int = 200
    verify_burst: int = 1000
    verify_sources_max: int = 1024
    # A push-pull is merged a chunk per turn of the runtime's owner task, so one big state never
    # stalls it: at most merge_chunk_verifications claims verified (or merge_chunk_records
    # records looked at) per turn, the rest on a timer due at once. An exchange whose claims fail
    # verification push_pull_reject_max times is abandoned (the peer is lying). At most
    # merge_pending_max exchanges wait to be merged; a newer one replaces the oldest.
    merge_chunk_verifications: int = 32
    # A member's claim that carries its certificate (its first after start, or one new to the
    # relay) is gossiped with it this many times per holder, then with a 32-byte reference: by
    # then most members hold the certificate, and two claims with certificates fill a packet.
    certificate_transmits: int = 3
    merge_chunk_records: int = 2048
    push_pull_reject_max: int = 64
    merge_pending_max: int = 4

    def __post_init__(self) -> None:
        _range(self, "probe_interval_ms", 10, 600_000)
        _range(self, "probe_timeout_ms", 1, self.probe_interval_ms - 1)
        _range(self, "indirect_checks", 0, 16)
        _range(self, "retransmit_mult", 1, 16)
        _range(self, "suspicion_mult", 1, 32)
        _range(self, "suspicion_max_timeout_mult", 1, 64)
        _range(self, "suspicion_confirmations", 0, 32)
        _range(self, "confirm_probe_fanout", 0, 64)
        _range(self, "last_word_grace_ms", 0, 600_000)
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
        _range(self, "verify_rate_per_s", 1, 1_000_000)
        _range(self, "verify_burst", 1, 1_000_000)
        _range(self, "verify_sources_max", 1, 1_000_000)
        _range(self, "merge_chunk_verifications", 1, 1_000_000)
        _range(self, "merge_chunk_records", 1, 10_000_000)
        _range(self, "push_pull_reject_max", 1, 1_000_000)
        _range(self, "merge_pending_max", 1, 1024)
        _range(self, "certificate_transmits", 1, 64)

    @classmethod
    def lan(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultLANConfig timing (1 s probes, 500 ms timeout, 30 s push-pull) with
        α=2, β=12 (β·α = memberlist's 24), K=3, confirmation probes to 6."""
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultWANConfig timing (5 s probes, 3 s timeout, gossip 500 ms to 4) with
        α=3, β=12 (β·α = memberlist's 36), K=3, confirmation probes to 6."""
        base: dict[str, Any] = dict(
            probe_interval_ms=5000,
            probe_timeout_ms=3000,
            suspicion_mult=3,
            suspicion_max_timeout_mult=12,
            gossip_interval_ms=500,
            gossip_nodes=4,
            last_word_grace_ms=2500,
            gossip_to_dead_ms=60_000,
            push_pull_interval_ms=60_000,
            push_pull_timeout_ms=30_000,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def local(cls, **overrides: Any) -> SwimConfig:
        """memberlist DefaultLocalConfig timing (200 ms timeout, 1 indirect check, λ=2) with
        α=2, β=9 (β·α = memberlist's 18; 3 cannot be halved in integers), K=3, fanout 6, and a
        2 s reconnect interval (Serf's is 30 s) so a healed partition merges quickly."""
        base: dict[str, Any] = dict(
            probe_interval_ms=1000,
            probe_timeout_ms=200,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=2,
            suspicion_max_timeout_mult=9,
            gossip_interval_ms=100,
            gossip_to_dead_ms=15_000,
            push_pull_interval_ms=15_000,
            push_pull_timeout_ms=1000,
            # Serf reconnects to failed members every 30 s; on one host or a rack (what
            # ``local`` is for) a healed partition should not wait that long, and a push-pull
            # to a dead member every 2 s costs nothing there.
            reconnect_interval_ms=2000,
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

    @classmethod
    def memberlist(cls, name: str, **overrides: Any) -> SwimConfig:
        """The ``name`` preset with memberlist's exact suspicion numbers: its α and β, k = α - 2
        expected confirmations and no confirmation probes. For comparisons with Serf/Consul and
        for mixed clusters that must time out exactly like them."""
        alpha = {"lan": 4, "wan": 6, "local": 3}.get(name)
        if alpha is None:
            raise UsageError(f"unknown profile {name!r} (expected lan, wan or local)")
        base: dict[str, Any] = dict(
            suspicion_mult=alpha,
            suspicion_max_timeout_mult=6,
            suspicion_confirmations=alpha - 2,
            confirm_probe_fanout=0,
        )
        base.update(overrides)
        return cls.preset(name, **base)

    def replace(self, **changes: Any) -> SwimConfig:
        return dataclasses.replace(self, **changes)


def _range(cfg: SwimConfig, field: str, lo: int, hi: int) -> None:
    value = getattr(cfg, field)
    if type(value) is not int:
        raise UsageError(f"swim config {field}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise UsageError(f"swim config {field}={value}: must be in {lo}..{hi}")
