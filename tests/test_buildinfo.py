"""Which build runs (gossipmesh/buildinfo.py): the classification, and the build under test.

CI runs the proxy and agent tests twice, pure and compiled (.ci/run), and says which build each
run must be with ``GOSSIPMESH_EXPECT_BUILD``: a compiled run that silently imported the source
(an extension missing, or the checkout's ``.py`` shadowing an installed wheel) fails here.
"""

from __future__ import annotations

import importlib.machinery
import os
import runpy
import subprocess
import sys
from pathlib import Path

from gossipmesh.buildinfo import (
    COMPILED_MODULES,
    MIXED,
    MYPYC,
    PURE,
    classify,
    current_build,
    describe,
    file_digest,
)

ROOT = Path(__file__).resolve().parents[1]
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]


def put(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_source_files_are_the_pure_build(tmp_path: Path) -> None:
    origins: dict[str, str | None] = {"p.a": put(tmp_path / "a.py", "x = 1\n")}
    build = classify(origins, {})
    assert (build.kind, build.compiled, build.stale) == (PURE, (), ())
    assert describe(build) == "pure"


def test_extensions_are_the_compiled_build_and_an_edited_source_is_stale(tmp_path: Path) -> None:
    compiled_from = {
        "p.a": file_digest(put(tmp_path / "a.py", "x = 1\n")),  # unchanged since the build
        "p.b": file_digest(put(tmp_path / "b.py", "x = 1\n")),
        "p.c": "0" * 64,  # a wheel may ship no .py beside it: nothing to compare
    }
    put(tmp_path / "b.py", "x = 2\n")  # edited after the build
    origins: dict[str, str | None] = {
        name: put(tmp_path / f"{name[2:]}{EXT}", "") for name in ("p.a", "p.b", "p.c")
    }
    build = classify(origins, {k: v for k, v in compiled_from.items() if v})
    assert (build.kind, build.compiled, build.stale) == (MYPYC, ("p.a", "p.b", "p.c"), ("p.b",))
    assert describe(build) == "mypyc, stale: b (edited since it was compiled)"
    # Without a record of what was compiled (mypyc run by hand), nothing is called stale.
    assert classify(origins, {}).stale == ()


def test_some_compiled_is_a_mixed_build(tmp_path: Path) -> None:
    origins: dict[str, str | None] = {
        "p.a": put(tmp_path / f"a{EXT}", ""),
        "p.b": put(tmp_path / "b.py", ""),
        "p.gone": None,
    }
    build = classify(origins, {})
    assert (build.kind, build.compiled) == (MIXED, ("p.a",))
    assert describe(build) == f"mixed (1 of {len(COMPILED_MODULES)} modules compiled)"


def test_the_build_under_test_is_the_one_ci_asked_for() -> None:
    build = current_build()
    expected = os.environ.get("GOSSIPMESH_EXPECT_BUILD")
    if expected is None:
        assert build.kind in (PURE, MYPYC)  # never mixed
    else:
        assert build.kind == expected
    assert build.stale == ()
    # A fresh interpreter started the way the tests start agents (`python -m gossipmesh` from
    # this directory) runs the same build as this process.
    out = subprocess.run(
        [sys.executable, "-m", "gossipmesh", "version", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f'"build": "{build.kind}"' in out.stdout


def test_setup_compiles_exactly_the_listed_modules() -> None:
    """setup.py reads the list as text; the paths it derives exist."""
    sources = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")["compiled_sources"]()
    assert sources == [name.replace(".", "/") + ".py" for name in COMPILED_MODULES]
    assert all((ROOT / path).is_file() for path in sources)
    for banned in ("sockio", "tls", "mtls", "handshakes"):  # the TLS layer stays interpreted
        assert f"gossipmesh.proxy.{banned}" not in COMPILED_MODULES
