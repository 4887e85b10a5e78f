"""The sidecar's settings, read from the agent's flags and TOML file (pure; no I/O).

Keys (flags win over the file, as for every agent setting; see docs/CONFIG.md):

- ``outbound = "HOST:PORT"`` (``--outbound``): where local apps send requests into the mesh.
  Default ``127.0.0.1:4140``: loopback, because anything that can reach it can call any service.
- ``inbound = "HOST:PORT"`` (``--inbound``): where peer agents deliver requests for this node's
  instances. Default: the agent's bind host, port 4143. When it binds a wildcard address the
  node record advertises the agent's gossip address host instead.
- ``no_proxy = true`` (``--no-proxy``): run no proxy. Health checks and the node record still run
  (``gossipmesh services`` lists the instances), but the record has no inbound address, so other
  agents cannot route to this node's instances.
- ``dataplane = "native" | "haproxy" | "nginx"`` (``--dataplane``): what carries the bytes.
  ``native`` (the default) is gossipmesh's own proxy; ``haproxy`` and ``nginx`` make the agent
  run and drive that proxy on the same outbound and inbound addresses (docs/DATAPLANES.md).
  TCP ``[[listener]]``s need the native proxy.
- ``[[service]]`` tables: this node's instances (``schema.parse_agent_services``); ``outbound =
  "HOST:PORT"`` in one gives that service its own outbound listener, whose requests present the
  service's identity on the mesh hop (agent/workloads.py).
- ``inbound_plaintext = true`` (``--inbound-plaintext``): migration only. The inbound listener
  also takes plaintext (anonymous callers) and the outbound side reaches an agent that does not
  speak TLS yet in plaintext. Logged as a warning at start, counted in ``/metrics``.
- ``workload_lifetime_ms`` (``--workload-lifetime-ms``): how long a workload certificate is
  valid (default 24 h; renewed at half of it). From 10 s, for tests of renewal.
- ``access_log = "FILE" | "-"`` (``--access-log``): one JSON line per request the proxy serves
  (proxy/request_log.py) appended to FILE, or on stdout for ``-``. ``access_log_sample_ratio``
  (0..1, default 1) logs that share of requests; ``access_log_max_lines_per_s`` (default 1000)
  caps the lines a second, the excess counted as dropped (``/metrics``).
- ``otlp_endpoint = "URL"`` (``--otlp-endpoint``): export a span per request hop over OTLP/HTTP
  (``pip install 'gossipmesh[otel]'``); the sampling ratio is mesh-wide, in the document
  (``telemetry/mesh``).
- ``proxy_workers = N`` (``--proxy-workers``, 1..64, default 1): how many processes carry the
  native proxy's connections. With N > 1 the agent's own proxy and N-1 worker processes bind
  every listener with SO_REUSEPORT and the kernel spreads new connections across them, so the
  data plane uses more than one core (agent/worker_pool.py). Native data plane only.
- ``[[listener]]`` tables: ``service = "db"``, ``port = 15432``, ``address = "127.0.0.1"``
  (default): a raw TCP port on which the proxy accepts connections and splices each to a healthy
  instance of ``service``, for protocols that are not HTTP. One listener per service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossipmesh.config.schema import NAME_RE, LocalService, parse_agent_services
from gossipmesh.errors import ConfigValidationError, UsageError
from gossipmesh.ids import Address

DEFAULT_OUTBOUND = Address("127.0.0.1", 4140)
DEFAULT_INBOUND_PORT = 4143
MAX_LISTENERS = 256
DAY_MS = 24 * 3600 * 1000
MIN_WORKLOAD_LIFETIME_MS = 10_000  # identity.MIN_WORKLOAD_LIFETIME_MS
DATAPLANES = ("native", "haproxy", "nginx")
MAX_PROXY_WORKERS = 64


@dataclass(frozen=True, slots=True)
class TcpListener:
    service: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    enabled: bool = True
    outbound: Address = DEFAULT_OUTBOUND
    inbound: Address | None = None  # None: the agent's bind host, DEFAULT_INBOUND_PORT
    services: tuple[LocalService, ...] = ()
    listeners: tuple[TcpListener, ...] = ()
    inbound_plaintext: bool = False  # migration only (docs/SECURITY.md)
    workload_lifetime_ms: int = DAY_MS
    dataplane: str = "native"
    access_log: str | None = None  # a file, or "-" for stdout
    access_log_sample_ratio: float = 1.0
    access_log_max_lines_per_s: int = 1000
    otlp_endpoint: str | None = None
    proxy_workers: int = 1  # processes carrying the native proxy (agent/worker_pool.py)

    def outbound_services(self) -> dict[str, Address]:
        """Per-service outbound listeners (``[[service]] outbound``), service -> address."""
        out: dict[str, Address] = {}
        for svc in self.services:
            if svc.outbound is not None:
                out[svc.name] = Address.parse(svc.outbound, default_port=DEFAULT_OUTBOUND.port)
        return out

    def inbound_for(self, bind_host: str) -> Address:
        return (
            self.inbound if self.inbound is not None else Address(bind_host, DEFAULT_INBOUND_PORT)
        )


def parse_sidecar_settings(raw: Mapping[str, Any]) -> SidecarSettings:
    """``raw`` is the merged flag/TOML dict of agent settings (keys normalised to underscores).
    Every problem is a ``UsageError`` naming the key."""
    kwargs: dict[str, Any] = {}
    for key, default_port in (
        ("outbound", DEFAULT_OUTBOUND.port),
        ("inbound", DEFAULT_INBOUND_PORT),
    ):
        text = raw.get(key)
        if text is None:
            continue
        if not isinstance(text, str):
            raise UsageError(f"{key} must be a HOST:PORT string")
        try:
            kwargs[key] = Address.parse(text, default_port=default_port)
        except UsageError as exc:
            raise UsageError(f"--{key}: {exc}") from exc
    no_proxy = raw.get("no_proxy")
    if no_proxy is not None:
        if not isinstance(no_proxy, bool):
            raise UsageError("no_proxy must be true or false")
        kwargs["enabled"] = not no_proxy
    plaintext = raw.get("inbound_plaintext")
    if plaintext is not None:
        if not isinstance(plaintext, bool):
            raise UsageError("inbound_plaintext must be true or false")
        kwargs["inbound_plaintext"] = plaintext
    lifetime = raw.get("workload_lifetime_ms")
    if lifetime is not None:
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int)
            or not MIN_WORKLOAD_LIFETIME_MS <= lifetime <= 366 * DAY_MS
        ):
            raise UsageError(
                f"workload_lifetime_ms must be an integer of milliseconds in "
                f"{MIN_WORKLOAD_LIFETIME_MS}-{366 * DAY_MS}"
            )
        kwargs["workload_lifetime_ms"] = lifetime
    _observability(raw, kwargs)
    try:
        kwargs["services"] = parse_agent_services({"service": raw.get("service", [])})
    except ConfigValidationError as exc:
        raise UsageError(f"agent config: {exc}") from exc
    kwargs["listeners"] = _listeners(raw.get("listener", []))
    _check_outbound_services(kwargs["services"])
    dataplane = raw.get("dataplane")
    if dataplane is not None:
        if dataplane not in DATAPLANES:
            raise UsageError(f"dataplane must be one of {', '.join(DATAPLANES)}, not {dataplane!r}")
        if dataplane != "native" and kwargs["listeners"]:
            raise UsageError(f"listener: TCP listeners need --dataplane native, not {dataplane}")
        if dataplane != "native" and not kwargs.get("inbound_plaintext"):
            # HAProxy and nginx carry the mesh hop in plaintext (no workload identities, no
            # authorization at the inbound): only as an explicit migration choice.
            raise UsageError(
                f"dataplane {dataplane}: the mesh hop would be plaintext (no mTLS, no policies); "
                "use --dataplane native, or add --inbound-plaintext to accept that (docs/SECURITY.md)"
            )
        kwargs["dataplane"] = dataplane
    _proxy_workers(raw, kwargs)
    return SidecarSettings(**kwargs)


def _proxy_workers(raw: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    workers = raw.get("proxy_workers")
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise UsageError(f"proxy_workers must be an integer in 1-{MAX_PROXY_WORKERS}")
    if not 1 <= workers <= MAX_PROXY_WORKERS:
        raise UsageError(
            f"proxy_workers must be an integer in 1-{MAX_PROXY_WORKERS}, not {workers}"
        )
    if workers > 1 and kwargs.get("dataplane", "native") != "native":
        raise UsageError(
            f"proxy_workers: workers need --dataplane native, not {kwargs['dataplane']}"
        )
    if workers > 1 and kwargs.get("enabled") is False:
        raise UsageError("proxy_workers: there is no proxy to run in workers with --no-proxy")
    kwargs["proxy_workers"] = workers


MAX_ACCESS_LINES_PER_S = 1_000_000


def _observability(raw: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """The access log's and the span export's keys."""
    path = raw.get("access_log")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise UsageError('access_log must be a file path, or "-" for stdout')
        kwargs["access_log"] = path
    ratio = raw.get("access_log_sample_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise UsageError("access_log_sample_ratio must be a number in 0..1")
        kwargs["access_log_sample_ratio"] = float(ratio)
    rate = raw.get("access_log_max_lines_per_s")
    if rate is not None:
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int)
            or not 1 <= rate <= MAX_ACCESS_LINES_PER_S
        ):
            raise UsageError(
                f"access_log_max_lines_per_s must be an integer in 1-{MAX_ACCESS_LINES_PER_S}"
            )
        kwargs["access_log_max_lines_per_s"] = rate
    url = raw.get("otlp_endpoint")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UsageError("otlp_endpoint must be an http:// or https:// URL")
        kwargs["otlp_endpoint"] = url


def _check_outbound_services(services: tuple[LocalService, ...]) -> None:
    seen: dict[str, str] = {}
    for i, svc in enumerate(services):
        if svc.outbound is None:
            continue
        try:
            Address.parse(svc.outbound, default_port=DEFAULT_OUTBOUND.port)
        except UsageError as exc:
            raise UsageError(f"service[{i}].outbound: {exc}") from exc
        if seen.setdefault(svc.name, svc.outbound) != svc.outbound:
            raise UsageError(
                f"service[{i}].outbound: {svc.name!r} already has outbound {seen[svc.name]!r}"
            )


def _listeners(value: object) -> tuple[TcpListener, ...]:
    if not isinstance(value, list) or len(value) > MAX_LISTENERS:
        raise UsageError(f"listener must be a list of at most {MAX_LISTENERS} [[listener]] tables")
    out: list[TcpListener] = []
    services: set[str] = set()
    for i, item in enumerate(value):
        p = f"listener[{i}]"
        if not isinstance(item, dict):
            raise UsageError(f"{p}: must be a table")
        unknown = set(item) - {"service", "port", "address"}
        if unknown:
            raise UsageError(f"{p}.{sorted(unknown)[0]}: unknown field")
        service = item.get("service")
        if not isinstance(service, str) or not NAME_RE.fullmatch(service):
            raise UsageError(f"{p}.service: required, 1-128 characters of [A-Za-z0-9._-]")
        port = item.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise UsageError(f"{p}.port: required, an integer 0-65535")
        address = item.get("address", "127.0.0.1")
        if not isinstance(address, str) or not address:
            raise UsageError(f"{p}.address: must be an IP address string")
        if service in services:
            # The proxy keeps one TCP listener per service (its tcp_listeners mapping).
            raise UsageError(f"{p}.service: another listener already serves {service!r}")
        services.add(service)
        out.append(TcpListener(service, address, port))
    return tuple(out)
