"""The import rules of docs/ARCHITECTURE.md ("Rules of import"), checked on every module's imports.

Every ``.py`` under gossipmesh/ and simulations/ is parsed (nothing is imported); every ``import``
and ``from ... import`` counts, at module level and inside functions, relative ones resolved. Each
rule below is one test case; a violation names the file, the line and the rule. A rule that is
broken on purpose for a while is marked xfail(strict=True) with the reason, so it fails (XPASS)
the day it holds and the marker must go.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gossipmesh", "simulations")

# The sans-IO cores, and the few modules they may use besides the standard library and msgpack.
CORES = ("gossipmesh.swim", "gossipmesh.crdt")
CORE_MAY_IMPORT = ("gossipmesh.ids", "gossipmesh.errors", "gossipmesh.wire")
# The code on the client side of the admin API: the CLI, the demo and the client library.
CLIENT_SIDE = ("gossipmesh.cli", "gossipmesh.demo", "gossipmesh.client")
AGENT_INTERNALS = (
    "gossipmesh.agent",
    "gossipmesh.swim",
    "gossipmesh.crdt",
    "gossipmesh.proxy",
    "gossipmesh.dataplane",
    "gossipmesh.store",
)


@dataclass(frozen=True)
class Import:
    """One imported module, where and how: ``from a.b import c`` gives ``a.b.c`` when that is a
    module of ours, else ``a.b`` (with ``c`` in ``names``)."""

    path: str  # relative to the repository, e.g. gossipmesh/cli/app.py
    line: int
    module: str
    names: tuple[str, ...]
    function: str | None  # the innermost enclosing function, None at module level
    type_checking: bool  # under ``if TYPE_CHECKING:`` (never executed)

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Source:
    path: str
    module: str  # dotted name, e.g. gossipmesh.cli.app (a package is its __init__)
    tree: ast.Module
    imports: tuple[Import, ...]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def sources() -> dict[str, Source]:
    found: dict[str, Source] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = module_name(path)
            tree = ast.parse(path.read_text(), filename=str(path))
            rel = str(path.relative_to(ROOT))
            is_package = path.name == "__init__.py"
            found[module] = Source(
                rel, module, tree, tuple(_imports(rel, module, is_package, tree))
            )
    return found


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(rel: str, module: str, is_package: bool, tree: ast.Module) -> Iterator[Import]:
    def visit(node: ast.AST, function: str | None, type_checking: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(child, child.name, type_checking)
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), function, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), function, False)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(rel, child.lineno, alias.name, (), function, type_checking)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, module, is_package)
                names = tuple(a.name for a in child.names)
                subs = [f"{base}.{n}" for n in names if _is_module(f"{base}.{n}")]
                for target in subs or [base]:
                    yield Import(rel, child.lineno, target, names, function, type_checking)
            yield from visit(child, function, type_checking)

    yield from visit(tree, None, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def top(module: str) -> str:
    return module.split(".")[0]


# ---------------------------------------------------------------------------------------------
# The rules. Each yields one message per violation: "path:line: rule: what".

Check = Callable[[], Iterator[str]]


def in_sources(prefixes: tuple[str, ...]) -> Iterator[Source]:
    return (s for m, s in sources().items() if within(m, prefixes))


def forbid_stdlib(prefixes: tuple[str, ...], banned: tuple[str, ...], rule: str) -> Check:
    def check() -> Iterator[str]:
        for src in in_sources(prefixes):
            for imp in src.imports:
                if top(imp.module) in banned:
                    yield f"{imp.where()}: {rule}: imports {imp.module}"

    return check


def forbid_modules(
    prefixes: tuple[str, ...],
    banned: tuple[str, ...],
    rule: str,
    allowed: Callable[[Import], bool] = lambda imp: False,
) -> Check:
    def check() -> Iterator[str]:
        for src in in_sources(prefixes):
            for imp in src.imports:
                if within(imp.module, banned) and not allowed(imp):
                    yield f"{imp.where()}: {rule}: imports {imp.module}"

    return check


def cores_use_only_allowed_gossipmesh_modules() -> Iterator[str]:
    rule = "cores import from gossipmesh only themselves and ids, errors, wire"
    for src in in_sources(CORES + CORE_MAY_IMPORT):
        own = src.module if src.module in CORE_MAY_IMPORT else ".".join(src.module.split(".")[:2])
        for imp in src.imports:
            if top(imp.module) in PACKAGES and not within(imp.module, (own, *CORE_MAY_IMPORT)):
                yield f"{imp.where()}: {rule}: imports {imp.module}"


def cores_use_no_global_random() -> Iterator[str]:
    """``random.Random`` (an injected instance's type) is fine; the module's functions share one
    hidden global generator, so a run could not be replayed from its seed."""
    rule = "cores use no global random (only an injected random.Random)"
    for src in in_sources(CORES + CORE_MAY_IMPORT):
        aliases = set()
        for imp in src.imports:
            if imp.module == "random" and imp.names:
                for name in imp.names:
                    if name != "Random":
                        yield f"{imp.where()}: {rule}: from random import {name}"
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name == "random"}
        for node in ast.walk(src.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr != "Random"
            ):
                yield f"{src.path}:{node.lineno}: {rule}: uses random.{node.attr}"


def cli_runs_the_agent_only_in_its_command(imp: Import) -> bool:
    return imp.path == "gossipmesh/cli/app.py" and imp.function == "agent"


def client_side_loads_no_agent_code_when_imported() -> Iterator[str]:
    """What ``import gossipmesh.cli.app`` (or any client-side module) executes: module-level
    imports, followed through our own modules and their parent packages."""
    rule = "cli, demo and client load no agent, swim, crdt, proxy or store code when imported"
    for src in in_sources(CLIENT_SIDE):
        chain = _first_load(src.module, AGENT_INTERNALS)
        if chain is not None:
            first = next(i for i in src.imports if i.module == chain[1] or chain[1] in _parents(i))
            yield f"{first.where()}: {rule}: loads {' -> '.join(chain[1:])}"


def _parents(imp: Import) -> set[str]:
    parts = imp.module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _loads(module: str) -> list[str]:
    """Our modules that importing ``module`` executes directly (module level, not TYPE_CHECKING),
    parent packages included."""
    src = sources().get(module)
    if src is None:
        return []
    out: list[str] = []
    for imp in src.imports:
        if imp.function is None and not imp.type_checking and top(imp.module) in PACKAGES:
            parts = imp.module.split(".")
            out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in dict.fromkeys(out) if m in sources()]


def _first_load(start: str, banned: tuple[str, ...]) -> list[str] | None:
    """A shortest chain of module-level imports from ``start`` to a banned module, or None."""
    seen = {start}
    queue = [[start]]
    while queue:
        chain = queue.pop(0)
        for nxt in _loads(chain[-1]):
            if nxt in seen:
                continue
            if within(nxt, banned):
                return [*chain, nxt]
            seen.add(nxt)
            queue.append([*chain, nxt])
    return None


RUNTIME = ("trio", "asyncio", "threading", "_thread", "multiprocessing", "concurrent",
           "subprocess", "signal", "sched")  # fmt: skip
CLOCK = ("time", "datetime")
IO = ("socket", "ssl", "selectors", "select", "os", "pathlib", "shutil", "tempfile", "sqlite3",
      "cryptography")  # fmt: skip

# The data planes (the native proxy and the external ones) are handed a RouteTable: they need
# none of the agent, its cores, its store or the operators' side.
NOT_FOR_DATA_PLANES = (
    "gossipmesh.agent",
    "gossipmesh.swim",
    "gossipmesh.crdt",
    "gossipmesh.cli",
    "gossipmesh.demo",
    "gossipmesh.store",
    "simulations",
)

RULES: dict[str, Check] = {
    "cores import no runtime": forbid_stdlib(
        CORES + CORE_MAY_IMPORT, RUNTIME, "cores import no runtime (trio, asyncio, threading ...)"
    ),
    "cores import no clock": forbid_stdlib(
        CORES + CORE_MAY_IMPORT, CLOCK, "cores import no clock (time, datetime)"
    ),
    "cores import no sockets, os or files": forbid_stdlib(
        CORES + CORE_MAY_IMPORT,
        IO,
        "cores import no sockets, os, files or crypto (socket, ssl, selectors, os, sqlite3 ...)",
    ),
    "cores use no global random": cores_use_no_global_random,
    "cores import only ids, errors, wire from gossipmesh": cores_use_only_allowed_gossipmesh_modules,
    "proxy imports no agent, swim or crdt": forbid_modules(
        ("gossipmesh.proxy",),
        NOT_FOR_DATA_PLANES,
        "proxy imports no agent, swim, crdt, store, cli, demo or simulator",
    ),
    "dataplane imports no agent, swim or crdt": forbid_modules(
        ("gossipmesh.dataplane",),
        NOT_FOR_DATA_PLANES,
        "dataplane imports no agent, swim, crdt, store, cli, demo or simulator",
    ),
    "simulator imports no agent": forbid_modules(
        ("simulations",), ("gossipmesh.agent",), "simulator imports nothing from gossipmesh.agent"
    ),
    "cli imports the agent only in the agent command": forbid_modules(
        ("gossipmesh.cli",),
        ("gossipmesh.agent",),
        "cli imports gossipmesh.agent only inside the `agent` command (cli/app.py: agent)",
        allowed=cli_runs_the_agent_only_in_its_command,
    ),
    "cli, demo and client import no agent internals": forbid_modules(
        CLIENT_SIDE,
        (
            "gossipmesh.swim",
            "gossipmesh.crdt",
            "gossipmesh.proxy",
            "gossipmesh.dataplane",
            "gossipmesh.store",
            "gossipmesh.agent",
        ),  # fmt: skip
        "cli, demo and client import no agent, swim, crdt, proxy, dataplane or store (the admin API, "
        "through gossipmesh.client, is their way in)",
        allowed=cli_runs_the_agent_only_in_its_command,
    ),
    "cli, demo and client load no agent internals": client_side_loads_no_agent_code_when_imported,
    "demo and client import no cli": forbid_modules(
        ("gossipmesh.demo", "gossipmesh.client"),
        ("gossipmesh.cli",),
        "demo and client import nothing from gossipmesh.cli",
    ),
}


@pytest.mark.parametrize("rule", list(RULES), ids=str)
def test_import_rule(rule: str) -> None:
    violations = sorted(RULES[rule]())
    assert violations == [], "\n".join(violations)


# ---------------------------------------------------------------------------------------------
# The checker itself: it sees what the rules need it to see.


def test_the_reader_sees_every_module_and_imports_inside_functions() -> None:
    found = sources()
    assert {"gossipmesh.swim.node", "gossipmesh.crdt.document", "gossipmesh.cli.app",
            "gossipmesh.client", "simulations.cluster"} <= set(found)  # fmt: skip
    lazy = [i for i in found["gossipmesh.cli.app"].imports if i.module == "gossipmesh.agent.launch"]
    assert [(i.function, i.type_checking) for i in lazy] == [("agent", False)]
    typed = [i for i in found["gossipmesh.agent.join"].imports if i.type_checking]
    assert typed and all(i.function is None for i in typed)


def test_relative_imports_are_resolved() -> None:
    tree = ast.parse("from . import sibling\nfrom ..pkg import thing\n")
    one, two = (n for n in tree.body if isinstance(n, ast.ImportFrom))
    assert _resolve(one, "gossipmesh.swim.node", False) == "gossipmesh.swim"
    assert _resolve(two, "gossipmesh.swim.node", False) == "gossipmesh.pkg"
    assert _resolve(one, "gossipmesh.swim", True) == "gossipmesh.swim"


def test_a_broken_rule_is_reported_with_file_line_and_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant violations in a copy of the parsed sources and check each rule family finds them."""
    planted = {
        "gossipmesh.swim.node": "import time\nfrom gossipmesh.agent import runtime\n"
        "import random\nx = random.random()\n",
        "gossipmesh.cli.app": "import gossipmesh.agent.main\n",
        "gossipmesh.demo.plan": "from gossipmesh.cli import common\n",
        "gossipmesh.client": "from gossipmesh.config import identity\n",
    }
    fake = dict(sources())
    for module, text in planted.items():
        src = fake[module]
        tree = ast.parse(text)
        fake[module] = Source(
            src.path, module, tree, tuple(_imports(src.path, module, False, tree))
        )
    monkeypatch.setitem(globals(), "sources", lambda: fake)
    found = {rule: sorted(check()) for rule, check in RULES.items()}
    assert found["cores import no clock"] == [
        "gossipmesh/swim/node.py:1: cores import no clock (time, datetime): imports time"
    ]
    assert any(v.startswith("gossipmesh/swim/node.py:2:") for v in
               found["cores import only ids, errors, wire from gossipmesh"])  # fmt: skip
    assert found["cores use no global random"] == [
        "gossipmesh/swim/node.py:4: cores use no global random (only an injected random.Random):"
        " uses random.random"
    ]
    assert [
        v.split(":")[0:2] for v in found["cli imports the agent only in the agent command"]
    ] == [["gossipmesh/cli/app.py", "1"]]
    assert [v.split(":")[0:2] for v in found["demo and client import no cli"]] == [
        ["gossipmesh/demo/plan.py", "1"]
    ]
    # config/identity.py imports crdt.records at module level: the load rule follows the chain.
    loads = found["cli, demo and client load no agent internals"]
    assert any("gossipmesh/client.py:1:" in v and "gossipmesh.crdt" in v for v in loads), loads
