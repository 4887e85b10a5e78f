"""The fault swarm: thousands of random fault plans against the real cores, every invariant
checked on each, failures shrunk to a one-line replay (``python -m simulations swarm``).

A seed fails when a safety property ever broke, when a core raised, or when a settled property
(completeness, accuracy, convergence, identical documents) did not hold at the settle bound
after the last heal ("too slow" if it held by three times the bound, "wrong" if not) or held
there and broke during the hold window that follows ("relapsed": ``--hold-s``, 60 s by
default, sampled every 2 s; see ``runner.py`` for why that long).

``plan.py`` (the frozen plan and its one-line form), ``generate.py`` (seed -> plan),
``runner.py`` (plan -> judged outcome), ``invariants.py`` (what is judged), ``shrink.py``
(a failing plan -> a minimal one), ``pool.py`` (many seeds over processes), ``cli.py``.
"""
