"""The gossipmesh legs of benchmarks/proxy.py (filled in once the proxy runs inside the agent)."""

from __future__ import annotations


def legs(backend_port: int) -> list:  # type: ignore[type-arg]
    return []
