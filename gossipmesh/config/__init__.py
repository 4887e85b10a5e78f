"""Config entities (schema and validation) and the node identity glue; pure, no I/O."""
