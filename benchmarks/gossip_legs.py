"""The gossipmesh legs of benchmarks/proxy.py: real agents, their sidecar proxies on CPU 1.

- ``gossipmesh (1 sidecar)``: wrk → agent A's outbound listener (``Host: bench``) → the nginx
  backend, registered as a local ``[[service]]`` of A (the sidecar connects to it directly).
- ``gossipmesh (2 sidecars)``: the real mesh path. wrk → agent A's outbound → agent B's inbound →
  the backend, which only B registers. Both agents share CPU 1, so the figure is per core for
  the whole mesh hop.

Routing, balancing, request ids/traceparent and metrics are all on (they always are). ``extra``
adds agent flags (``--proxy-workers N``), ``cpus`` is the ``taskset -c`` list the agents run on
("" for none). The agents
join each other on 127.0.0.2/127.0.0.3 and the leg waits until A routes to B's instance.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from _procs import Proc, wait_until

A_IP, B_IP = "127.0.0.2", "127.0.0.3"
OUTBOUND_PORT = 4140


def _agent(
    workdir: str,
    name: str,
    ip: str,
    services_toml: str,
    join: str | None,
    python: Sequence[str] = (),
    extra: Sequence[str] = (),
    cpus: str = "1",
) -> Proc:
    data_dir = os.path.join(workdir, name)
    os.makedirs(data_dir, exist_ok=True)
    conf = os.path.join(data_dir, "agent.toml")
    with open(conf, "w") as f:
        f.write(services_toml)
    pin = ["taskset", "-c", cpus] if cpus else []
    argv = [
        *pin, *(python or (sys.executable, "-m", "gossipmesh")), "agent",
        "--name", name, "--bind", f"{ip}:7946", "--admin", f"{ip}:7947",
        "--outbound", f"{ip}:{OUTBOUND_PORT}", "--inbound", f"{ip}:4143",
        "--data-dir", data_dir, "--profile", "local", "--config", conf, "--log-level", "warn",
        *extra,
    ]  # fmt: skip
    if join:
        argv += ["--join", join]
    proc = Proc(name, argv)
    proc.start()
    return proc


def _routable(admin_ip: str, node: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin_ip}:7947/v1/services", timeout=1) as resp:
            rows: list[dict[str, Any]] = json.loads(resp.read())
    except OSError:
        return False
    return any(r["service"] == "bench" and r["node"] == node and r.get("routable") for r in rows)


def _service(backend_port: int) -> str:
    return f'[[service]]\nname = "bench"\nport = {backend_port}\naddress = "127.0.0.1"\n'


def legs(
    backend_port: int, python: Sequence[str] = (), extra: Sequence[str] = (), cpus: str = "1"
) -> list[tuple[str, str, str, Callable[[str], list[Proc]]]]:
    """(label, url, Host header, start(workdir) -> processes) for each gossipmesh leg;
    ``python``: the command that stands for ``python -m gossipmesh`` (default that)."""

    def one(workdir: str) -> list[Proc]:
        a = _agent(workdir, "a", A_IP, _service(backend_port), None, python, extra, cpus)
        if not wait_until(lambda: _routable(A_IP, "a"), 30):
            raise RuntimeError("agent a never listed its bench instance as routable")
        return [a]

    def two(workdir: str) -> list[Proc]:
        b = _agent(workdir, "b", B_IP, _service(backend_port), None, python, extra, cpus)
        time.sleep(1.0)
        a = _agent(workdir, "a", A_IP, "", f"{B_IP}:7946", python, extra, cpus)
        if not wait_until(lambda: _routable(A_IP, "b"), 30):
            raise RuntimeError("agent a never saw b's bench instance as routable")
        return [a, b]

    start: list[tuple[str, Callable[[str], list[Proc]]]] = [
        ("gossipmesh (1 sidecar)", one),
        ("gossipmesh (2 sidecars)", two),
    ]
    return [(label, f"http://{A_IP}:{OUTBOUND_PORT}/", "bench", fn) for label, fn in start]
