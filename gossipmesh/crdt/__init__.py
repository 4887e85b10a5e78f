"""The sans-IO control-plane cores: hybrid logical clock, config document, anti-entropy, the
config replica state machine (``replica.py``), node records.

Imports only the standard library, msgpack, ``gossipmesh.ids`` and ``gossipmesh.errors``.
"""
