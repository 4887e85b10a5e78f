"""The installed gossipmesh version, from the package metadata (what ``pip`` installed).

``gossipmesh version``, ``GET /v1/self`` and the ``gossipmesh_build_info`` metric all read it
here, so an operator comparing nodes during a rolling upgrade sees one answer everywhere. A
checkout run without being installed (no metadata) falls back to ``gossipmesh.__version__``.

``importlib.metadata`` (with ``zipfile``, ``csv`` and ``email`` behind it: 1 MiB of an idle
agent's RSS, issue 19) is imported by the first ``package_version()`` call, which an agent makes
only when ``/v1/self`` or ``/metrics`` is read; the answer was always computed at that first call.
"""

from __future__ import annotations

import platform
from functools import cache

import gossipmesh

DISTRIBUTION = "gossipmesh"


@cache
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return gossipmesh.__version__


def python_version() -> str:
    return platform.python_version()


__all__ = ["DISTRIBUTION", "package_version", "python_version"]
