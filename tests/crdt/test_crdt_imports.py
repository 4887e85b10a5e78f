"""The crdt core stays sans-IO: only the stdlib's pure parts, msgpack and gossipmesh ids/errors."""

from __future__ import annotations

import ast
from pathlib import Path

import gossipmesh.crdt

ALLOWED_GOSSIPMESH = {"gossipmesh.ids", "gossipmesh.errors", "gossipmesh.wire"}
FORBIDDEN = {"trio", "socket", "time", "os", "random", "cryptography", "sqlite3", "threading"}


def test_crdt_imports_only_what_the_architecture_allows() -> None:
    root = Path(gossipmesh.crdt.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in FORBIDDEN, f"{path.name} imports {name}"
                if top == "gossipmesh":
                    assert name.startswith("gossipmesh.crdt") or name in ALLOWED_GOSSIPMESH, (
                        f"{path.name} imports {name}"
                    )
