"""``python -m gossipmesh.agent --flags-fd N``: the agent process, as ``gossipmesh agent``
starts it (launch.py)."""

import sys

from gossipmesh.agent.launch import main

sys.exit(main(sys.argv[1:]))
