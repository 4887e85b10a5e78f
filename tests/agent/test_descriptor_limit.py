"""The agent raises its soft descriptor limit at start (agent/main.py), in a child process so
this test process keeps its own limits."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource, sys
from gossipmesh.agent.main import raise_descriptor_limit
from gossipmesh.proxy.descriptors import DescriptorBudget
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
soft, _ = raise_descriptor_limit(cap=int(sys.argv[1]))
budget = DescriptorBudget.for_process(reserve=128)
print(soft, hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0], budget.limit)
"""


def run(cap: int) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(cap)], capture_output=True, text=True, check=True
    )
    return [int(x) for x in out.stdout.split()]


def test_soft_limit_goes_up_to_the_hard_limit_or_the_cap() -> None:
    soft, hard, now, budget_limit = run(4096)
    assert soft == now == budget_limit == min(4096, hard if hard >= 0 else 4096)
    soft, hard, now, _ = run(100)  # never lowered below what it was
    assert soft == now == 256
