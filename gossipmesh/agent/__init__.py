"""The agent: the trio runtime that owns the SWIM core, its transports, and the admin API.

``Agent`` (runtime.py) is the process's centre; ``run_agent`` (main.py) is the entry point the CLI's
``gossipmesh agent`` command calls.
"""
