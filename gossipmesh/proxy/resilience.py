"""Retry budget, outlier detection and circuit breaking. Pure: time is passed in as ``now_ns``.

Theory of operation
-------------------
**Retry budget** (Finagle/Linkerd). A fixed "retry N times" multiplies load by N+1 exactly when a
service is failing, which is how retries turn a brown-out into an outage. The budget instead lets
retries be at most ``percent``% of the requests seen in the last ``WINDOW_S`` seconds, plus
``min_per_s`` retries per second so a quiet service can still retry at all. Counts are kept in one
bucket per second (a ring of ``WINDOW_S`` buckets), so recording a request is O(1) and only a
retry decision sums the window.

**Outlier detection** (Envoy's consecutive-errors detector). Each 5xx or connect failure bumps the
endpoint's consecutive-failure count; any success resets it. Reaching the threshold ejects the
endpoint for ``base × times ejected`` (capped), unless that would leave more than
``max_ejected_percent`` of the service ejected — the detector must not be able to empty a service.
An endpoint that has stayed healthy for a whole cap length since its last ejection has its
multiplier forgotten. Ejection ends by time alone; the next failure after it counts from zero.

**Circuit breaker** (Envoy's, which is really a set of admission limits). Per service: requests in
flight, requests waiting for an upstream connection, open upstream connections. Past a limit the
proxy answers 503 at once with ``x-gossipmesh-overloaded: <limit>`` instead of queueing: a queue
in front of an overloaded service only adds latency to the failure.
"""

from __future__ import annotations

from collections.abc import Sequence

from gossipmesh.proxy.balancer import EndpointState
from gossipmesh.proxy.clock import NS_PER_MS, NS_PER_S
from gossipmesh.proxy.table import ServiceSettings

WINDOW_S = 10


class RetryBudget:
    __slots__ = ("percent", "min_per_s", "_secs", "_requests", "_retries")

    def __init__(self, percent: int = 20, min_per_s: int = 10) -> None:
        self.percent = percent
        self.min_per_s = min_per_s
        self._secs = [-1] * WINDOW_S
        self._requests = [0] * WINDOW_S
        self._retries = [0] * WINDOW_S

    def _bucket(self, now_ns: int) -> int:
        sec = now_ns // NS_PER_S
        i = sec % WINDOW_S
        if self._secs[i] != sec:
            self._secs[i] = sec
            self._requests[i] = 0
            self._retries[i] = 0
        return i

    def record_request(self, now_ns: int) -> None:
        """Every original request (not retries) deposits into the budget."""
        sec = now_ns // NS_PER_S
        i = sec % WINDOW_S
        if self._secs[i] != sec:  # a new second: ``_bucket`` resets its slot
            i = self._bucket(now_ns)
        self._requests[i] += 1

    def window(self, now_ns: int) -> tuple[int, int]:
        """(requests, retries) over the last WINDOW_S seconds including this one."""
        sec = now_ns // NS_PER_S
        req = ret = 0
        for i in range(WINDOW_S):
            if sec - WINDOW_S < self._secs[i] <= sec:
                req += self._requests[i]
                ret += self._retries[i]
        return req, ret

    def try_withdraw(self, now_ns: int) -> bool:
        """True and count it if one more retry fits the budget; False means "budget exhausted"."""
        req, ret = self.window(now_ns)
        allowed = req * self.percent // 100 + self.min_per_s * WINDOW_S
        if ret >= allowed:
            return False
        self._retries[self._bucket(now_ns)] += 1
        return True


def record_outcome(
    state: EndpointState,
    failed: bool,
    now_ns: int,
    settings: ServiceSettings,
    peers: Sequence[EndpointState],
) -> bool:
    """Update ``state`` with one result; True if this result ejected it.

    ``peers`` are the endpoints of the service (``state`` among them), used for the
    max-ejected-percent cap.
    """
    if not failed:
        state.consecutive_failures = 0
        if (
            state.times_ejected
            and now_ns > state.ejected_until_ns + settings.max_ejection_ms * NS_PER_MS
        ):
            state.times_ejected = 0
        return False
    state.consecutive_failures += 1
    if state.consecutive_failures < settings.consecutive_failures:
        return False
    if state.ejected_until_ns > now_ns:
        return False  # already out (a request that started before the ejection)
    ejected = sum(1 for p in peers if p.ejected_until_ns > now_ns)
    if (ejected + 1) * 100 > settings.max_ejected_percent * max(1, len(peers)):
        return False
    state.times_ejected += 1
    duration_ms = min(settings.base_ejection_ms * state.times_ejected, settings.max_ejection_ms)
    state.ejected_until_ns = now_ns + duration_ms * NS_PER_MS
    state.consecutive_failures = 0
    return True


class BreakerCounters:
    """Admission counters for one service. The forwarder increments and decrements them."""

    __slots__ = ("inflight", "pending", "connections")

    def __init__(self) -> None:
        self.inflight = 0
        self.pending = 0
        self.connections = 0

    def admit_request(self, s: ServiceSettings) -> str | None:
        """None to admit, else the name of the limit that refuses."""
        if self.inflight >= s.max_requests:
            return "max_requests"
        return None

    def admit_pending(self, s: ServiceSettings) -> str | None:
        if self.pending >= s.max_pending:
            return "max_pending"
        return None

    def admit_connection(self, s: ServiceSettings) -> str | None:
        if self.connections >= s.max_connections:
            return "max_connections"
        return None
