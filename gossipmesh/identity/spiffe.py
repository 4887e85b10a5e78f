"""SPIFFE-style identities: who a certificate speaks for, as one URI.

Theory of operation
-------------------
Every certificate of the mesh carries exactly one URI subject alternative name, and that URI is
the whole of its identity (DESIGN-11 D2):

    spiffe://CLUSTER                 the root (the trust anchor of the cluster)
    spiffe://CLUSTER/node/NAME       an agent
    spiffe://CLUSTER/operator/NAME   a person or tool allowed to sign configuration
    spiffe://CLUSTER/svc/NAME        a workload of service NAME (issue 12's mTLS)

The trust domain is the cluster name. SPIFFE restricts it to lowercase letters, digits, ``.``,
``-`` and ``_``; we keep that rule (and the project's 64-byte cluster limit) so the URI is the
cluster name verbatim and two spellings can never name one domain.

Names follow the rules the rest of the project applies to node names: 1 to
``MAX_NODE_NAME_BYTES`` bytes of UTF-8, plus what a path segment needs: no ``/``, no control
characters, and not ``.`` or ``..`` (dot segments would be collapsed by URI normalisers). A URI
must be ASCII, so a name travels percent-encoded: every byte outside RFC 3986's unreserved set
becomes ``%XX`` (uppercase hex). Parsing is strict and canonical: the text must be exactly what
``format`` would produce for the name it decodes to, so each identity has one URI and a
comparison of URIs is a comparison of identities.

Everything here is pure; a malformed id raises ``UsageError`` naming what is wrong.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass

from gossipmesh.errors import UsageError
from gossipmesh.ids import MAX_NODE_NAME_BYTES

SCHEME = "spiffe://"
MAX_TRUST_DOMAIN_BYTES = 64  # the agent's limit on cluster names
MAX_NAME_BYTES = MAX_NODE_NAME_BYTES
TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
# RFC 3986 unreserved characters: the only ones a name keeps unencoded.
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX_UPPER = frozenset("0123456789ABCDEF")


class IdKind(enum.Enum):
    """What an identity is; the value is the word ``ca show`` prints."""

    ROOT = "root"
    NODE = "node"
    OPERATOR = "operator"
    WORKLOAD = "workload"

    @property
    def path_segment(self) -> str:
        """The URI path segment naming this kind (the root has none)."""
        return _SEGMENT_OF[self]


_SEGMENT_OF = {
    IdKind.ROOT: "",
    IdKind.NODE: "node",
    IdKind.OPERATOR: "operator",
    IdKind.WORKLOAD: "svc",
}
_KIND_OF_SEGMENT = {seg: kind for kind, seg in _SEGMENT_OF.items() if seg}


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain; raise UsageError if not."""
    if type(trust_domain) is not str or not trust_domain:
        raise UsageError("trust domain (cluster name) must be a non-empty string")
    if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
        raise UsageError(
            f"cluster name {trust_domain[:70]!r} is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
        )
    bad = sorted(set(trust_domain) - TRUST_DOMAIN_CHARS)
    if bad:
        raise UsageError(
            f"cluster name {trust_domain!r} cannot be a trust domain (character {bad[0]!r}): "
            "use lowercase letters, digits, '.', '-' and '_'"
        )
    return trust_domain


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it may name a node, operator or service; raise UsageError if not."""
    if type(name) is not str or not name:
        raise UsageError(f"{what} must be a non-empty string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{what} {name[:40]!r} is not valid Unicode text") from None
    if size > MAX_NAME_BYTES:
        raise UsageError(f"{what} {name[:40]!r}... is {size} bytes, more than {MAX_NAME_BYTES}")
    if "/" in name:
        raise UsageError(f"{what} {name!r} contains '/'")
    if any(_is_control(c) for c in name):
        raise UsageError(f"{what} {name!r} contains a control character")
    if name in (".", ".."):
        raise UsageError(f"{what} {name!r} is not allowed (a URI dot segment)")
    return name


def _is_control(c: str) -> bool:
    code = ord(c)
    return code < 0x20 or 0x7F <= code <= 0x9F


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """One identity. ``name`` is "" for the root and non-empty for every other kind."""

    kind: IdKind
    trust_domain: str
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, IdKind):
            raise UsageError(f"kind must be an IdKind, not {type(self.kind).__name__}")
        validate_trust_domain(self.trust_domain)
        if self.kind is IdKind.ROOT:
            if self.name:
                raise UsageError("a root identity has no name")
        else:
            validate_name(self.name, f"{self.kind.value} name")

    @classmethod
    def root(cls, trust_domain: str) -> SpiffeId:
        return cls(IdKind.ROOT, trust_domain)

    @classmethod
    def node(cls, trust_domain: str, name: str) -> SpiffeId:
        return cls(IdKind.NODE, trust_domain, name)

    @classmethod
    def operator(cls, trust_domain: str, name: str) -> SpiffeId:
        return cls(IdKind.OPERATOR, trust_domain, name)

    @classmethod
    def workload(cls, trust_domain: str, name: str) -> SpiffeId:
        return cls(IdKind.WORKLOAD, trust_domain, name)

    @property
    def uri(self) -> str:
        """The canonical URI (what goes into the certificate's SAN)."""
        if self.kind is IdKind.ROOT:
            return SCHEME + self.trust_domain
        return f"{SCHEME}{self.trust_domain}/{self.kind.path_segment}/{_encode_name(self.name)}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse a canonical SPIFFE URI; raise UsageError saying what is wrong with it."""
        if type(uri) is not str:
            raise UsageError("SPIFFE id must be a string")
        if len(uri) > len(SCHEME) + MAX_TRUST_DOMAIN_BYTES + 16 + 3 * MAX_NAME_BYTES:
            raise UsageError(f"SPIFFE id {uri[:60]!r}... is too long")
        if not uri.startswith(SCHEME):
            raise UsageError(f"{uri[:80]!r} is not a spiffe:// URI")
        rest = uri[len(SCHEME) :]
        domain, slash, path = rest.partition("/")
        validate_trust_domain(domain)
        if not slash:
            return cls(IdKind.ROOT, domain)
        segment, slash, encoded = path.partition("/")
        kind = _KIND_OF_SEGMENT.get(segment)
        if kind is None or not slash:
            raise UsageError(
                f"SPIFFE id {uri[:80]!r}: path must be /node/NAME, /operator/NAME or /svc/NAME"
            )
        name = _decode_name(encoded, uri)
        return cls(kind, domain, name)


def _encode_name(name: str) -> str:
    return "".join(chr(b) if chr(b) in UNRESERVED else f"%{b:02X}" for b in name.encode("utf-8"))


def _decode_name(encoded: str, uri: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(encoded):
        c = encoded[i]
        if c == "%":
            pair = encoded[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX_UPPER:
                raise UsageError(f"SPIFFE id {uri[:80]!r}: bad percent-encoding")
            raw.append(int(pair, 16))
            i += 3
        elif c in UNRESERVED:
            raw.append(ord(c))
            i += 1
        else:
            raise UsageError(f"SPIFFE id {uri[:80]!r}: character {c!r} must be percent-encoded")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"SPIFFE id {uri[:80]!r}: name is not UTF-8") from None
    validate_name(name)
    if _encode_name(name) != encoded:  # e.g. "%41" for "A": one identity, one spelling
        raise UsageError(f"SPIFFE id {uri[:80]!r}: name is not in canonical form")
    return name
