"""The load driver: steady, bounded traffic into ``web`` through n1's sidecar, and its numbers.

Theory of operation
-------------------
A fixed number of worker threads (``workers``), each with one keep-alive connection to the entry
node's outbound listener (``Host: web``), share a target rate: worker ``i`` sends its k-th request
at ``start + (k * workers + i) / rate``. A worker that falls behind (a slow answer) skips the
missed slots instead of bursting to catch up, so the offered load never exceeds the rate and
the in-flight count never exceeds ``workers``. Every loop ends at ``stop()`` or the deadline, and
every request has a socket timeout, so shutting down is bounded too.

Each answer is one ``Sample``: when it was sent (seconds since the driver started), latency,
status (0: no HTTP answer at all), and from ``web``'s JSON the ``api`` version and instance that
served it. That is the ground truth for the success rate and for the observed canary split,
measured from outside the mesh. A share of requests (``SLOW_SHARE``) go to ``/slow``, which the
path route pins to v1; they are kept out of the canary split and reported on their own. Another
share (``ADMIN_SHARE``) go to ``/admin``, which the demo's deny policy refuses: those samples are
marked ``admin`` (with the policy a 403 names) and kept out of every success figure.

Samples live in a list bounded by ``MAX_SAMPLES`` (a 1-hour demo at 60 req/s is 216 000); past
it, new samples are counted but not kept.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SAMPLES = 500_000
REQUEST_TIMEOUT_S = 10.0  # above web's whole request budget: the mesh answers first


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    latency_ms: float
    status: int
    version: str  # "v1", "v2" or "" (failed)
    api: str  # the api instance that answered
    slow: bool
    admin: bool = False  # a request to /admin, which the demo's deny policy refuses
    policy: str = ""  # the policy a 403 named

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (q in 0..100); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Window:
    requests: int
    ok: int
    rate_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    statuses: dict[str, int]

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.requests if self.requests else None


def summarize(samples: Iterable[Sample], span_s: float) -> Window:
    samples = list(samples)
    lat = [s.latency_ms for s in samples]
    return Window(
        requests=len(samples),
        ok=sum(1 for s in samples if s.ok),
        rate_per_s=len(samples) / span_s if span_s > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p99_ms=percentile(lat, 99),
        max_ms=max(lat) if lat else None,
        statuses=dict(sorted(Counter(str(s.status) for s in samples).items())),
    )


def split(samples: Iterable[Sample]) -> dict[str, int]:
    """Successful canary-routed answers by api version (the path-routed /slow and /admin
    excluded)."""
    c = Counter(s.version for s in samples if s.ok and not s.slow and not s.admin)
    return {"v1": c.get("v1", 0), "v2": c.get("v2", 0)}


class Driver:
    def __init__(
        self,
        target: tuple[str, int],
        rate_per_s: float,
        workers: int,
        slow_share: float,
        deadline_s: float,
        seed: int | None = None,
        admin_share: float = 0.0,
    ) -> None:
        assert rate_per_s > 0 and workers > 0
        self.target = target
        self.rate_per_s = rate_per_s
        self.workers = workers
        self.slow_share = slow_share
        self.admin_share = admin_share
        self.deadline_s = deadline_s  # seconds after start() at which every worker stops
        self.samples: list[Sample] = []
        self.dropped = 0  # samples past MAX_SAMPLES (counted, not kept)
        self.start_mono = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(seed)

    def now_s(self) -> float:
        return time.monotonic() - self.start_mono

    def start(self) -> None:
        self.start_mono = time.monotonic()
        for i in range(self.workers):
            rng = random.Random(self._rng.getrandbits(64))
            t = threading.Thread(target=self._work, args=(i, rng), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = REQUEST_TIMEOUT_S + 1) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _work(self, i: int, rng: random.Random) -> None:
        interval_s = self.workers / self.rate_per_s
        next_s = i / self.rate_per_s
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                now = self.now_s()
                if now >= self.deadline_s:
                    return
                if next_s > now:
                    self._stop.wait(min(next_s - now, self.deadline_s - now))
                    continue
                next_s = max(next_s + interval_s, now)  # skip missed slots: never burst
                draw = rng.random()
                slow = draw < self.slow_share
                admin = not slow and draw < self.slow_share + self.admin_share
                if conn is None:
                    conn = http.client.HTTPConnection(*self.target, timeout=REQUEST_TIMEOUT_S)
                path = "/slow" if slow else "/admin" if admin else "/"
                sample, keep = self._one(conn, path, slow, admin)
                if not keep:
                    conn.close()
                    conn = None
                if len(self.samples) < MAX_SAMPLES:
                    self.samples.append(sample)  # list.append is atomic under the GIL
                else:
                    self.dropped += 1
        finally:
            if conn is not None:
                conn.close()

    def _one(
        self, conn: http.client.HTTPConnection, path: str, slow: bool, admin: bool
    ) -> tuple[Sample, bool]:
        t0 = self.now_s()
        status, version, api, policy, keep = 0, "", "", "", False
        try:
            conn.request("GET", path, headers={"Host": "web"})
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
            keep = resp.getheader("connection", "").lower() != "close"
            if status == 200:
                body = json.loads(raw)
                version, api = str(body.get("version") or ""), str(body.get("api") or "")
            elif status == 403:
                body = json.loads(raw)
                policy = str(body.get("policy") or "")[:100] if isinstance(body, dict) else ""
        except (OSError, http.client.HTTPException, ValueError):
            keep = False
        latency_ms = (self.now_s() - t0) * 1000
        return Sample(t0, latency_ms, status, version, api, slow, admin, policy), keep
