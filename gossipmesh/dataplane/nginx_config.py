"""nginx's configuration for one agent's sidecar, generated from the layout. Pure.

Theory of operation
-------------------
Open-source nginx has no runtime API, so every change is a new file, checked with ``nginx -t``
and applied with a reload (``nginx.py``). The file is a function of the layout alone.

Routing is one ``map`` over a composite key, ``"FLAGS HOST METHOD PATH"``: ``FLAGS`` holds one
``0``/``1`` per header rule of every route (each rule is a ``map`` of its own over
``$http_NAME``), ``HOST`` is ``$host`` (lower-case, port dropped), ``PATH`` the raw path of
``$request_uri`` (no decoding, as the native router sees it). Fields never contain a space, so
each route becomes one anchored regex, and nginx tests a map's regexes in the order written: the
native router's precedence order, first match wins. A split route's destinations are a
``split_clients`` over ``$request_id`` (random per request) with the table's weights (an empty
destination's share already moved to the others: nginx reloads on every endpoint change anyway).
No route: the Host names the service; neither: 404 ``no_route``.

The chosen cluster is reached by an internal rewrite to ``/_gossipmesh/c/NAME``, an exact
location per cluster that carries the service's settings (timeouts, ``proxy_next_upstream`` with
the retry statuses, tries and overall deadline) and proxies to an ``upstream`` with the
endpoints' weights, ``max_fails``/``fail_timeout`` (outlier ejection), ``max_conns`` and
``keepalive``. The rewrite happens at server level, before any location is chosen, so a client
cannot reach those locations by asking for their path.

The mesh hop. nginx builds a request's head *before* its balancer picks a server, so it cannot
add ``x-gossipmesh-dest`` for the endpoint it will pick. A remote endpoint is therefore a unix
socket in the cluster's upstream, served by a small ``server`` of its own that adds the
endpoint's mesh fields and proxies to the peer's inbound listener over keep-alive connections:
one extra pass through nginx per remote request (the price is in BENCHMARKS.md). Local endpoints
are dialled directly.

Inbound: ``x-gossipmesh-dest`` must name a local instance exactly; without it (or empty) the
Host must name a service with exactly one local instance; anything else is 403
``forbidden_destination``.

Strings from the replicated document only ever appear inside regexes (escaped for the regex,
then double-quoted for nginx); a value with control or non-ASCII characters leaves its route out.
Header ``present`` matches mean "present and not empty" here: nginx's ``$http_NAME`` cannot tell
an empty field from a missing one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from gossipmesh.dataplane.model import Backend, Layout, LocalInstance, Unexpressible, printable
from gossipmesh.proxy.router import HDR_EXACT, HDR_PRESENT, PATH_EXACT, PATH_PREFIX, CompiledRoute
from gossipmesh.proxy.table import ClusterKey, ServiceSettings

CONFIG_FILE = "nginx.conf"
PID_FILE = "nginx.pid"
STATUS_SOCKET = "status.sock"
STATUS_PATH = "/status"
NEXT_UPSTREAM_STATUSES = frozenset({500, 502, 503, 504, 403, 404, 429})
KEEPALIVE = 32


@dataclass(frozen=True, slots=True)
class Plan:
    layout: Layout
    local: tuple[LocalInstance, ...]
    outbound: tuple[str, int] | None
    inbound: tuple[str, int] | None
    run_dir: str
    workers: int = 0  # 0: auto (one per CPU)
    # Set when the agent runs as root: nginx would otherwise drop its workers to "nobody", who
    # cannot reach the agent's private run directory (sockets, temp files). Workers then run as
    # the agent's own user, never with more rights than it.
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    left_out: tuple[str, ...]


def s(value: str) -> str:
    """An nginx double-quoted string (no variables may appear in what we quote)."""
    printable(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listen(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _text(status: int, reason: str, text: str) -> list[str]:
    return [
        f"add_header x-gossipmesh-error {reason} always;",
        f'return {status} "gossipmesh: {text}\\n";',
    ]


class _Names:
    """Cluster and hop names for one render."""

    def __init__(self, layout: Layout) -> None:
        self.cluster = {b.key: f"c{i}" for i, b in enumerate(layout.backends)}
        self.hops: dict[tuple[str, str, int, str], int] = {}  # (dest, host, port, service)

    def hop(self, dest: str, host: str, port: int, service: str) -> int:
        return self.hops.setdefault((dest, host, port, service), len(self.hops))


def _route_regex(r: CompiledRoute, flags: list[int], width: int, method_any: str = "[^ ]*") -> str:
    flag_part = "".join("1" if i in flags else "." for i in range(width))
    hosts = [re.escape(h) for h in sorted(r.hosts)] + ["[^ ]*" + re.escape(w) for w in r.wildcards]
    host = f"(?:{'|'.join(hosts)})" if hosts else "[^ ]*"
    method = f"(?:{'|'.join(sorted(r.methods))})" if r.methods else method_any
    if r.path_kind == PATH_PREFIX:
        path = re.escape(r.path_value) + "[^ ]*"
    elif r.path_kind == PATH_EXACT:
        path = re.escape(r.path_value)
    else:
        path = f"(?:{r.path_value})"
    return f"^{flag_part} {host} {method} {path}$"


def _header_map(var: str, r: CompiledRoute, j: int) -> list[str]:
    h = r.headers[j]
    src = "$http_" + h.name.decode("latin-1").replace("-", "_")
    if h.kind == HDR_PRESENT:
        return [f"map {src} {var} {{", '    "" 0;', "    default 1;", "}"]
    pattern = re.escape(h.value or "") if h.kind == HDR_EXACT else f"(?:{h.value})"
    return [f"map {src} {var} {{", f"    {s('~^' + pattern + '$')} 1;", "    default 0;", "}"]


def _routing(plan: Plan, names: _Names, left_out: list[str]) -> list[str]:
    out = ["map $request_uri $gm_path {", '    "~^(?<gm_p>[^?]*)" $gm_p;', "}"]
    out += ["map $http_x_request_id $gm_rid {", '    "" $request_id;', "    default $http_x_request_id;", "}"]  # fmt: skip
    routes = plan.layout.table_routes
    width = sum(len(r.headers) for r in routes)
    flag_vars: list[str] = []
    entries: list[str] = []
    splits: list[str] = []
    for i, r in enumerate(routes):
        first = len(flag_vars)
        try:
            maps = [
                ln for j in range(len(r.headers)) for ln in _header_map(f"$gm_h{first + j}", r, j)
            ]
            regex = s("~" + _route_regex(r, list(range(first, first + len(r.headers))), width))
        except Unexpressible as exc:
            left_out.append(f"route {r.name}: {exc}")
            maps, regex = [], ""
        flag_vars += [f"$gm_h{first + j}" for j in range(len(r.headers))]
        if not regex:
            for j in range(len(r.headers)):  # keep the flag positions of the routes after it
                out += [f"map $host $gm_h{first + j} {{", "    default 0;", "}"]
            continue
        out += maps
        entries.append(f"    {regex} {_destination(i, r, names, splits)};")
    out += splits
    key = "".join(flag_vars) + " $host $request_method $gm_path"
    out += [f'map "{key}" $gm_route {{', *entries, '    default "";', "}"]
    out += ["map $host $gm_host_cluster {"]
    for b in plan.layout.backends:
        if not b.tags:
            out.append(f"    {s('~^' + re.escape(b.service) + '$')} {names.cluster[b.key]};")
    out += ['    default "";', "}"]
    out += [
        "map $gm_route $gm_cluster {",
        '    "" $gm_host_cluster;',
        "    default $gm_route;",
        "}",
    ]
    return out


def _destination(i: int, r: CompiledRoute, names: _Names, splits: list[str]) -> str:
    if len(r.clusters) == 1:
        return names.cluster[r.clusters[0]]
    shares: list[tuple[int, str]] = []
    previous = 0
    for key, upto in zip(r.clusters, r.cum_weights, strict=True):
        if upto > previous:
            shares.append((upto - previous, names.cluster[key]))
        previous = upto
    if not shares:
        return names.cluster[r.clusters[0]]
    total = sum(w for w, _ in shares)
    lines = [f'split_clients "${{request_id}}" $gm_split{i} {{']
    for w, name in shares[:-1]:
        lines.append(f"    {w * 10000 // total / 100:.2f}% {name};")
    lines += [f"    * {shares[-1][1]};", "}"]
    splits += lines
    return f"$gm_split{i}"


def _balance(settings: ServiceSettings) -> str:
    if settings.policy == "round_robin":
        return ""
    if settings.policy == "ring_hash":
        var = "$http_" + settings.hash_header.replace("-", "_")
        return f"hash {var} consistent;"
    return "least_conn;"


def _proxy_common() -> list[str]:
    return [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
    ]


def _cluster(b: Backend, name: str, plan: Plan, names: _Names) -> tuple[list[str], list[str]]:
    """(upstream + hop blocks at http level, the cluster's location in the outbound server)."""
    st = b.settings
    location = [f"location = /_gossipmesh/c/{name} {{", "    internal;"]
    if not b.servers:
        location += ["    " + ln for ln in _text(503, "no_healthy_endpoint", f"no healthy endpoint (service '{b.service}')")]  # fmt: skip
        return [], [*location, "}"]
    upstream = [f"upstream {name} {{"]
    if _balance(st):
        upstream.append(f"    {_balance(st)}")
    hops: list[str] = []
    fails = f"max_fails={st.consecutive_failures} fail_timeout={max(st.base_ejection_ms, 1000) // 1000}s"
    for srv in b.servers:
        weight = f"weight={srv.weight} max_conns={st.max_connections} {fails}"
        if not srv.remote:
            upstream.append(f"    server {listen(srv.host, srv.port)} {weight};")
            continue
        k = names.hop(srv.dest, srv.host, srv.port, b.service)
        upstream.append(f"    server unix:{plan.run_dir}/e{k}.sock {weight};")
    upstream += [f"    keepalive {KEEPALIVE};", "}"]
    statuses = sorted(x for x in st.retry_on_status if x in NEXT_UPSTREAM_STATUSES)
    conditions = (["error", "timeout"] if st.retry_on_connect_failure else []) + [
        f"http_{x}" for x in statuses
    ]
    location += [
        "    " + ln
        for ln in [
            *_proxy_common(),
            "proxy_set_header x-request-id $gm_rid;",
            "proxy_set_header x-forwarded-for $proxy_add_x_forwarded_for;",
            'proxy_set_header x-gossipmesh-dest "";',
            'proxy_set_header x-gossipmesh-service "";',
            f"proxy_connect_timeout {st.connect_ms}ms;",
            f"proxy_send_timeout {st.per_try_ms}ms;",
            f"proxy_read_timeout {st.per_try_ms}ms;",
            f"proxy_next_upstream {' '.join(conditions) or 'off'};",
            f"proxy_next_upstream_tries {st.retry_attempts + 1};",
            f"proxy_next_upstream_timeout {st.request_ms}ms;",
            f"proxy_pass http://{name}$request_uri;",
        ]
    ]
    return [*upstream, *hops], [*location, "}"]


def _hop_blocks(plan: Plan, names: _Names, settings: dict[str, ServiceSettings]) -> list[str]:
    out: list[str] = []
    for (dest, host, port, service), k in sorted(names.hops.items(), key=lambda x: x[1]):
        st = settings.get(service) or ServiceSettings(name=service)
        out += [
            f"upstream gm_peer{k} {{",
            f"    server {listen(host, port)};",
            f"    keepalive {KEEPALIVE};",
            "}",
            "server {",
            f"    listen unix:{plan.run_dir}/e{k}.sock;",
            "    location / {",
            *["        " + ln for ln in _proxy_common()],
            f"        proxy_set_header x-gossipmesh-dest {dest};",
            f"        proxy_set_header x-gossipmesh-service {service};",
            f"        proxy_connect_timeout {st.connect_ms}ms;",
            f"        proxy_send_timeout {st.per_try_ms}ms;",
            f"        proxy_read_timeout {st.per_try_ms}ms;",
            "        proxy_next_upstream off;",
            f"        proxy_pass http://gm_peer{k};",
            "    }",
            "}",
        ]
    return out


def _inbound(plan: Plan, settings: dict[str, ServiceSettings]) -> list[str]:
    assert plan.inbound is not None
    out = ["map $http_x_gossipmesh_dest $gm_local_dest {"]
    by_service: dict[str, list[int]] = {}
    for i, inst in enumerate(plan.local):
        by_service.setdefault(inst.service, []).append(i)
        out.append(f"    {s('~^' + re.escape(inst.dest) + '$')} l{i};")
    out += ['    default "";', "}", 'map "$http_x_gossipmesh_dest $host" $gm_local {', '    "~^[^ ]+ " $gm_local_dest;']  # fmt: skip
    for service, indices in sorted(by_service.items()):
        if len(indices) == 1:
            out.append(f"    {s('~^ ' + re.escape(service) + '$')} l{indices[0]};")
    out += ['    default "";', "}"]
    locations = ["location = /_gossipmesh/l/ {", "    internal;"]
    locations += ["    " + ln for ln in _text(403, "forbidden_destination", "destination is not a local instance")]  # fmt: skip
    locations.append("}")
    for i, inst in enumerate(plan.local):
        st = settings.get(inst.service) or ServiceSettings(name=inst.service)
        out += [
            f"upstream l{i} {{",
            f"    server {listen(inst.address, inst.port)} max_conns={st.max_connections};",
            f"    keepalive {KEEPALIVE};",
            "}",
        ]
        locations += [
            f"location = /_gossipmesh/l/l{i} {{",
            "    internal;",
            *["    " + ln for ln in _proxy_common()],
            "    proxy_set_header x-forwarded-for $proxy_add_x_forwarded_for;",
            '    proxy_set_header x-gossipmesh-dest "";',
            '    proxy_set_header x-gossipmesh-service "";',
            f"    proxy_connect_timeout {st.connect_ms}ms;",
            f"    proxy_read_timeout {st.request_ms}ms;",
            "    proxy_next_upstream off;",
            f"    proxy_pass http://l{i}$request_uri;",
            "}",
        ]
    out += [
        "server {",
        f"    listen {listen(*plan.inbound)};",
        "    rewrite ^ /_gossipmesh/l/$gm_local last;",
        *["    " + ln for ln in locations],
        "}",
    ]
    return out


def render(plan: Plan) -> Rendered:
    left_out: list[str] = []
    run = plan.run_dir
    names = _Names(plan.layout)
    settings = {b.service: b.settings for b in plan.layout.backends if not b.tags}
    http: list[str] = [
        "access_log off;",
        "server_tokens off;",
        "default_type text/plain;",
        "charset utf-8;",
        "keepalive_requests 100000;",
        "keepalive_timeout 60s;",
        *(
            f"{kind}_temp_path {run}/tmp/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),  # fmt: skip
        "server {",
        f"    listen unix:{run}/{STATUS_SOCKET};",
        f"    location = {STATUS_PATH} {{ stub_status; }}",
        "}",
    ]
    if plan.outbound is not None:
        http += _routing(plan, names, left_out)
        locations = ["location = /_gossipmesh/c/ {", "    internal;"]
        locations += ["    " + ln for ln in _text(404, "no_route", "no route and no service named by the Host")]  # fmt: skip
        locations.append("}")
        for b in plan.layout.backends:
            blocks, location = _cluster(b, names.cluster[b.key], plan, names)
            http += blocks
            locations += location
        http += _hop_blocks(plan, names, settings)
        http += [
            "server {",
            f"    listen {listen(*plan.outbound)};",
            "    rewrite ^ /_gossipmesh/c/$gm_cluster last;",
            *["    " + ln for ln in locations],
            "}",
        ]
    if plan.inbound is not None:
        http += _inbound(plan, settings)
    workers = str(plan.workers) if plan.workers > 0 else "auto"
    text = "\n".join(
        [
            "# generated by the gossipmesh agent: do not edit (the next change overwrites it)",
            *([f"user {plan.user};"] if plan.user else []),
            f"worker_processes {workers};",
            f"pid {run}/{PID_FILE};",
            f"error_log {run}/error.log notice;",
            "daemon off;",
            "events { worker_connections 4096; }",
            "http {",
            *["    " + ln for ln in http],
            "}",
            "",
        ]
    )
    return Rendered(text, tuple(left_out))


def cluster_names(layout: Layout) -> dict[ClusterKey, str]:
    return _Names(layout).cluster


__all__ = [
    "CONFIG_FILE",
    "PID_FILE",
    "STATUS_PATH",
    "STATUS_SOCKET",
    "Plan",
    "Rendered",
    "Unexpressible",
    "cluster_names",
    "render",
]
