"""``python -m simulations SCENARIO …``: see simulations/cli.py."""

from simulations.cli import entry

entry()
