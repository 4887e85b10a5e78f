"""Many seeds at once: the swarm's seeds spread over worker processes (``--jobs``).

Theory of operation
-------------------
A seed is a pure function of its number (``generate`` then ``run_plan``), so seeds can run in
any process in any order and still replay alone. ``run_seeds`` hands them to a
``multiprocessing`` pool (fork: the workers start with this process's imports and certificates
already made) in small chunks and yields the ``Outcome``s in seed order, so a report does not
depend on which worker was faster. ``jobs=1`` runs in this process, which is what tests that
patch a core with ``monkeypatch`` need (a patch does not reach a worker started before it).
Every seed of a call runs with the same hold window (``hold_ms``, see ``runner.py``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Generator, Iterable

from simulations.swarm.generate import generate
from simulations.swarm.runner import HOLD_MS, Outcome, run_plan


def run_seed(seed: int, nodes_min: int, nodes_max: int, hold_ms: int = HOLD_MS) -> Outcome:
    return run_plan(generate(seed, nodes_min, nodes_max), hold_ms=hold_ms)


def _star(args: tuple[int, int, int, int]) -> Outcome:
    return run_seed(*args)


def run_seeds(
    seeds: Iterable[int],
    nodes_min: int,
    nodes_max: int,
    jobs: int = 1,
    run: Callable[[int, int, int, int], Outcome] = run_seed,
    hold_ms: int = HOLD_MS,
) -> Generator[Outcome, None, None]:
    work = [(s, nodes_min, nodes_max, hold_ms) for s in seeds]
    if jobs <= 1:
        for args in work:
            yield run(*args)
        return
    if run is not run_seed:
        raise ValueError("a custom run function only works with jobs=1 (it would not reach "
                         "the worker processes)")  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, maxtasksperchild=200) as pool:
        yield from pool.imap(_star, work, chunksize=2)
