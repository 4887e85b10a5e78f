"""Timers as data.

Theory of operation: the core never cancels a timer. It returns ``SetTimer(Timer(...), at_ms)``
and the runtime hands the ``Timer`` back once, at or after ``at_ms``. Each timer carries what it
was set for -- a token (a probe's sequence number, a periodic timer's generation, a suspicion's id)
and, where it concerns a member, the member's name and incarnation -- and the core re-checks that
the world still matches before acting. A timer that is late, duplicated or obsolete (the probe
was acked, the suspect refuted, the node restarted its periodic timers) is ignored and counted.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class TimerKind(enum.Enum):
    PROBE = "probe"  # periodic: start the next probe
    PROBE_TIMEOUT = "probe_timeout"  # no direct ack yet: ask relays (ping-req)
    PROBE_END = "probe_end"  # no ack at all by the end of the probe: suspect the target
    CONFIRM_TIMEOUT = "confirm_timeout"  # confirmation probe: no direct ack yet, ask relays
    CONFIRM_END = "confirm_end"  # confirmation probe unanswered: raise our own suspicion
    INDIRECT = "indirect"  # we relayed a ping and heard nothing: send the origin a nack
    SUSPICION = "suspicion"  # a suspicion may have run out: declare the member dead
    GOSSIP = "gossip"  # periodic: send queued broadcasts to a few random members
    PUSH_PULL = "push_pull"  # periodic: full state exchange with one random member
    RECONNECT = "reconnect"  # periodic: try to reach a member held dead (partition healing)
    REAP = "reap"  # a dead or left member may be forgotten
    MERGE = "merge"  # merge the next chunk of a push-pull state (due at once)

    # Enum's own ``__hash__`` is Python code (``hash(self._name_)``), one extra call on every
    # lookup of a kind in a dict, and the node looks its periodic kinds up on every timer.
    # Members are singletons and compare by identity, so the identity hash agrees with equality.
    __hash__ = object.__hash__


class Timer(NamedTuple):
    """What a timer was set for. A named tuple, not a frozen dataclass: equally immutable, and
    built in a third of the time (a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` per field), which counts because a node sets about eight timers a
    second."""

    kind: TimerKind
    token: int
    name: str = ""
    incarnation: int = 0
