"""The gossipmesh command line: a client of an agent's admin API."""
