"""The chaos harness's network: N hosts as Linux network namespaces on a bridge in a namespace of
its own, and the link faults the nemesis plays on it.

Topology (``P`` is the run's prefix, ``gm-<pid>``, so concurrent runs never clash)::

    P-br   bridge namespace: bridges br0 (everyone), br1, br2 (the sides of a partition);
           ports a1..aN (each host's eth0) and b1..bN (each host's eth1)
    P-hK   host K: lo, eth0 = 10.213.0.(10+K)/24 (and eth1, the same address, used only when
           the host is the bridge between two sides)

The subnet exists only between these namespaces: the root network stack gets no address on it and
no route to it, and no namespace has a route anywhere else, so nothing can leave the machine.

Faults are links, as on real hardware:

* a host isolated: its bridge-side port ``aK`` goes down (its eth0 loses carrier);
* a partition into sides: each host's port moves to its side's bridge (br1, br2); no frame
  crosses between bridges;
* a bridge host X that sees both sides: X's eth0 stays on side A's bridge and its eth1 joins side
  B's bridge, with /32 routes in X for side B's addresses through eth1. A and B cannot talk;
  X talks to both.

The kernel here has neither bridge VLAN filtering nor netem nor iptables, which is why partitions
move ports between bridges and packet loss comes from the agent's own fault injection.

Everything is removed by ``ChaosNet.destroy`` (idempotent); ``sweep_stale`` removes what a run
that died without cleaning up left behind (namespaces whose owning pid no longer exists).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.213.0"
PREFIX_RE = re.compile(r"^gm-(\d+)-")
CLONE_NEWNET = 0x40000000


class ChaosUnavailable(RuntimeError):
    """The harness cannot run here (not root, no ``ip``, no network namespaces)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def require_rights() -> None:
    """Refuse, saying why, unless this process can create network namespaces."""
    if os.name != "posix" or not os.path.exists("/proc/self/ns/net"):
        raise ChaosUnavailable("the chaos harness needs Linux network namespaces")
    if os.geteuid() != 0:
        raise ChaosUnavailable(
            "the chaos harness needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network "
            "namespaces, veth pairs and bridges; run it as root"
        )
    try:
        ip("-V")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ChaosUnavailable(f"the chaos harness needs iproute2's `ip`: {exc}") from exc
    probe = f"gm-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except subprocess.CalledProcessError as exc:
        raise ChaosUnavailable(
            f"cannot create a network namespace with a bridge: {exc.stderr.strip()}"
        ) from exc
    finally:
        ip("netns", "del", probe, check=False)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``: sockets it opens from
    now on live there. Threads that talk to one host's agent and sidecar call this once."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(ns: str) -> None:
    out = ip("netns", "pids", ns, check=False).stdout.split()
    for pid in out:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def sweep_stale() -> list[str]:
    """Remove namespaces ``gm-<pid>-*`` whose pid is dead (a run killed before its clean-up),
    after killing whatever still runs in them, and such runs' temp dirs
    (``$TMPDIR/gm-<pid>-chaos-*``). Returns the names removed."""
    removed = []
    for tmp in Path(tempfile.gettempdir()).glob("gm-*-chaos-*"):
        m = PREFIX_RE.match(tmp.name)
        if m and tmp.is_dir() and not pid_alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(str(tmp))
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = PREFIX_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            _kill_netns_pids(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Host:
    index: int  # 1..N
    ns: str

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{10 + self.index}"


class ChaosNet:
    """The namespaces, veths and bridges of one run; ``destroy`` removes them all."""

    def __init__(self, n_hosts: int, prefix: str | None = None) -> None:
        if not 2 <= n_hosts <= 50:
            raise ValueError("2..50 hosts")
        self.prefix = prefix or f"gm-{os.getpid()}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts = [Host(i, f"{self.prefix}-h{i}") for i in range(1, n_hosts + 1)]
        self.created: list[str] = []
        self._bridge_host: tuple[Host, list[Host]] | None = None

    # ---- set-up and tear-down ---------------------------------------------------------------

    def create(self) -> None:
        br = self.bridge_ns
        self._add_ns(br)
        for bridge in ("br0", "br1", "br2"):
            ip("-n", br, "link", "add", bridge, "type", "bridge")
            # Forward at once: the default 15 s of listening/learning on a newly enslaved port
            # would be a partition of its own after every heal.
            ip(
                "-n",
                br,
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
                "stp_state",
                "0",
            )
            ip("-n", br, "link", "set", bridge, "up")
        for h in self.hosts:
            self._add_ns(h.ns)
            ip("-n", h.ns, "link", "set", "lo", "up")
            for side, dev in (("a", "eth0"), ("b", "eth1")):
                port = f"{side}{h.index}"
                ip(
                    "-n",
                    br,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    dev,
                    "netns",
                    h.ns,
                )
            ip("-n", br, "link", "set", f"a{h.index}", "master", "br0", "up")
            ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            ip("-n", h.ns, "link", "set", "eth0", "up")
            ip("-n", h.ns, "link", "set", "eth1", "up")
            for conf in ("all", "default", "eth0", "eth1"):
                self._sysctl(h.ns, f"net.ipv4.conf.{conf}.rp_filter", "0")

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)

    @staticmethod
    def _sysctl(ns: str, key: str, value: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
            capture_output=True,
            check=False,
            timeout=30,
        )

    def destroy(self) -> None:
        """Kill whatever still runs in our namespaces and delete them (safe to call twice)."""
        for ns in reversed(self.created):
            _kill_netns_pids(ns)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            ip("netns", "pids", ns, check=False).stdout.strip() for ns in self.created
        ):
            time.sleep(0.05)
        for ns in reversed(self.created):
            ip("netns", "del", ns, check=False)
        self.created.clear()

    # ---- link faults ------------------------------------------------------------------------

    def isolate(self, host: Host) -> None:
        ip("-n", self.bridge_ns, "link", "set", f"a{host.index}", "down")

    def partition(self, sides: Sequence[Sequence[Host]]) -> None:
        """Each side on a bridge of its own (two sides: br1 and br2)."""
        if len(sides) != 2:
            raise ValueError("two sides")
        for bridge, side in zip(("br1", "br2"), sides, strict=True):
            for h in side:
                ip("-n", self.bridge_ns, "link", "set", f"a{h.index}", "master", bridge)

    def bridge_between(self, x: Host, side_a: Sequence[Host], side_b: Sequence[Host]) -> None:
        """Sides A and B cut from each other; host ``x`` on both (eth0 on A, eth1 on B)."""
        self.partition([[x, *side_a], list(side_b)])
        ip("-n", self.bridge_ns, "link", "set", f"b{x.index}", "master", "br2", "up")
        for h in side_b:
            ip("-n", x.ns, "route", "add", f"{h.ip}/32", "dev", "eth1")
        self._bridge_host = (x, list(side_b))

    def heal(self) -> None:
        """Every port back on br0 and up; the bridge host's extra routes and link removed."""
        if self._bridge_host is not None:
            x, side_b = self._bridge_host
            for h in side_b:
                ip("-n", x.ns, "route", "del", f"{h.ip}/32", "dev", "eth1", check=False)
            ip("-n", self.bridge_ns, "link", "set", f"b{x.index}", "nomaster", check=False)
            ip("-n", self.bridge_ns, "link", "set", f"b{x.index}", "down", check=False)
            self._bridge_host = None
        for h in self.hosts:
            ip("-n", self.bridge_ns, "link", "set", f"a{h.index}", "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", f"a{h.index}", "up")
        # Neighbour entries learnt through eth1, or failed while cut off, would delay the heal.
        for h in self.hosts:
            ip("-n", h.ns, "neigh", "flush", "all", check=False)
