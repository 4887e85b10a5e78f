"""Fixtures for the agent tests; the process helpers live in agent_procs.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_procs import Procs


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    """Agent subprocesses for one test module; any still running are killed at teardown."""
    owner = Procs(tmp_path_factory.mktemp("agents"))
    try:
        yield owner
    finally:
        owner.close()
