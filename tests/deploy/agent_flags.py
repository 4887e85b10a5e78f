"""Read the agent flags a deployment file passes, the way ``gossipmesh agent`` would take them,
so the tests can load them with the agent's own settings code (``load_settings``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from gossipmesh.agent.settings import AgentSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
REPEATABLE = {"join"}
SWITCHES = {"no_proxy", "rebuild_config", "enable_fault_injection", "inbound_plaintext"}


def parse_flags(args: list[str]) -> tuple[dict[str, Any], Path | None]:
    """``--key value`` / ``--key=value`` arguments as a flag dict, and ``--config``'s file."""
    flags: dict[str, Any] = {}
    config: Path | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"not a flag: {arg!r} in {args}"
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key in SWITCHES:
            flags[key] = True
            i += 1
            continue
        if not eq:
            value = args[i + 1]
            i += 1
        i += 1
        if key == "config":
            config = Path(value)
        elif key in REPEATABLE:
            flags.setdefault(key, []).append(value)
        else:
            flags[key] = value
    return flags, config


def settings_from(args: list[str] | str, config_text: str | None, tmp_path: Path) -> AgentSettings:
    """The settings an agent started with ``args`` (and ``config_text`` as its --config) has."""
    argv = shlex.split(args) if isinstance(args, str) else args
    flags, config = parse_flags(argv)
    path = None
    if config is not None:
        assert config_text is not None, f"{config} is not provided by the test"
        path = tmp_path / "agent.toml"
        path.write_text(config_text)
    return load_settings(flags, path)
