"""SO_REUSEPORT workers: several processes, each with its own trio loop and proxy, share the
listening ports; the kernel spreads connections across them. This adds cores, not efficiency per
core. The supervisor forwards SIGTERM/SIGINT and kills stragglers after ``stop_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from gossipmesh.proxy.clock import NEVER_NS, NS_PER_S, Clock, MonotonicClock

log = logging.getLogger("gossipmesh.proxy")


def serve_workers(
    workers: int,
    run_worker: Callable[[int], None],
    stop_s: float = 5.0,
    clock: Clock | None = None,
) -> int:
    """Run ``run_worker(i)`` in ``workers`` forked processes and wait for them; returns how many
    failed.

    Each worker runs its own trio loop and its own ``Proxy(reuse_port=True)`` on the same fixed
    ports: one Python process is bound to about one core, so this is how the data plane uses
    more than one. Workers share nothing (pools, outlier state, retry budgets and metrics are per
    worker; label metrics with ``ProxyMetrics(worker=str(i))``). Call it before any trio loop
    runs in this process. SIGTERM or SIGINT to the parent is passed on to every worker; a worker
    still running ``stop_s`` after that is killed (``clock``: no trio loop runs here, so the
    default is ``MonotonicClock``).
    """
    if not 1 <= workers <= 256:
        raise ValueError(f"workers must be 1..256, not {workers}")
    pids: list[int] = []
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = 0
    clock = clock or MonotonicClock()
    try:
        for i in range(workers):
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    for sig, handler in old.items():
                        signal.signal(sig, handler)
                    run_worker(i)
                    code = 0
                except KeyboardInterrupt:
                    code = 0
                except BaseException:
                    log.exception("proxy worker %d failed", i)
                finally:
                    os._exit(code)
            pids.append(pid)
        waiting = set(pids)
        kill_at_ns = NEVER_NS
        while waiting:
            for pid in list(waiting):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
                waiting.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                # A worker ended by the stop signal we passed on stopped as asked.
                if code != 0 and not (stopping and code in (-signal.SIGTERM, -signal.SIGINT)):
                    failed += 1
            if not waiting:
                break
            if stopping and kill_at_ns == NEVER_NS:
                kill_at_ns = clock.now_ns() + int(stop_s * NS_PER_S)
            if clock.now_ns() > kill_at_ns:
                for pid in waiting:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return failed
