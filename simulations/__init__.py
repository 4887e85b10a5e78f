"""Deterministic discrete-event simulations that drive the real gossipmesh cores.

Layout: ``engine`` (virtual clock, event heap, seed tree, trace hash) and ``events`` (its kind
table), ``network`` (latency, loss, partitions), ``hosts`` (truth states, the core contract, the
attachment hook for a second core, ``SimNode``), ``cluster`` (hosts running real ``SwimNode``s
wired to the engine and network), ``streams`` (TCP-like push-pull and exchange legs), ``views``
(the observer ledger), ``identity`` (certificates), ``captured`` (forging hosts), ``faults``
(crash, restart, leave, join, partition, flap, slow), ``scenarios`` (options, results, ``run``),
``harness`` (the frame every scenario is built in), ``swim_scenarios`` and ``config_scenarios``
(with ``config_core``), ``checkers``, ``report`` and ``plot``, ``cli`` (``python -m
simulations``) and ``swarm`` (random fault plans).
"""
