"""Route matching: which destination a request goes to. Pure code, no I/O.

Theory of operation
-------------------
``compile_route`` turns a ``RouteConfig`` into a ``CompiledRoute`` once per table: regexes
compiled, header names as bytes (the codec hands us lower-case byte names, so matching never
re-encodes), destination weights turned into a cumulative array for a bisect draw, and a
``sort_key`` that encodes the documented precedence — higher ``priority``; then specificity (exact
path > regex > longer prefix; then more header matches; then methods given; then hosts given);
then name. The whole list is sorted once, so the first route that matches wins.

Most requests must not scan every route. ``RouteIndex`` keeps, for every exact host any route
names, the sorted candidate list (routes naming that host, wildcard routes that cover it, and
host-less routes); hosts no route names get their candidate list computed on first sight and
memoised in a bounded cache. A request therefore tests only the routes that could apply to its
authority. With no candidate matching, ``match`` returns None and the caller treats the Host
itself as the service name (docs/CONFIG.md).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random

from gossipmesh.config.regex import Regex, compile_regex
from gossipmesh.config.schema import RouteConfig

PATH_EXACT, PATH_REGEX, PATH_PREFIX = 0, 1, 2
_PATH_KINDS = {"exact": PATH_EXACT, "regex": PATH_REGEX, "prefix": PATH_PREFIX}
HDR_EXACT, HDR_REGEX, HDR_PRESENT = 0, 1, 2
_HDR_KINDS = {"exact": HDR_EXACT, "regex": HDR_REGEX, "present": HDR_PRESENT}
# Unknown hosts are memoised; a client spraying random Host values must not grow memory forever.
MAX_HOST_CACHE = 4096


@dataclass(frozen=True, slots=True)
class HeaderRule:
    name: bytes  # lower-case
    kind: int
    value: str | None
    regex: Regex | None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    priority: int
    hosts: frozenset[str]  # exact, lower-case
    wildcards: tuple[str, ...]  # "*.example" stored as ".example"
    path_kind: int
    path_value: str
    path_regex: Regex | None  # RE2 (config/regex.py): linear time, whatever the path
    methods: frozenset[str]
    headers: tuple[HeaderRule, ...]
    clusters: tuple[tuple[str, tuple[str, ...]], ...]  # one per destination, same order
    cum_weights: tuple[int, ...]
    total_weight: int
    sort_key: tuple[object, ...]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.clusters)

    def any_host(self) -> bool:
        return not self.hosts and not self.wildcards

    def covers_host(self, host: str) -> bool:
        if self.any_host() or host in self.hosts:
            return True
        return any(host.endswith(w) for w in self.wildcards)

    def matches(self, path: str, method: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Host is settled by the index; this checks path, method and headers."""
        k = self.path_kind
        if k == PATH_PREFIX:
            if not path.startswith(self.path_value):
                return False
        elif k == PATH_EXACT:
            if path != self.path_value:
                return False
        else:
            assert self.path_regex is not None
            if self.path_regex.fullmatch(path) is None:
                return False
        if self.methods and method not in self.methods:
            return False
        for rule in self.headers:
            value = _header(headers, rule.name)
            if value is None:
                return False
            if rule.kind == HDR_EXACT:
                if value != rule.value:
                    return False
            elif rule.kind == HDR_REGEX:
                assert rule.regex is not None
                if rule.regex.fullmatch(value) is None:
                    return False
        return True


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n == name:
            return v.decode("latin-1")
    return None


def compile_route(cfg: RouteConfig, wall_ms: int | None = None) -> CompiledRoute:
    """``wall_ms``: the time a destination's scheduled shift is evaluated at (config/shift.py);
    None uses the plain weights."""
    hosts = {h.lower() for h in cfg.hosts if not h.startswith("*.")}
    wildcards = tuple(sorted(h.lower()[1:] for h in cfg.hosts if h.startswith("*.")))
    kind = _PATH_KINDS[cfg.path.kind]
    regex = None
    if kind == PATH_REGEX:
        regex = cfg.path.regex if cfg.path.regex is not None else compile_regex(cfg.path.value)
    rules = []
    for h in cfg.headers:
        hk = _HDR_KINDS[h.kind]
        hre = None
        if hk == HDR_REGEX:
            hre = h.regex if h.regex is not None else compile_regex(h.value or "")
        rules.append(HeaderRule(h.name.lower().encode("latin-1"), hk, h.value, hre))
    clusters = tuple((d.service, tuple(sorted(set(d.tags)))) for d in cfg.destinations)
    cum: list[int] = []
    total = 0
    for d in cfg.destinations:
        total += d.weight_at(wall_ms)
        cum.append(total)
    prefix_len = len(cfg.path.value) if kind == PATH_PREFIX else 0
    sort_key = (
        -cfg.priority,
        kind,
        -prefix_len,
        -len(rules),
        0 if cfg.methods else 1,
        0 if cfg.hosts else 1,
        cfg.name,
    )
    return CompiledRoute(
        name=cfg.name,
        priority=cfg.priority,
        hosts=frozenset(hosts),
        wildcards=wildcards,
        path_kind=kind,
        path_value=cfg.path.value,
        path_regex=regex,
        methods=frozenset(m.upper() for m in cfg.methods),
        headers=tuple(rules),
        clusters=clusters,
        cum_weights=tuple(cum),
        total_weight=total,
        sort_key=sort_key,
    )


class RouteIndex:
    """Per-host candidate lists over routes already sorted by precedence.

    Not frozen: the unknown-host memo is filled lazily. It only ever caches a pure function of
    the (immutable) route list, so sharing it between requests is safe.
    """

    __slots__ = ("_by_host", "_routes", "_cache", "empty")

    def __init__(self, routes: tuple[CompiledRoute, ...]) -> None:
        self._routes = routes
        self.empty = not routes
        names: set[str] = set()
        for r in routes:
            names.update(r.hosts)
        self._by_host: dict[str, tuple[CompiledRoute, ...]] = {h: self._compute(h) for h in names}
        self._cache: dict[str, tuple[CompiledRoute, ...]] = {}

    def _compute(self, host: str) -> tuple[CompiledRoute, ...]:
        return tuple(r for r in self._routes if r.covers_host(host))

    def candidates(self, host: str) -> tuple[CompiledRoute, ...]:
        found = self._by_host.get(host)
        if found is not None:
            return found
        found = self._cache.get(host)
        if found is None:
            if len(self._cache) >= MAX_HOST_CACHE:
                self._cache.clear()
            found = self._cache[host] = self._compute(host)
        return found


def build_route_index(routes: tuple[CompiledRoute, ...]) -> RouteIndex:
    return RouteIndex(routes)


def normalise_host(authority: str) -> str:
    """``API.example:8080`` → ``api.example``; ``[::1]:80`` → ``::1``. Port is ignored by routes."""
    a = authority.strip().lower()
    if a.startswith("["):
        end = a.find("]")
        return a[1:end] if end > 0 else a
    colon = a.rfind(":")
    if colon >= 0 and a.count(":") == 1:
        return a[:colon]
    return a


def match(
    index: RouteIndex,
    host: str,
    path: str,
    method: str,
    headers: Sequence[tuple[bytes, bytes]],
) -> CompiledRoute | None:
    """First route (in precedence order) that applies; ``host`` already normalised."""
    if index.empty:
        return None
    for r in index.candidates(host):
        if r.matches(path, method, headers):
            return r
    return None


def choose_destination(route: CompiledRoute, rng: Random) -> tuple[str, tuple[str, ...]]:
    """Weighted draw among the route's destinations (canary splits)."""
    clusters = route.clusters
    if len(clusters) == 1:
        return clusters[0]
    if route.total_weight <= 0:
        return clusters[0]
    x = rng.random() * route.total_weight
    return clusters[bisect_right(route.cum_weights, x)]
