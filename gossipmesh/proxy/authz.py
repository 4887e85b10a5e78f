"""Authorization at the destination: ``policy/NAME`` entities, evaluated per request (pure).

Theory of operation
-------------------
The inbound proxy of the node that hosts a service decides, for every request (and for every TCP
connection, at its CONNECT), whether the caller may reach it. The caller is the identity its
mTLS certificate proved (``Peer``; None for a plaintext caller, migration only). The decision
for service S, in order (docs/CONFIG.md):

1. a ``deny`` policy to S that matches: denied, naming that policy;
2. an ``allow`` policy to S that matches: allowed;
3. ``service/S`` ``default_policy``: ``allow`` (the default) or ``deny`` (named ``default``).

A policy matches when its ``from`` names the caller (empty: anyone; a service name: a workload
of that service; a service's SPIFFE id likewise; a node's SPIFFE id: that node's own identity
and every workload it vouches for), its ``methods`` contain the method (empty: any) and one of
its ``paths`` is a prefix of the path at a segment boundary (empty: any). A TCP connection has
no method or path: only policies without ``methods`` and ``paths`` apply to it.

Paths are matched after normalisation (``normalise_path``): percent-escapes decoded, empty and
``.`` segments dropped, ``..`` resolved; a path with an encoded ``/`` or ``\\``, a backslash or
a bad escape is ambiguous (an application could read it as another path) and refused. When a
service has path rules the request goes on with the normalised path, so the application serves
exactly the path that was authorized. ``Policies`` is rebuilt from the config document on every
change and swapped in one assignment; a service with no policy and an ``allow`` default costs
the request path one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gossipmesh.config.schema import PolicyConfig
from gossipmesh.proxy.peers import Peer

SPIFFE = "spiffe://"
DEFAULT = "default"  # the policy label of a denial by a service's default_policy


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    any_caller: bool
    services: frozenset[str]  # caller service names
    ids: frozenset[str]  # caller SPIFFE ids: of services, or of nodes (their own and workloads)
    methods: frozenset[bytes]
    paths: tuple[bytes, ...]

    @classmethod
    def from_config(cls, p: PolicyConfig) -> Rule:
        return cls(
            name=p.name,
            any_caller=not p.from_services,
            services=frozenset(c for c in p.from_services if not c.startswith(SPIFFE)),
            ids=frozenset(c for c in p.from_services if c.startswith(SPIFFE)),
            methods=frozenset(m.encode() for m in p.methods),
            paths=tuple(x.encode() for x in p.paths),
        )

    def matches(self, peer: Peer | None, method: bytes | None, path: bytes) -> bool:
        if not self.any_caller:
            if peer is None:
                return False
            ids = self.ids
            if not (
                (peer.service and peer.service in self.services)
                or peer.spiffe in ids
                or (ids and node_id(peer) in ids)
            ):
                return False
        if method is None:  # a TCP connection: rules about requests do not apply
            return not self.methods and not self.paths
        if self.methods and method not in self.methods:
            return False
        return not self.paths or any(under(path, p) for p in self.paths)


def node_id(peer: Peer) -> str:
    """The SPIFFE id of the node that vouches for ``peer``."""
    trust_domain = peer.spiffe[len(SPIFFE) :].partition("/")[0]
    return f"{SPIFFE}{trust_domain}/node/{peer.node}"


def under(path: bytes, prefix: bytes) -> bool:
    """``prefix`` covers ``path`` at a segment boundary (``/a`` covers ``/a`` and ``/a/b``)."""
    if prefix.endswith(b"/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + b"/")


@dataclass(frozen=True, slots=True)
class Denied:
    policy: str  # the deny policy's name, or DEFAULT
    detail: str


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    service: str
    deny: tuple[Rule, ...]
    allow: tuple[Rule, ...]
    default_deny: bool
    uses_paths: bool  # some rule has paths: requests are matched (and sent on) normalised

    def decide(self, peer: Peer | None, method: bytes | None, path: bytes) -> Denied | None:
        """None: allowed. ``method`` None: a TCP connection."""
        for rule in self.deny:
            if rule.matches(peer, method, path):
                return Denied(rule.name, f"policy/{rule.name} denies {caller_text(peer)}")
        for rule in self.allow:
            if rule.matches(peer, method, path):
                return None
        if self.default_deny:
            return Denied(
                DEFAULT,
                f"no policy allows {caller_text(peer)}; service/{self.service} "
                "default_policy is deny",
            )
        return None


def caller_text(peer: Peer | None) -> str:
    return "an unauthenticated caller" if peer is None else peer.spiffe


class Policies:
    """Every service's rules; ``get(service)`` is None when everything is allowed."""

    __slots__ = ("by_service",)

    def __init__(
        self, policies: Iterable[PolicyConfig] = (), defaults: Mapping[str, str] | None = None
    ) -> None:
        deny: dict[str, list[Rule]] = {}
        allow: dict[str, list[Rule]] = {}
        for p in sorted(policies, key=lambda p: p.name):
            (deny if p.action == "deny" else allow).setdefault(p.to, []).append(Rule.from_config(p))
        defaults = defaults or {}
        by_service: dict[str, ServicePolicy] = {}
        for service in set(deny) | set(allow) | {s for s, d in defaults.items() if d == "deny"}:
            rules = (*deny.get(service, ()), *allow.get(service, ()))
            by_service[service] = ServicePolicy(
                service,
                tuple(deny.get(service, ())),
                tuple(allow.get(service, ())),
                defaults.get(service) == "deny",
                any(r.paths for r in rules),
            )
        self.by_service = by_service

    def get(self, service: str) -> ServicePolicy | None:
        return self.by_service.get(service)


def plain_path(target: bytes) -> bytes | None:
    """The path of an origin-form ``target`` when it needs no normalisation, else None."""
    q = target.find(b"?")
    path = target if q < 0 else target[:q]
    if b"%" in path or b"//" in path or b"/." in path or b"\\" in path or path[:1] != b"/":
        return None
    return path


_HEX = b"0123456789abcdefABCDEF"


def normalise_path(target: bytes) -> tuple[bytes, bytes] | None:
    """(normalised path, the target to send on) or None when the path is ambiguous."""
    q = target.find(b"?")
    path, query = (target, b"") if q < 0 else (target[:q], target[q:])
    if path[:1] != b"/" or b"\\" in path:
        return None
    if b"%" in path:
        out = bytearray()
        i = 0
        while i < len(path):
            c = path[i]
            if c == 0x25:  # %
                hx = path[i + 1 : i + 3]
                if len(hx) != 2 or hx[0] not in _HEX or hx[1] not in _HEX:
                    return None
                b = int(hx, 16)
                if b in (0x2F, 0x5C) or b < 0x20 or b == 0x7F:
                    return None  # an encoded separator or control: two readings are possible
                out.append(b)
                i += 3
            else:
                out.append(c)
                i += 1
        path = bytes(out)
    segments: list[bytes] = []
    for seg in path.split(b"/"):
        if seg in (b"", b"."):
            continue
        if seg == b"..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    norm = b"/" + b"/".join(segments)
    if path.endswith((b"/", b"/.", b"/..")) and segments:
        norm += b"/"
    return norm, b"".join(_ENCODED[c] for c in norm) + query


# A path byte as it is sent on: itself when a path may hold it unescaped (RFC 3986 pchar or /).
_KEEP = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/"
)
_ENCODED = tuple(bytes([c]) if c in _KEEP else b"%%%02X" % c for c in range(256))


__all__ = [
    "DEFAULT",
    "Denied",
    "Policies",
    "Rule",
    "ServicePolicy",
    "normalise_path",
    "plain_path",
    "under",
]
