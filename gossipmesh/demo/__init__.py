"""``gossipmesh demo``: a whole mesh on this machine, with traffic and a short script of failures.

Modules: ``plan`` (what to build and when to act, pure), ``pki`` (the demo's CA, node certificates
and operator key), ``orchestrator`` (lock, ports, processes, temp dir), ``apps`` (the sample
services, run as ``python -m gossipmesh.demo.apps``), ``traffic`` (the load driver), ``script``
(the timed events and their measurements), ``observe`` (polling the agents), ``dashboard``
(rich), ``summary`` and ``runner`` (``run_demo``). Like the rest of the CLI it is a client: it
imports no agent, SWIM, CRDT or proxy code.
"""
