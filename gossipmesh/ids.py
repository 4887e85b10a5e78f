"""Identifiers shared by every layer: node names, network addresses and millisecond times.

Times inside gossipmesh are plain ``int`` milliseconds handed in by the caller (the sans-IO cores
never read a clock), so ``Millis`` is only a name that documents the unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from gossipmesh.errors import UsageError

Millis = int
NodeName = NewType("NodeName", str)

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_ADMIN_PORT = 7947
MAX_NODE_NAME_BYTES = 128
MAX_HOST_CHARS = 253  # a DNS name (RFC 1035); longer hosts cannot be resolved anyway


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """An IPv4/IPv6 host and a port; the same port serves UDP and TCP."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def as_tuple(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    def parse(cls, text: str, default_port: int = DEFAULT_GOSSIP_PORT) -> Address:
        """Parse ``HOST``, ``HOST:PORT`` or ``[V6]:PORT``; raise UsageError with the reason."""
        raw = text.strip()
        if not raw:
            raise UsageError("empty address")
        if raw.startswith("["):
            end = raw.find("]")
            if end < 0:
                raise UsageError(f"address {text!r}: missing ']'")
            host, rest = raw[1:end], raw[end + 1 :]
            if rest and not rest.startswith(":"):
                raise UsageError(f"address {text!r}: expected ':' after ']'")
            port_text = rest[1:] if rest else ""
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
        elif ":" in raw:
            host, port_text = raw, ""  # bare IPv6
        else:
            host, port_text = raw, ""
        if not host:
            raise UsageError(f"address {text!r}: missing host")
        if len(host) > MAX_HOST_CHARS or any(len(label) > 63 for label in host.split(".")):
            raise UsageError(f"address {text[:80]!r}: host longer than DNS allows")
        if any(c.isspace() or not c.isprintable() for c in host):
            raise UsageError(f"address {text[:80]!r}: host has whitespace or control characters")
        if port_text == "":
            port = default_port
        else:
            if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
                raise UsageError(f"address {text!r}: port {port_text!r} is not a number")
            port = int(port_text)
        if not 0 <= port <= 65535:
            raise UsageError(f"address {text!r}: port {port} out of range 0-65535")
        return cls(host, port)
