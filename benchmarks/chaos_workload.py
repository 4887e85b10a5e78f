"""The chaos harness's workload and observers, each bounded by a stop event set by the run.

* requests: from every host, ``GET /`` with ``Host: echo`` into the host's own sidecar
  (127.0.0.1:4140 in its namespace) at a fixed rate (open loop: a slot is fired on time on a
  small pool; a slot that finds the pool full is recorded as failed, "backlog");
* config writes: every ``write_interval_s`` a signed write of a new key ``service/cw-NNNNN``
  through an agent picked at random (from the seed); every acknowledgement is recorded;
* operator reads: every ``read_interval_s`` the real CLI (``gossipmesh config get KEY --exact``)
  in a random host's namespace, for the last acknowledged key;
* observers: every second each agent's member list and every two seconds its config keys under
  ``service/cw-`` and root hash; every ``sample_interval_s`` each agent's RSS and open FDs.

Times are seconds since the run's origin (``time.monotonic()``).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chaos_cluster import OUTBOUND, SERVICE, HostProcs, proc_sample, write_config
from chaos_net import enter_netns

from gossipmesh.client import ConfigSigner

WRITE_PREFIX = "service/cw-"


@dataclass
class Records:
    # t (its slot), host, ok, why, t done (dumps made before it was recorded have 4 fields)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    writes: list[tuple[float, int, str, int, bool, str]] = field(
        default_factory=list
    )  # t, host, key, value, acked, why
    views: list[tuple[float, int, int, dict[str, str]]] = field(
        default_factory=list
    )  # t, observer, pid, name->state
    configs: list[tuple[float, int, str, dict[str, int]]] = field(
        default_factory=list
    )  # t, observer, root, key->value
    samples: list[tuple[float, int, int, int, int]] = field(
        default_factory=list
    )  # t, host, pid, rss KiB, fds
    reads: list[tuple[float, int, bool, str]] = field(
        default_factory=list
    )  # t, host, ok, output/why
    # t asked, host, seconds to answer, answered: the observers' GET /v1/members (timeout 2 s)
    admin: list[tuple[float, int, float, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"admin": []}, **state, lock=threading.Lock())

    def add(self, name: str, row: Any) -> None:
        with self.lock:
            getattr(self, name).append(row)


class Workload:
    def __init__(self, hosts: list[HostProcs], signer: ConfigSigner, seed: int, t0: float,
                 rate_per_host: float = 4.0, write_interval_s: float = 2.0,
                 read_interval_s: float = 20.0, sample_interval_s: float = 5.0) -> None:  # fmt: skip
        self.hosts = hosts
        self.signer = signer
        self.rng = random.Random(f"gossipmesh-chaos/{seed}/workload")
        self.t0 = t0
        self.rate = rate_per_host
        self.write_interval_s = write_interval_s
        self.read_interval_s = read_interval_s
        self.sample_interval_s = sample_interval_s
        self.rec = Records()
        self.stop_load = threading.Event()  # requests, writes and reads
        self.stop_all = threading.Event()  # observers too
        self.threads: list[threading.Thread] = []
        self.next_key = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        for hp in self.hosts:
            self._spawn(self._requests, hp)
            self._spawn(self._observe, hp)
        self._spawn(self._writes)
        self._spawn(self._reads)
        self._spawn(self._samples)

    def _spawn(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name=fn.__name__)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        self.stop_load.set()
        self.stop_all.set()
        for t in self.threads:
            t.join(timeout=15)

    # ---- requests ---------------------------------------------------------------------------

    def _requests(self, hp: HostProcs) -> None:
        i = hp.host.index
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, initializer=enter_netns, initargs=(hp.host.ns,)
        )
        inflight = threading.Semaphore(16)
        host, port = OUTBOUND.rsplit(":", 1)

        def one(t: float) -> None:
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                try:
                    conn.request("GET", "/", headers={"Host": SERVICE})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status == 200
                    why = "" if ok else f"{resp.status} {body[:80]!r}"
                finally:
                    conn.close()
            except Exception as exc:  # noqa: BLE001 - every failure is a recorded result
                ok, why = False, f"{type(exc).__name__}: {exc}"[:120]
            self.rec.add("requests", (t, i, ok, why, self.now()))
            inflight.release()

        period = 1.0 / self.rate
        slot = self.now() + self.rng.random() * period
        while not self.stop_load.is_set():
            delay = slot - self.now()
            if delay > 0 and self.stop_load.wait(delay):
                break
            if inflight.acquire(blocking=False):
                pool.submit(one, slot)
            else:
                self.rec.add("requests", (slot, i, False, "backlog", slot))
            slot += period
        pool.shutdown(wait=True, cancel_futures=False)

    # ---- writes and operator reads ----------------------------------------------------------

    def _writes(self) -> None:
        while not self.stop_load.wait(self.write_interval_s):
            hp = self.rng.choice(self.hosts)
            key = f"{WRITE_PREFIX}{self.next_key:05d}"
            value = self.next_key % 10000
            self.next_key += 1
            t = self.now()
            try:
                write_config(hp, {key: {"weight_max": value}}, self.signer, timeout_s=8.0)
                self.rec.add("writes", (t, hp.host.index, key, value, True, ""))
            except Exception as exc:  # noqa: BLE001 - an unacknowledged write: no promise
                self.rec.add(
                    "writes",
                    (t, hp.host.index, key, value, False, f"{type(exc).__name__}: {exc}"[:120]),
                )

    def last_acked(self) -> str | None:
        with self.rec.lock:
            acked = [w[2] for w in self.rec.writes if w[4]]
        return acked[-1] if acked else None

    def _reads(self) -> None:
        while not self.stop_load.wait(self.read_interval_s):
            key = self.last_acked()
            if key is None:
                continue
            hp = self.rng.choice(self.hosts)
            t = self.now()
            argv = ["ip", "netns", "exec", hp.host.ns, sys.executable, "-m", "gossipmesh",
                    "--data-dir", str(hp.data_dir), "config", "get", key, "--exact", "--json"]  # fmt: skip
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
                self.rec.add("reads", (t, hp.host.index, out.returncode == 0,
                                       (out.stdout or out.stderr).strip()[:200]))  # fmt: skip
            except subprocess.TimeoutExpired:
                self.rec.add("reads", (t, hp.host.index, False, "timeout"))

    # ---- observers --------------------------------------------------------------------------

    def _observe(self, hp: HostProcs) -> None:
        enter_netns(hp.host.ns)
        i = hp.host.index
        tick = 0
        while not self.stop_all.wait(1.0):
            pid = hp.agent_pid
            if pid is None:
                continue
            asked = self.now()
            try:
                client = hp.client(2.0)
                members = {m["name"]: m["state"] for m in client.members()}
                self.rec.add("admin", (asked, i, self.now() - asked, True))
                self.rec.add("views", (self.now(), i, pid, members))
                if tick % 2 == 0:
                    data = client.config(WRITE_PREFIX)
                    keys = {k: int(v.get("weight_max", -1)) for k, v in data["entities"].items()}
                    self.rec.add("configs", (self.now(), i, str(data.get("root_hash")), keys))
            except Exception:  # noqa: BLE001 - a paused or restarting agent does not answer
                self.rec.add("admin", (asked, i, self.now() - asked, False))
            tick += 1

    def _samples(self) -> None:
        while not self.stop_all.wait(self.sample_interval_s):
            for hp in self.hosts:
                pid = hp.agent_pid
                got = proc_sample(pid) if pid is not None else None
                if pid is not None and got is not None:
                    self.rec.add("samples", (self.now(), hp.host.index, pid, got[0], got[1]))

    def snapshot_configs(self) -> dict[int, tuple[str, dict[str, int]]]:
        """Every running agent's root hash and written keys, now (used after the run)."""
        out: dict[int, tuple[str, dict[str, int]]] = {}
        for hp in self.hosts:
            try:
                data = hp.config(WRITE_PREFIX)
                out[hp.host.index] = (str(data.get("root_hash")),
                                      {k: int(v.get("weight_max", -1)) for k, v in data["entities"].items()})  # fmt: skip
            except Exception:  # noqa: BLE001 - reported as missing
                pass
        return out
