"""The external data planes' view of the routing snapshot: backends, servers, routes. Pure.

Theory of operation
-------------------
HAProxy and nginx are configured from the same inputs the native proxy gets: the frozen
``RouteTable`` (clusters with their endpoints and ``ServiceSettings``) and the routes. ``layout``
flattens them into what a proxy config is made of:

- one ``Backend`` per cluster (a service, optionally narrowed to a tag subset), with the
  service's settings and its ``Server``s;
- one ``Server`` per endpoint: where the proxy connects (the peer agent's inbound listener, or
  the local instance itself) and ``dest``, the ``x-gossipmesh-dest`` value that names the
  instance to the peer's inbound side (docs/ARCHITECTURE.md, "Mesh hop");
- the routes, compiled, in precedence order, with the weights the operator configured (the
  table's routes have an empty destination's weight moved to the others; an engine that can
  see emptiness at request time does that itself, so an endpoint change stays a runtime change);
- the local instances the inbound listener may reach (never anything else: not an open proxy).

Names are the engines' business (``haproxy_config``, ``nginx_config``); ``Backend.key`` is the
cluster key they derive them from. Everything here is frozen and compared by value, which is
what ``diff.classify`` needs to tell an endpoint change from a structural one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gossipmesh.config.schema import RouteConfig
from gossipmesh.proxy.router import CompiledRoute, compile_route
from gossipmesh.proxy.table import ClusterKey, RouteTable, ServiceSettings

ENGINES = ("native", "haproxy", "nginx")
EXTERNAL_ENGINES = ("haproxy", "nginx")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


class Unexpressible(ValueError):
    """A value an engine's configuration cannot carry intact."""


def printable(value: str) -> str:
    """``value`` if it is printable ASCII (what both engines' quoting carries intact), else
    Unexpressible: a newline in a header value must never become a new directive."""
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise Unexpressible(f"{value[:40]!r} holds control or non-ASCII characters")
    return value


@dataclass(frozen=True, slots=True)
class Server:
    """One endpoint of a backend. ``host:port`` is where the proxy connects; ``dest`` is the
    instance's ``ADDRESS:PORT`` (the server's name in HAProxy); ``remote`` says the connection
    goes to a peer agent's inbound listener, which needs the mesh fields."""

    dest: str
    host: str
    port: int
    weight: int
    node: str
    remote: bool


@dataclass(frozen=True, slots=True)
class Backend:
    key: ClusterKey
    settings: ServiceSettings
    servers: tuple[Server, ...]

    @property
    def service(self) -> str:
        return self.key[0]

    @property
    def tags(self) -> tuple[str, ...]:
        return self.key[1]


@dataclass(frozen=True, slots=True)
class LocalInstance:
    """An instance registered on this node: the only places the inbound listener forwards to."""

    service: str
    address: str
    port: int

    @property
    def dest(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Layout:
    backends: tuple[Backend, ...]  # sorted by key
    routes: tuple[CompiledRoute, ...]  # precedence order, configured weights
    table_routes: tuple[CompiledRoute, ...]  # the table's: empty destinations' weight moved
    # Endpoints left out because another endpoint of the same backend has the same ``dest``
    # (two nodes running an instance at the same ADDRESS:PORT): "backend-key dest node" lines.
    skipped: tuple[str, ...] = ()

    def backend(self, key: ClusterKey) -> Backend | None:
        for b in self.backends:
            if b.key == key:
                return b
        return None


def layout(
    table: RouteTable, routes: Iterable[RouteConfig] = (), *, unique_dests: bool = False
) -> Layout:
    """Pure: the data plane's view of ``table``; ``routes`` are the route entities the table was
    built from (their configured weights; the table's own routes are kept too).

    ``unique_dests``: keep one server per ``dest`` in a backend (HAProxy names servers by it,
    and names are unique); the others are listed in ``Layout.skipped``."""
    backends = []
    skipped: list[str] = []
    for key in sorted(table.clusters):
        cluster = table.clusters[key]
        servers: list[Server] = []
        seen: set[str] = set()
        for ep in cluster.endpoints:  # sorted by (node, address, port)
            if unique_dests and ep.dest in seen:
                skipped.append(f"{backend_label(key)} {ep.dest} {ep.node}")
                continue
            seen.add(ep.dest)
            host, port = ep.inbound if ep.inbound is not None else (ep.address, ep.port)
            servers.append(
                Server(ep.dest, host, port, max(1, ep.weight), ep.node, ep.inbound is not None)
            )
        backends.append(Backend(key, cluster.settings, tuple(servers)))
    compiled = sorted((compile_route(r) for r in routes), key=lambda r: r.sort_key)
    return Layout(tuple(backends), tuple(compiled), table.routes, tuple(skipped))


def local_instances(services: Mapping[str, Iterable[tuple[str, int]]]) -> tuple[LocalInstance, ...]:
    """The node's own instances, sorted, duplicates dropped."""
    found = {
        LocalInstance(name, host, port)
        for name, instances in services.items()
        for host, port in instances
    }
    return tuple(sorted(found, key=lambda i: (i.service, i.address, i.port)))


def backend_label(key: ClusterKey) -> str:
    """``web`` or ``web[v2,eu]``: how logs and status name a cluster."""
    service, tags = key
    return f"{service}[{','.join(tags)}]" if tags else service


def tags_digest(tags: tuple[str, ...]) -> str:
    """A short stable name for a tag subset (tags may hold characters no engine allows in a
    name)."""
    return hashlib.sha256("\0".join(tags).encode()).hexdigest()[:12]


__all__ = [
    "ENGINES",
    "EXTERNAL_ENGINES",
    "Backend",
    "Layout",
    "LocalInstance",
    "Server",
    "Unexpressible",
    "backend_label",
    "layout",
    "local_instances",
    "printable",
    "tags_digest",
]
