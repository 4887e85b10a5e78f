"""Event kinds: the indices into the engine's handler table that the cluster's events use.

Theory of operation
-------------------
The engine dispatches an event by its integer ``kind`` (``engine.py``). The ``Cluster``
(``cluster.py``) registers the datagram, timer, action and sample handlers; its ``Streams``
(``streams.py``) register the TCP-like legs of push-pulls and attachment exchanges. The kinds
live here, in one table, so the two never collide. Every traced event folds its kind into the
trace hash, so these numbers are part of every recorded trace: renumbering one changes the
trace of every run.
"""

K_PACKET = 0
K_TIMER = 1
K_PP_REQUEST = 2
K_PP_REPLY = 3
K_PP_FAIL = 4
K_ACTION = 5
K_SAMPLE = 6
K_ATT_TIMER = 7
K_EX_REQUEST = 8
K_EX_REPLY = 9
K_EX_FAIL = 10
