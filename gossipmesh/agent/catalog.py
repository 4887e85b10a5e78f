"""The catalog: members × node-owned service records × health × config, as the proxy sees it.

Theory of operation
-------------------
Three replicated sources meet here, and this module is the one pure function that joins them:

- SWIM's member list says which nodes are up (``Member.state``);
- each node's signed record lists the instances it hosts, their health as its own checker last
  saw it, and the address of its inbound proxy listener (``RecordBody.proxy``);
- the shared config document holds ``service/``, ``route/`` and ``policy/`` entities.

``build_catalog`` is called by the agent's owner task whenever any source changes, and the result
goes to ``route_table`` and on to ``Proxy.update_table``. It never raises on data from the mesh:

- An entity that fails ``schema.validate_entity`` is left out and listed in ``Catalog.invalid``.
  The document already refuses invalid deltas, but a replica written by a newer or buggier agent
  could still hold one, and one bad change must not take down every proxy's table.
- A record whose body does not decode is likewise left out and listed.

An instance is an *endpoint* (eligible for traffic) when all of these hold:

- its health is ``passing`` (``unknown``, ``warning`` and ``critical`` get no traffic: an instance
  must prove itself before it is used);
- its node is ALIVE or SUSPECT. Suspicion is a rumour that Lifeguard may still refute; dropping
  endpoints on it would let one slow prober empty a service. DEAD, LEFT and unknown nodes are out.
  The local node is always routable to itself: it is evidently running, and its own instances are
  reached directly rather than through gossip-derived state;
- it can be reached: remote instances through their agent's inbound listener, so a remote record
  with no ``proxy`` address yields no endpoint (dialling its ``address:port`` here would reach
  the wrong host); local ones through this agent's own inbound when the native proxy enforces
  policies there (``local_via_inbound``), else directly (``Endpoint.inbound = None``);
- the operators allow it: its node matches the service's ``nodes`` (names or fnmatch patterns;
  none listed: any node) and its weight is at most ``weight_max`` (100 by default, also for a
  service with no ``service/`` entity). A node signs its own record, so it can claim any
  service and weight; this is where the claim meets what the operators signed. An instance that
  breaks the rule is kept in ``instances`` with ``refused`` saying why, and never routed.

Every output is sorted, so the same inputs give equal catalogs whatever order they arrive in.
The work is one pass over the instances plus a sort: linear enough for thousands of instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.config.schema import (
    PolicyConfig,
    RouteConfig,
    ServiceConfig,
    parse_key,
    validate_entity,
)
from gossipmesh.config.service import allows
from gossipmesh.crdt.records import Health, RecordBody, SignedRecord
from gossipmesh.errors import ConfigValidationError, DecodeError
from gossipmesh.proxy.authz import Policies
from gossipmesh.proxy.table import Endpoint, RouteTable, build_route_table
from gossipmesh.swim.member import Member, MemberState

# What ``member_state`` says for an owner SWIM does not (or no longer) know.
UNKNOWN_MEMBER = "unknown"
ROUTABLE_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})
ROUTABLE_STATE_VALUES = frozenset(s.value for s in ROUTABLE_STATES)

RecordInput = SignedRecord | tuple[str, RecordBody]


@dataclass(frozen=True, slots=True)
class CatalogInstance:
    """One service instance with everything ``gossipmesh services`` shows about it."""

    service: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    weight: int
    health: Health
    member_state: str  # a MemberState value, or "unknown"
    inbound: tuple[str, int] | None  # how the proxy reaches it; None: directly
    routable: bool  # the instance is in ``Catalog.endpoints``
    refused: str | None = None  # why the service's config does not allow it (nodes, weight_max)

    @property
    def current_health(self) -> Health:
        """``health`` as the mesh should read it now: what the owner's record says while its node
        is alive or suspect, ``critical`` once it is dead, left or unknown. A dead node cannot
        vouch for its instances, and its last record still says what it saw before it died
        (Consul's serfHealth check fails a dead node's services the same way)."""
        if self.member_state in ROUTABLE_STATE_VALUES:
            return self.health
        return "critical"

    @property
    def sort_key(self) -> tuple[str, str, str, int]:
        return (self.service, self.node, self.address, self.port)


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    """Something the catalog left out, and why: ``key`` is ``KIND/NAME`` or ``record/OWNER``."""

    key: str
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Catalog:
    instances: tuple[CatalogInstance, ...] = ()
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    routes: Mapping[str, RouteConfig] = field(default_factory=dict)
    policies: Mapping[str, PolicyConfig] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    invalid: tuple[InvalidEntry, ...] = ()

    @property
    def refused(self) -> tuple[CatalogInstance, ...]:
        """Instances the services' ``nodes`` / ``weight_max`` do not allow."""
        return tuple(i for i in self.instances if i.refused is not None)


def _owner_and_body(record: RecordInput) -> tuple[str, RecordBody]:
    if isinstance(record, SignedRecord):
        return record.owner, record.decoded()
    owner, body = record
    return owner, body


def build_catalog(
    members: Iterable[Member],
    records: Iterable[RecordInput],
    local_node: str,
    config_items: Iterable[tuple[str, Any]],
    local_via_inbound: bool = False,
) -> Catalog:
    """Pure: join members, node records and config entities into the proxy's view.

    ``local_via_inbound``: this node's own instances are reached through its own inbound
    listener (its record's ``proxy``) like everyone else's, so the destination's authorization
    is checked for every request, a neighbour's included; else they are dialled directly.

    ``records`` holds ``SignedRecord``s (as ``RecordTable.records()`` yields them, already
    verified) or ``(owner, RecordBody)`` pairs; ``config_items`` is ``Document.items()``.
    """
    invalid: list[InvalidEntry] = []
    states = {m.name: m.state for m in members}

    # Records: one per owner. If an owner shows up twice the higher version wins for signed
    # records; for bare bodies the last one given wins (the caller holds one per owner anyway).
    bodies: dict[str, tuple[int, RecordBody]] = {}
    for rec in records:
        version = rec.version if isinstance(rec, SignedRecord) else 0
        try:
            owner, body = _owner_and_body(rec)
        except DecodeError as e:
            owner = rec.owner if isinstance(rec, SignedRecord) else "?"
            invalid.append(InvalidEntry(f"record/{owner}", "body", str(e)))
            continue
        held = bodies.get(owner)
        if held is None or version >= held[0]:
            bodies[owner] = (version, body)

    services: dict[str, ServiceConfig] = {}
    routes: dict[str, RouteConfig] = {}
    policies: dict[str, PolicyConfig] = {}
    for key, body in config_items:
        try:
            kind, name = parse_key(key)
            entity = validate_entity(kind, name, body)
        except ConfigValidationError as e:
            invalid.append(InvalidEntry(str(key), e.field, e.reason))
            continue
        except Exception as e:
            # The validator is meant to raise only ConfigValidationError; if some body finds a
            # way around it, that entity is dropped and reported, not every proxy's table.
            invalid.append(InvalidEntry(str(key), "", f"{type(e).__name__}: {e}"))
            continue
        if isinstance(entity, ServiceConfig):
            services[name] = entity
        elif isinstance(entity, RouteConfig):
            routes[name] = entity
        elif isinstance(entity, PolicyConfig):
            policies[name] = entity
        # cert/, revocation/ and trust/ entities are the document's authority, not routing.

    instances: list[CatalogInstance] = []
    endpoints: dict[str, list[Endpoint]] = {}
    for owner, (_, body) in bodies.items():
        state = states.get(owner)
        is_local = owner == local_node
        member_state = state.value if state is not None else UNKNOWN_MEMBER
        node_up = is_local or state in ROUTABLE_STATES
        # A local call through this node's own inbound pays one more loopback hop, and in
        # exchange meets the same policies as a remote one (one enforcement point).
        inbound = body.proxy if not is_local or local_via_inbound else None
        reachable = is_local or inbound is not None
        seen: set[tuple[str, str, int]] = set()
        for inst in body.services:
            ident = (inst.name, inst.address, inst.port)
            if ident in seen:
                continue  # a duplicate in one record would otherwise double its weight
            seen.add(ident)
            service = services.get(inst.name) or ServiceConfig(inst.name)  # defaults apply
            refused = allows(service, owner, inst.weight)
            routable = node_up and reachable and inst.health == "passing" and refused is None
            instances.append(
                CatalogInstance(
                    service=inst.name,
                    node=owner,
                    address=inst.address,
                    port=inst.port,
                    tags=inst.tags,
                    weight=inst.weight,
                    health=inst.health,
                    member_state=member_state,
                    inbound=inbound,
                    routable=routable,
                    refused=refused,
                )
            )
            if routable:
                endpoints.setdefault(inst.name, []).append(
                    Endpoint(
                        node=owner,
                        address=inst.address,
                        port=inst.port,
                        tags=inst.tags,
                        weight=inst.weight,
                        inbound=inbound,
                    )
                )

    instances.sort(key=lambda i: i.sort_key)
    return Catalog(
        instances=tuple(instances),
        services=dict(sorted(services.items())),
        routes=dict(sorted(routes.items())),
        policies=dict(sorted(policies.items())),
        endpoints={
            name: tuple(sorted(eps, key=lambda e: e.key)) for name, eps in sorted(endpoints.items())
        },
        invalid=tuple(sorted(invalid, key=lambda x: (x.key, x.field, x.reason))),
    )


def route_table(catalog: Catalog, version: int = 0, wall_ms: int | None = None) -> RouteTable:
    """The proxy's frozen snapshot for ``catalog``.

    Every service some node registers is in the table, even with no routable instance: a request
    for a known service whose instances are all failing must get 503 "no healthy endpoint", not
    404 "no route" as if nobody had ever heard of it.
    """
    endpoints: dict[str, tuple[Endpoint, ...]] = {i.service: () for i in catalog.instances}
    endpoints.update(catalog.endpoints)
    return build_route_table(catalog.services, catalog.routes, endpoints, version, wall_ms)


@dataclass(frozen=True, slots=True)
class TableInputs:
    """What one rebuild hands the proxy, as plain data: the catalog, the table's version and the
    wall time its shifts were read at. Proxy workers (agent/worker_pool.py) are sent this, not the
    built table: the table and the policies hold objects of the compiled build's modules (mypyc
    native classes do not pickle), and every process builds the same table from the same inputs.
    """

    catalog: Catalog
    version: int
    wall_ms: int

    def table(self) -> RouteTable:
        return route_table(self.catalog, self.version, self.wall_ms)

    def policies(self) -> Policies:
        defaults = {n: svc.default_policy for n, svc in self.catalog.services.items()}
        return Policies(self.catalog.policies.values(), defaults)


def next_shift_ms(catalog: Catalog, wall_ms: int) -> int | None:
    """When the next scheduled shift step of any route begins (config/shift.py), or None."""
    times = [
        t
        for r in catalog.routes.values()
        for d in r.destinations
        if d.shift is not None and (t := d.shift.next_change_ms(wall_ms)) is not None
    ]
    return min(times, default=None)
