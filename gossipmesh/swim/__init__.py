"""SWIM membership and failure detection with the Lifeguard refinements, as a sans-IO core."""
