"""Deterministic discrete-event simulations that drive the real gossipmesh cores.

Layout: ``engine`` (virtual clock, event heap, seed tree, trace hash), ``network`` (latency, loss,
partitions), ``cluster`` (hosts running real ``SwimNode``s, the observer ledger, the attachment hook
for a second core), ``faults`` (crash, restart, leave, join, partition, flap, slow), ``scenarios``,
``checkers``, ``report`` and ``plot``, and ``cli`` (``python -m simulations``).
"""
