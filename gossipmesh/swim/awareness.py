"""Lifeguard local health awareness: slow down when *we* seem to be the problem.

Theory of operation
-------------------
A member that is overloaded, paused or losing packets itself will see everyone else miss their
acks and accuse healthy members. Lifeguard (memberlist's ``awareness.go``) keeps a small score of
evidence about our own health, 0 (healthy) up to ``max_multiplier - 1``:

- +1 when a probe fails (or, if we asked relays, +1 per relay that did not even send a nack:
  the relays are presumed healthy, so silence from them points at us),
- +1 when we have to refute a rumour about ourselves,
- -1 when a probe succeeds.

The probe interval and probe timeout are multiplied by ``score + 1``, so a sick member probes
less often and waits longer before accusing anyone.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Move the score by ``delta``, clamped to 0..max_multiplier-1; return the new score."""
        score = self.score + delta
        if score < 0:
            score = 0
        elif score > self.max_multiplier - 1:
            score = self.max_multiplier - 1
        self.score = score
        return score

    def scale(self, timeout_ms: int) -> int:
        return timeout_ms * (self.score + 1)
