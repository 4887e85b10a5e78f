"""The proxy receives a frozen RouteTable; it must never reach into membership or the CRDT."""

from __future__ import annotations

import ast
from pathlib import Path

import gossipmesh.proxy

FORBIDDEN = ("gossipmesh.swim", "gossipmesh.crdt", "gossipmesh.agent", "gossipmesh.cli")


def test_proxy_imports_no_swim_crdt_agent_or_cli() -> None:
    root = Path(gossipmesh.proxy.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
