"""gossipmesh.identity is a library: no agent, core, proxy or CLI code, no trio, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import gossipmesh.identity

ALLOWED_GOSSIPMESH = {"gossipmesh.ids", "gossipmesh.errors"}
FORBIDDEN = {"trio", "socket", "time", "random", "threading", "sqlite3"}
# Only files.py touches the file system.
OS_USERS = {"files.py"}


def test_identity_imports_only_what_a_library_may() -> None:
    root = Path(gossipmesh.identity.__file__).parent
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
                if top in {"os", "tempfile"}:
                    assert path.name in OS_USERS, f"{path.name} imports {name}"
                if top == "gossipmesh":
                    assert name.startswith("gossipmesh.identity") or name in ALLOWED_GOSSIPMESH, (
                        f"{path.name} imports {name}"
                    )
