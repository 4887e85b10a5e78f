"""gossipmesh: a service mesh with no control-plane server."""

__version__ = "0.1.0"
