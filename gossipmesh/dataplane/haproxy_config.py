"""HAProxy's configuration for one agent's sidecar, generated from the layout. Pure.

Theory of operation
-------------------
``render(plan)`` returns the files HAProxy reads (``haproxy.cfg`` and the services map it
names); ``server_args`` is the part of a server line the runtime API's ``add server`` repeats, so
a server added at runtime and one written in the file behave the same.

Outbound listener (app -> mesh), per request, in order:

1. the app's own ``x-gossipmesh-*`` fields are dropped (an app must not pick the instance);
   ``x-request-id`` is added when absent, ``x-forwarded-for`` appended;
2. the routes, in the native router's precedence order, each a named ACL set (host exact or
   ``*.suffix``, path exact/prefix/regex, methods, headers exact/regex/present); the first route
   whose ACLs all hold sets ``txn.gm_route``;
3. the route's destinations: one draw of ``rand(total)`` against the configured cumulative
   weights, skipping a destination whose backend has no usable server (``nbsrv``) so its share
   goes to the next one; with every destination empty the first one is kept (and answers 503);
4. no route: the Host names the service (the services map); neither: 404 ``no_route``.

Each cluster is a backend named ``gm:SERVICE`` (``gm:SERVICE:DIGEST`` for a tag subset). Its
servers are *named by their dest* (``ADDRESS:PORT`` of the instance) and
``http-send-name-header x-gossipmesh-dest`` sends that name to whichever server the balancer
(or a redispatched retry) chose: this is how the peer's inbound listener learns which of its
instances is meant, something a header set before balancing cannot say. The service's settings
map to timeouts, ``retries``/``retry-on``/``option redispatch``, an ``overloaded`` 503 at
``max_requests`` concurrent streams and ``max_pending`` queued ones, per-server ``maxconn``
(``max_connections``), a TCP health check and passive ``observe layer7`` (``on-error
mark-down`` after ``consecutive_failures`` errors, back after one good check ``base_ejection_ms``
later). An empty backend answers 503 ``no_healthy_endpoint``.

Inbound listener (mesh -> local instance): ``x-gossipmesh-dest`` must name a local instance
exactly; without it the Host must name a service with exactly one local instance (the native
inbound's rule). Anything else is 403 ``forbidden_destination``: never an open proxy.

Every string from the replicated document is single-quoted (``'`` as ``'\\''``, HAProxy's
strong quoting: no escapes, no variables); a value HAProxy could not read back intact (control or
non-ASCII characters) leaves its route out, listed in ``Rendered.left_out``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gossipmesh.dataplane.model import (
    Backend,
    Layout,
    LocalInstance,
    Unexpressible,
    printable,
    tags_digest,
)
from gossipmesh.proxy.router import (
    HDR_EXACT,
    HDR_PRESENT,
    PATH_EXACT,
    PATH_PREFIX,
    CompiledRoute,
)
from gossipmesh.proxy.table import ClusterKey, ServiceSettings

CONFIG_FILE = "haproxy.cfg"
MASTER_SOCKET = "master.sock"
STATS_SOCKET = "stats.sock"
WEIGHT_MAX = 256  # HAProxy's largest server weight
RETRY_ON_STATUSES = frozenset({401, 403, 404, 408, 425, 500, 501, 502, 503, 504})
HEALTH_CHECK_INTER_MS = 2000
HARD_STOP_AFTER_S = 120
TEXT = "content-type 'text/plain; charset=utf-8'"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one configuration is made of."""

    layout: Layout
    local: tuple[LocalInstance, ...]
    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    run_dir: str
    generation: int = 0  # names the services map, so a config never reads another's map
    threads: int = 0  # nbthread; 0: HAProxy's default (one per CPU it may run on)


@dataclass(frozen=True, slots=True)
class Rendered:
    files: dict[str, str]
    left_out: tuple[str, ...]  # "route NAME: why"


def q(value: str) -> str:
    """HAProxy strong quoting."""
    printable(value)
    return "'" + value.replace("'", "'\\''") + "'"


def services_map_name(generation: int) -> str:
    return f"services-{generation}.map"


def backend_name(key: ClusterKey) -> str:
    service, tags = key
    return f"gm:{service}:{tags_digest(tags)}" if tags else f"gm:{service}"


def local_backend_name(index: int) -> str:
    return f"gm-local:{index}"


def address(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"ipv6@{host}:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def server_args(settings: ServiceSettings, weight: int) -> str:
    """A server's keywords after its address, the same in the file and in ``add server``."""
    s = settings
    return (
        f"weight {min(max(weight, 1), WEIGHT_MAX)} maxconn {s.max_connections}"
        f" check inter {HEALTH_CHECK_INTER_MS} fastinter {max(s.base_ejection_ms, 100)}"
        f" downinter {HEALTH_CHECK_INTER_MS} rise 1 fall 3"
        f" observe layer7 error-limit {s.consecutive_failures} on-error mark-down"
    )


def balance(settings: ServiceSettings) -> list[str]:
    if settings.policy == "round_robin":
        return ["balance roundrobin"]
    if settings.policy == "ring_hash":
        return [f"balance hdr({settings.hash_header})", "hash-type consistent"]
    return ["balance leastconn"]  # least_request; peak_ewma has no HAProxy equivalent


def retry_on(settings: ServiceSettings) -> str:
    kinds = ["conn-failure", "empty-response"] if settings.retry_on_connect_failure else []
    kinds += [str(s) for s in sorted(settings.retry_on_status) if s in RETRY_ON_STATUSES]
    return " ".join(kinds) if kinds else "none"


def _error(status: int, reason: str, text: str, extra: str = "") -> str:
    # Our own words and service names ([A-Za-z0-9._-]): double quotes, for the \n escape.
    body = f'"gossipmesh: {text}\\n"'
    return (
        f"http-request return status {status} {TEXT} string {body}"
        f" hdr x-gossipmesh-error {reason}{extra}"
    )


def _backend(b: Backend) -> list[str]:
    s = b.settings
    name = backend_name(b.key)
    svc = q(b.service)
    lines = [f"backend {name}", *balance(s)]
    lines += [
        "http-send-name-header x-gossipmesh-dest",
        f"http-request set-header x-gossipmesh-service {svc}",
        _error(503, "no_healthy_endpoint", f"no healthy endpoint (service '{b.service}')")
        # Not in an old worker after a reload: it sees no usable server while it finishes
        # its last requests (measured: it would answer 503 to a request on a kept connection).
        + " if { nbsrv lt 1 } !{ stopping }",
        _error(
            503,
            "overloaded",
            f"circuit breaker open (service '{b.service}')",
            " hdr x-gossipmesh-overloaded max_requests",
        )  # fmt: skip
        + f" if {{ be_conn ge {s.max_requests} }}",
        _error(
            503,
            "overloaded",
            f"circuit breaker open (service '{b.service}')",
            " hdr x-gossipmesh-overloaded max_pending",
        )  # fmt: skip
        + f" if {{ queue ge {s.max_pending} }}",
        f"timeout connect {s.connect_ms}",
        f"timeout server {s.per_try_ms}",
        f"timeout queue {s.connect_ms}",
        f"retries {s.retry_attempts}",
        f"retry-on {retry_on(s)}",
        "option redispatch 1",
    ]
    for srv in b.servers:
        lines.append(
            f"server {srv.dest} {address(srv.host, srv.port)} {server_args(s, srv.weight)}"
        )
    return [lines[0]] + ["    " + ln for ln in lines[1:]]


def _route_acls(index: int, r: CompiledRoute) -> tuple[list[str], list[str]]:
    """(acl lines, acl names that must all hold) for route number ``index``."""
    acls: list[str] = []
    need: list[str] = []
    p = f"gm_r{index}"
    if r.hosts or r.wildcards:
        if r.hosts:
            acls.append(f"acl {p}_host var(txn.gm_host) -m str {' '.join(map(q, sorted(r.hosts)))}")
        if r.wildcards:
            acls.append(f"acl {p}_host var(txn.gm_host) -m end {' '.join(map(q, r.wildcards))}")
        need.append(f"{p}_host")
    if r.path_kind == PATH_PREFIX:
        if r.path_value != "/":
            acls.append(f"acl {p}_path path -m beg {q(r.path_value)}")
            need.append(f"{p}_path")
    elif r.path_kind == PATH_EXACT:
        acls.append(f"acl {p}_path path -m str {q(r.path_value)}")
        need.append(f"{p}_path")
    else:
        acls.append(f"acl {p}_path path -m reg {q(f'^(?:{r.path_value})$')}")
        need.append(f"{p}_path")
    if r.methods:
        acls.append(f"acl {p}_method method {' '.join(sorted(r.methods))}")
        need.append(f"{p}_method")
    for i, h in enumerate(r.headers):
        fetch = f"req.fhdr({h.name.decode('latin-1')},1)"
        if h.kind == HDR_PRESENT:
            acls.append(f"acl {p}_h{i} {fetch} -m found")
        elif h.kind == HDR_EXACT:
            acls.append(f"acl {p}_h{i} {fetch} -m str {q(h.value or '')}")
        else:
            acls.append(f"acl {p}_h{i} {fetch} -m reg {q(f'^(?:{h.value})$')}")
        need.append(f"{p}_h{i}")
    return acls, need


def _destinations(index: int, r: CompiledRoute) -> list[str]:
    on = f"{{ var(txn.gm_route) -m str r{index} }}"
    unset = "!{ var(txn.gm_be) -m found }"
    names = [backend_name(k) for k in r.clusters]
    if len(names) == 1:
        return [f"http-request set-var(txn.gm_be) str({names[0]}) if {on} {unset}"]
    lines = [f"http-request set-var(txn.gm_x) rand({r.total_weight}) if {on}"]
    previous = 0
    for name, upto in zip(names, r.cum_weights, strict=True):
        if upto > previous:  # a weight-0 destination never draws
            lines.append(
                f"http-request set-var(txn.gm_be) str({name}) if {on}"
                f" {{ var(txn.gm_x) -m int lt {upto} }} {{ nbsrv({name}) gt 0 }} {unset}"
            )
        previous = upto
    first = next(n for n, w in zip(names, _weights(r), strict=True) if w > 0)
    lines.append(f"http-request set-var(txn.gm_be) str({first}) if {on} {unset}")
    return lines


def _weights(r: CompiledRoute) -> list[int]:
    out, previous = [], 0
    for upto in r.cum_weights:
        out.append(upto - previous)
        previous = upto
    return out


def _outbound(plan: Plan, left_out: list[str]) -> list[str]:
    assert plan.outbound is not None
    lines = [
        "frontend gm-outbound",
        f"bind {address(*plan.outbound)}",
        "option forwardfor",
        "http-request del-header x-gossipmesh-dest",
        "http-request del-header x-gossipmesh-service",
        "http-request set-header x-request-id %[unique-id] unless { req.hdr(x-request-id) -m found }",
        "http-request set-var(txn.gm_host) req.hdr(host),field(1,:),lower",
    ]
    rules: list[str] = []
    for i, r in enumerate(plan.layout.routes):
        try:
            acls, need = _route_acls(i, r)
        except Unexpressible as exc:
            left_out.append(f"route {r.name}: {exc}")
            continue
        lines += acls
        cond = " ".join([*need, "!{ var(txn.gm_route) -m found }"])
        rules.append(f"http-request set-var(txn.gm_route) str(r{i}) if {cond}")
        rules += _destinations(i, r)
    lines += rules
    services_map = f"{plan.run_dir}/{services_map_name(plan.generation)}"
    lines += [
        f"http-request set-var(txn.gm_be) var(txn.gm_host),map_str({q(services_map)})"
        " unless { var(txn.gm_be) -m found }",
        _error(404, "no_route", "no route and no service named by the Host")
        + " unless { var(txn.gm_be) -m found }",
        "use_backend %[var(txn.gm_be)]",
    ]
    return [lines[0]] + ["    " + ln for ln in lines[1:]]


def _inbound(plan: Plan) -> list[str]:
    assert plan.inbound is not None
    lines = [
        "frontend gm-inbound",
        f"bind {address(*plan.inbound)}",
        "option forwardfor",
        "http-request set-var(txn.gm_host) req.hdr(host),field(1,:),lower",
    ]
    by_service: dict[str, list[int]] = {}
    for i, inst in enumerate(plan.local):
        by_service.setdefault(inst.service, []).append(i)
        lines.append(
            f"http-request set-var(txn.gm_be) str({local_backend_name(i)})"
            f" if {{ req.fhdr(x-gossipmesh-dest,1) -m str {q(inst.dest)} }}"
        )
    for service, indices in sorted(by_service.items()):
        if len(indices) == 1:  # the Host may name a service only when that is unambiguous
            lines.append(
                f"http-request set-var(txn.gm_be) str({local_backend_name(indices[0])})"
                f" if !{{ req.fhdr(x-gossipmesh-dest) -m found }}"
                f" {{ var(txn.gm_host) -m str {q(service)} }}"
            )
    lines += [
        _error(403, "forbidden_destination", "destination is not a local instance")
        + " unless { var(txn.gm_be) -m found }",
        "http-request del-header x-gossipmesh-dest",
        "http-request del-header x-gossipmesh-service",
        "use_backend %[var(txn.gm_be)]",
    ]
    return [lines[0]] + ["    " + ln for ln in lines[1:]]


def _local_backends(plan: Plan) -> list[str]:
    services = {b.service: b.settings for b in plan.layout.backends if not b.tags}
    out: list[str] = []
    for i, inst in enumerate(plan.local):
        s = services.get(inst.service) or ServiceSettings(name=inst.service)
        out += [
            f"backend {local_backend_name(i)}",
            f"    timeout connect {s.connect_ms}",
            f"    timeout server {s.request_ms}",
            f"    server local {address(inst.address, inst.port)} maxconn {s.max_connections}",
            "",
        ]
    return out


def render(plan: Plan) -> Rendered:
    """The files of one configuration: ``haproxy.cfg`` and its services map."""
    left_out: list[str] = []
    run = plan.run_dir
    out = [
        "# generated by the gossipmesh agent: do not edit (the next change overwrites it)",
        "global",
        f"    stats socket {q(f'{run}/{STATS_SOCKET}')} mode 600 level admin",
        # After a reload the old worker lives until its clients' last requests are answered.
        f"    hard-stop-after {HARD_STOP_AFTER_S}s",
        *([f"    nbthread {plan.threads}"] if plan.threads > 0 else []),
        "",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        # On a reload, keep idle client connections until their next request, answered with
        # "connection: close": closing them at once races a request the client is sending.
        "    option idle-close-on-response",
        "    http-reuse safe",
        "    timeout client 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 60s",
        "    timeout connect 1s",
        "    timeout server 15s",
        "    unique-id-format %[uuid()]",
        "",
    ]
    if plan.outbound is not None:
        out += [*_outbound(plan, left_out), ""]
    if plan.inbound is not None:
        out += [*_inbound(plan), ""]
    for b in plan.layout.backends:
        out += [*_backend(b), ""]
    out += _local_backends(plan)
    services = sorted({b.service for b in plan.layout.backends if not b.tags})
    # Service names are [A-Za-z0-9._-]: nothing to escape in a map line.
    map_text = "".join(f"{s} {backend_name((s, ()))}\n" for s in services)
    files = {CONFIG_FILE: "\n".join(out) + "\n", services_map_name(plan.generation): map_text}
    return Rendered(files, tuple(left_out))


__all__ = [
    "CONFIG_FILE",
    "MASTER_SOCKET",
    "STATS_SOCKET",
    "Plan",
    "Rendered",
    "Unexpressible",
    "address",
    "backend_name",
    "q",
    "render",
    "server_args",
    "services_map_name",
]
