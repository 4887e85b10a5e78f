"""What it takes to move an external proxy from one layout to the next: runtime API calls, or a
reload. Pure.

Theory of operation
-------------------
HAProxy can change a running backend's servers without a reload (its runtime API: add, delete,
address, weight, state), and a reload, however seamless, starts a new worker with fresh
counters, health state and connection pools. Endpoints are what changes all the time (a node
joins or dies, a health check flips, an operator drains an instance), so an endpoint change must
never cost a reload. Routes and service settings change when an operator writes them: a reload is
fine then.

``classify(old, new)`` therefore compares the *structure* (the set of backends and each one's
settings, the routes with their configured weights, the local instances) and the *servers*
apart. A structural difference means a reload, with one reason per kind of difference (logs and
status say why). Otherwise the answer is the list of server operations that turn ``old``'s
servers into ``new``'s: ``add`` (a new dest), ``remove`` (a dest gone), ``weight``, ``addr`` (the
same dest now reached elsewhere: its node moved its inbound listener, or another node now holds
that dest). nginx has no runtime API in its open-source build: every change is a reload there,
and this module is not consulted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gossipmesh.dataplane.model import Backend, Layout, LocalInstance, Server, backend_label
from gossipmesh.proxy.table import ClusterKey

OpKind = Literal["add", "remove", "weight", "addr"]


@dataclass(frozen=True, slots=True)
class ServerOp:
    kind: OpKind
    backend: ClusterKey
    server: Server  # for ``remove``, the server as it was


@dataclass(frozen=True, slots=True)
class Change:
    reload_reasons: tuple[str, ...] = ()
    ops: tuple[ServerOp, ...] = ()

    @property
    def reload(self) -> bool:
        return bool(self.reload_reasons)

    @property
    def empty(self) -> bool:
        return not self.reload_reasons and not self.ops


def classify(
    old: Layout | None,
    new: Layout,
    old_local: tuple[LocalInstance, ...] = (),
    new_local: tuple[LocalInstance, ...] = (),
) -> Change:
    """The cheapest way from ``old`` to ``new`` (``old`` None: nothing applied yet: reload)."""
    if old is None:
        return Change(("first configuration",))
    reasons: list[str] = []
    old_b = {b.key: b for b in old.backends}
    new_b = {b.key: b for b in new.backends}
    added = sorted(new_b.keys() - old_b.keys())
    gone = sorted(old_b.keys() - new_b.keys())
    if added:
        reasons.append("new backends: " + ", ".join(backend_label(k) for k in added))
    if gone:
        reasons.append("backends gone: " + ", ".join(backend_label(k) for k in gone))
    changed = sorted(
        k for k in new_b.keys() & old_b.keys() if new_b[k].settings != old_b[k].settings
    )
    if changed:
        reasons.append("service settings: " + ", ".join(backend_label(k) for k in changed))
    if old.routes != new.routes:
        reasons.append("routes changed")
    if old_local != new_local:
        reasons.append("local instances changed")
    if reasons:
        return Change(tuple(reasons))
    ops: list[ServerOp] = []
    for key in sorted(new_b):
        ops.extend(server_ops(old_b[key], new_b[key]))
    return Change((), tuple(ops))


def server_ops(old: Backend, new: Backend) -> list[ServerOp]:
    """Runtime operations turning ``old``'s servers into ``new``'s (same backend)."""
    before = {s.dest: s for s in old.servers}
    after = {s.dest: s for s in new.servers}
    ops: list[ServerOp] = []
    for dest in sorted(before.keys() - after.keys()):
        ops.append(ServerOp("remove", new.key, before[dest]))
    for dest in sorted(after):
        s = after[dest]
        was = before.get(dest)
        if was is None:
            ops.append(ServerOp("add", new.key, s))
            continue
        if (was.host, was.port, was.remote) != (s.host, s.port, s.remote):
            ops.append(ServerOp("addr", new.key, s))
        if was.weight != s.weight:
            ops.append(ServerOp("weight", new.key, s))
    return ops


__all__ = ["Change", "OpKind", "ServerOp", "classify", "server_ops"]
