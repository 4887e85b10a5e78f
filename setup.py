"""The build hook for the compiled build; everything else about the package is in pyproject.toml.

``pip install .`` installs pure Python (the default: works wherever Python does, no compiler).
``GOSSIPMESH_MYPYC=1 pip install .`` also compiles the modules listed in
``gossipmesh/buildinfo.py`` with mypyc (needs a C compiler and the Python headers; pip fetches
mypy, which includes mypyc, into the isolated build environment). The ``.py`` files are installed
either way; see buildinfo.py for why and how an operator tells the builds apart.

Opt-in rather than compiled-with-fallback: a compile that fails silently would hand an operator
the slow build without a word, and one that succeeds on one machine and not on another would make
two nodes of one fleet differ unnoticed. Asking for it makes a failure loud.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup

# The mypy (mypyc) this build was tested with; a newer mypyc can refuse code the older accepted.
MYPYC_REQUIREMENT = "mypy==2.4.1"
ENV = "GOSSIPMESH_MYPYC"


def compiled_sources() -> list[str]:
    """buildinfo.COMPILED_MODULES as paths, read as text: the build cannot import the package."""
    root = Path(__file__).resolve().parent
    tree = ast.parse((root / "gossipmesh" / "buildinfo.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "COMPILED_MODULES"
        ):
            names = ast.literal_eval(node.value)
            return [name.replace(".", "/") + ".py" for name in names]
    raise SystemExit("setup.py: COMPILED_MODULES not found in gossipmesh/buildinfo.py")


def record_sources(sources: list[str]) -> None:
    """Write each compiled module's source digest beside the package (gossipmesh/buildinfo.py
    compares it with the .py found next to the extension: an edit after the build is stale)."""
    root = Path(__file__).resolve().parent
    digests = {
        path.removesuffix(".py").replace("/", "."): hashlib.sha256(
            (root / path).read_bytes()
        ).hexdigest()
        for path in sources
    }
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    (root / "gossipmesh" / "compiled_sources.json").write_text(text, encoding="utf-8")


def runtime_requirements() -> list[str]:
    """pyproject.toml's ``[project] dependencies``."""
    import tomllib

    root = Path(__file__).resolve().parent
    with open(root / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def metadata_only() -> bool:
    """pip asks for the metadata (``egg_info``, ``dist_info``) before it builds, in a run of its
    own; mypyc would type-check and generate the C there too, for nothing."""
    build = {"bdist_wheel", "editable_wheel", "build", "build_ext", "install", "develop"}
    asked = set(sys.argv[1:])
    return bool(asked & {"egg_info", "dist_info"}) and not asked & build


def main() -> None:
    wanted = os.environ.get(ENV, "")
    if wanted not in ("", "0", "1"):
        raise SystemExit(f"setup.py: {ENV} must be 1 (compile) or 0/unset (pure), not {wanted!r}")

    if wanted == "1":
        try:
            from mypyc.build import mypycify
        except ImportError:
            # pip's isolated build asks for the build's requirements first (setuptools reads them
            # from setup_requires, and stops here), installs them, then runs this file again.
            # mypyc type-checks what the compiled modules import, so the runtime dependencies
            # belong there too: in a fresh virtualenv pip builds before it installs them, and
            # cryptography's key types read as Any would fail the check (seen building the image).
            setup(setup_requires=[MYPYC_REQUIREMENT, *runtime_requirements()])
            raise SystemExit(
                f"setup.py: {ENV}=1 needs {MYPYC_REQUIREMENT} in the build environment"
            ) from None
        if metadata_only():
            setup()  # extensions are no part of the metadata: skip mypyc's minute here
            return
        sources = compiled_sources()
        record_sources(sources)
        setup(ext_modules=mypycify(sources, opt_level="3"))
    else:
        setup()


if __name__ == "__main__":  # as pip and setuptools run it; tests import compiled_sources
    main()
