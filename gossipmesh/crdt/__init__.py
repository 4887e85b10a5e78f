"""The sans-IO control-plane core: hybrid logical clock, config document, anti-entropy, records.

Imports only the standard library, msgpack, ``gossipmesh.ids`` and ``gossipmesh.errors``.
"""
