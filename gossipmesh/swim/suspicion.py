"""Lifeguard suspicion: a timeout that starts long and shrinks with independent confirmations.

Theory of operation
-------------------
Plain SWIM waits a fixed time before turning a suspect into dead. That time is a trade-off: long
enough for a slow-but-alive member to hear the rumour and refute it, short enough to detect real
failures quickly. Lifeguard (Dadgar et al., 2018; memberlist's ``suspicion.go``) makes the wait
adaptive: it starts at a *maximum* and every *independent* confirmation (another member saying
"I suspect it too") shrinks it logarithmically towards a *minimum*. A lone accuser, who may itself
be the sick one, has to wait the full maximum; when k other members agree, the truth is likely
and the timeout is the minimum.

    min = suspicion_mult * max(1, log10(max(1, n))) * probe_interval
    max = suspicion_max_timeout_mult * min
    timeout(c) = max(min, max - log(c + 1) / log(k + 1) * (max - min))

with ``k`` expected confirmations. memberlist derives k from α (``suspicion_mult - 2``: "we hit
the nominal timeout two probe intervals short of what the multiplier implies") and uses 0 when
there are too few other members to confirm (then the timeout is simply ``min``). We make k its
own setting (``suspicion_confirmations``), because with confirmation probes (``probe.py``) the
confirmations arrive within about a probe interval whatever α is; and when confirmation probes
are on, a small cluster expects min(k, n - 2) -- every member that could confirm -- instead of
none. Confirmations are counted once per distinct source, the original accuser excluded, and
stop counting at k.

Time is passed in; a ``Suspicion`` only answers "when is the deadline now". The node arms a timer
at each new deadline and re-checks the deadline when any of them fires (timers are never
cancelled).
"""

from __future__ import annotations

import math

from gossipmesh.ids import Millis


def suspicion_bounds_ms(
    suspicion_mult: int, max_timeout_mult: int, n: int, probe_interval_ms: int
) -> tuple[int, int]:
    """(min, max) suspicion timeout in ms for a cluster of ``n`` live members (memberlist)."""
    node_scale = max(1.0, math.log10(max(1, n)))
    # memberlist keeps three decimals of the scale before multiplying; do the same so our
    # numbers match its numbers exactly.
    min_ms = suspicion_mult * int(node_scale * 1000) * probe_interval_ms // 1000
    return min_ms, max_timeout_mult * min_ms


def suspicion_timeout_ms(confirmations: int, k: int, min_ms: int, max_ms: int) -> int:
    """Total timeout (from the start of the suspicion) after ``confirmations`` confirmations."""
    if k < 1:
        return min_ms
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_ms - frac * (max_ms - min_ms)
    return max(min_ms, math.floor(raw))


class Suspicion:
    """One member's suspicion: who accused, who confirmed, and the current deadline."""

    __slots__ = (
        "confirmed_by",
        "confirmations",
        "k",
        "max_ms",
        "min_ms",
        "start_ms",
        "token",
        "deadline_ms",
        "final_probed",
        "last_word_drawn",
        "last_word_waited",
    )

    def __init__(
        self, token: int, source: str, k: int, min_ms: int, max_ms: int, start_ms: Millis
    ) -> None:
        self.token = token
        self.k = k
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.start_ms = start_ms
        self.confirmations = 0
        # The accuser is not an independent confirmation of its own accusation.
        self.confirmed_by: set[str] = {source}
        self.deadline_ms = start_ms + suspicion_timeout_ms(0, k, min_ms, max_ms)
        # The node's last-word probe at the deadline was started (see probe.py).
        self.final_probed = False
        # The node drew whether to take its last word at once or to wait a grace for others'
        # (probe.py, "Last-word probes"); it draws once per suspicion. Waiting: the draw said
        # wait, and the grace is not over yet.
        self.last_word_drawn = False
        self.last_word_waited = False

    def would_confirm(self, source: str) -> bool:
        """Would ``confirm(source)`` count? (Checked before paying for a signature check.)"""
        return self.confirmations < self.k and source not in self.confirmed_by

    def confirm(self, source: str) -> bool:
        """Count a confirmation from ``source``; True if it was new (and the deadline moved)."""
        if self.confirmations >= self.k or source in self.confirmed_by:
            return False
        self.confirmed_by.add(source)
        self.confirmations += 1
        self.deadline_ms = self.start_ms + suspicion_timeout_ms(
            self.confirmations, self.k, self.min_ms, self.max_ms
        )
        return True
