"""examples/agent.toml loads with the agent's own settings code, and shows every setting."""

from __future__ import annotations

import re
from pathlib import Path

from gossipmesh.agent.settings import SETTING_KEYS, load_settings
from gossipmesh.ids import Address

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent.toml"


def test_example_agent_file_loads_with_its_values() -> None:
    s = load_settings({}, EXAMPLE)
    assert s.name == "a"
    assert s.bind == Address("10.0.0.1", 7946)
    assert s.join == (Address("10.0.0.2", 7946), Address("10.0.0.3", 7946))
    assert s.cluster == "prod"
    assert s.tls_dir == Path("/etc/gossipmesh/node")
    assert [svc.name for svc in s.sidecar.services] == ["api", "db"]
    api = s.sidecar.services[0]
    assert api.tags == ("v1",)
    assert api.check is not None and api.check.http_path == "/health"
    assert s.sidecar.listeners[0].port == 15432


def test_example_agent_file_names_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # Set, or commented out (`# key = ...`: encrypt excludes encrypt_file; seed is for tests).
    shown = set(re.findall(r"^(?:# )?([a-z_]+) = ", text, re.MULTILINE))
    shown |= set(re.findall(r"^\[\[([a-z_]+)\]\]", text, re.MULTILINE))
    assert SETTING_KEYS - shown == set()


def test_example_agent_file_variants(tmp_path: Path) -> None:
    from gossipmesh.crypto import generate_key

    key = generate_key()
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('encrypt_file = "/etc/gossipmesh/gossip.key"\n', "")
    text = text.replace('# encrypt = "PASTE-THE-OUTPUT-OF-gossipmesh-keygen"', f'encrypt = "{key}"')
    text = text.replace("# seed = 1", "seed = 1")
    variant = tmp_path / "agent.toml"
    variant.write_text(text, encoding="utf-8")
    s = load_settings({}, variant)
    assert s.encrypt == key and s.encrypt_file is None
    assert s.seed == 1
