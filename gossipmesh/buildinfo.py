"""Which build of gossipmesh runs: pure Python, or the proxy's hot path compiled with mypyc.

Theory of operation. The source is one: the modules in ``COMPILED_MODULES`` are plain, typed
Python. ``GOSSIPMESH_MYPYC=1 pip install .`` (setup.py) additionally compiles them with mypyc into
C extensions, installed next to the ``.py`` files; Python's import system prefers an extension
module over a source file of the same name, so the compiled build uses them and the pure build
(the default, and the fallback wherever there is no compiler) uses the source. The list is read
by setup.py as text (``ast``), so it is the one place that says what is compiled.

Why these modules: they are what one proxied HTTP/1.1 request runs through (the head codec, the
event engine, its fast path and connection handling, routing, authorization, balancing, the
pools, the metrics, the request log, the retry budget and the clock); compiled together they
take a third off the instructions per request (BENCHMARKS.md, "The mypyc build"). Together is
the point: a module compiled alone gained little or lost, because calls across the line between
compiled and interpreted code take the generic path. Not compiled: the TLS and socket layer (sockio, tls,
mtls, handshakes: rewritten often, and their cost is OpenSSL's), HTTP/2 (its own engine), the
agent, the control plane and the CLI (not on a request's path).

What compiling forbids (mypyc), kept true of the listed modules: no monkeypatching of their
functions or classes (tests inject instead), no instance ``__dict__`` (no attributes beyond those
declared), ``del`` of an attribute only if the class lists it in ``__deletable__``.

An operator sees the build in ``gossipmesh version``, ``GET /v1/self`` (``build``) and the
``build`` label of the ``gossipmesh_build_info`` metric: ``mypyc``, ``pure``, or ``mixed`` (some
listed modules compiled and some not: a broken install). ``stale`` lists compiled modules whose
``.py`` next to them differs from the source they were compiled from (``compiled_sources.json``,
the SHA-256 digests setup.py records at the build): a checkout built in place and edited since, so
the edit does not run (rebuild, or remove the extensions: README, "Compiled build"). Digests, not
file times: pip writes a wheel's ``.py`` and extensions in one pass, in either order.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from functools import cache

COMPILED_MODULES = (
    "gossipmesh.proxy.authz",
    "gossipmesh.proxy.balancer",
    "gossipmesh.proxy.clock",
    "gossipmesh.proxy.detect",
    "gossipmesh.proxy.downstream",
    "gossipmesh.proxy.engine",
    "gossipmesh.proxy.engine_conn",
    "gossipmesh.proxy.fastpath",
    "gossipmesh.proxy.heads",
    "gossipmesh.proxy.http1",
    "gossipmesh.proxy.http1_response",
    "gossipmesh.proxy.limits",
    "gossipmesh.proxy.metrics",
    "gossipmesh.proxy.pipeline",
    "gossipmesh.proxy.pool",
    "gossipmesh.proxy.request_log",
    "gossipmesh.proxy.resilience",
    "gossipmesh.proxy.router",
    "gossipmesh.proxy.routing",
    "gossipmesh.proxy.upstream",
)

MYPYC = "mypyc"
PURE = "pure"
MIXED = "mixed"


MANIFEST = "compiled_sources.json"  # in the gossipmesh package directory


@dataclass(frozen=True)
class Build:
    kind: str  # MYPYC, PURE or MIXED
    compiled: tuple[str, ...]  # the listed modules that import from an extension
    stale: tuple[str, ...]  # compiled modules whose .py beside them is not what was compiled


def module_origin(name: str) -> str | None:
    """The file ``name`` imports (or imported) from, without importing it."""
    mod = sys.modules.get(name)
    if mod is not None:
        return getattr(mod, "__file__", None)
    spec = importlib.util.find_spec(name)
    return None if spec is None else spec.origin


def is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def classify(origins: dict[str, str | None], compiled_from: dict[str, str]) -> Build:
    """The build that these module origins (name -> file) make up; ``compiled_from`` maps a
    module to the digest of the source it was compiled from (empty: not recorded)."""
    compiled = tuple(name for name, path in origins.items() if path and is_extension(path))
    stale = []
    for name in compiled:
        ext = origins[name]
        assert ext is not None
        source = os.path.join(os.path.dirname(ext), name.rpartition(".")[2] + ".py")
        digest = file_digest(source)
        # No .py beside it, or no record of what was compiled: nothing to compare.
        if digest is not None and name in compiled_from and compiled_from[name] != digest:
            stale.append(name)
    if not compiled:
        kind = PURE
    elif len(compiled) == len(origins):
        kind = MYPYC
    else:
        kind = MIXED
    return Build(kind, compiled, tuple(stale))


def recorded_digests() -> dict[str, str]:
    """The manifest a compiled build installed (empty if none, or unreadable)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


@cache
def current_build() -> Build:
    """This process's build (computed once: the modules a process runs do not change)."""
    origins = {name: module_origin(name) for name in COMPILED_MODULES}
    return classify(origins, recorded_digests())


def describe(build: Build) -> str:
    """One line for people: ``mypyc``, ``pure``, or the kind with what is wrong with it."""
    text = build.kind
    if build.kind == MIXED:
        text += f" ({len(build.compiled)} of {len(COMPILED_MODULES)} modules compiled)"
    if build.stale:
        short = ", ".join(name.rpartition(".")[2] for name in build.stale)
        text += f", stale: {short} (edited since it was compiled)"
    return text


__all__ = [
    "COMPILED_MODULES",
    "MANIFEST",
    "MIXED",
    "MYPYC",
    "PURE",
    "Build",
    "classify",
    "current_build",
    "describe",
    "file_digest",
    "recorded_digests",
    "is_extension",
    "module_origin",
]
