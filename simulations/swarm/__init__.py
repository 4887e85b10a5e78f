"""The fault swarm: thousands of random fault plans against the real cores, every invariant
checked on each, failures shrunk to a one-line replay (``python -m simulations swarm``).

``plan.py`` (the frozen plan and its one-line form), ``generate.py`` (seed -> plan),
``runner.py`` (plan -> judged outcome), ``invariants.py`` (what is judged), ``shrink.py``
(a failing plan -> a minimal one), ``pool.py`` (many seeds over processes), ``cli.py``.
"""
