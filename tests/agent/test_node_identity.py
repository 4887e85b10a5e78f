"""Who an agent is: production credentials from --tls-dir, a loopback playground, or a refusal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gossipmesh.agent.node_identity import build_identity, exposed_addresses
from gossipmesh.agent.settings import load_settings
from gossipmesh.errors import UsageError
from gossipmesh.identity import CaCredentials, NodeCredentials, save_ca, save_node

NOW_MS = int(time.time() * 1000)


def _settings(**flags: object) -> object:
    return load_settings({"name": "a", "bind": "127.0.0.2:7946", "admin": "127.0.0.2:7947",
                          "outbound": "127.0.0.2:4140", **flags})  # fmt: skip


def _node_dir(tmp_path: Path, name: str = "a", cluster: str = "prod") -> Path:
    ca = CaCredentials.generate(cluster, now_ms=NOW_MS)
    save_ca(tmp_path / "ca", ca)
    node = NodeCredentials.issue(ca, name, now_ms=NOW_MS)
    save_node(tmp_path / "node", node)
    return tmp_path / "node"


def test_loopback_without_key_or_certificate_is_a_playground() -> None:
    identity = build_identity(_settings(), has_key=False, now_ms=NOW_MS)  # type: ignore[arg-type]
    assert identity.playground
    assert identity.name == "a" and identity.cluster == "default"
    verdict = identity.trust.verify_node(identity.credentials.cert_der, NOW_MS, name="a")
    assert verdict.name == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("flags", "has_key", "missing"),
    [
        ({"bind": "0.0.0.0:7946"}, False, "no gossip key and no node certificate"),
        ({"admin": "10.0.0.1:7947"}, True, "no node certificate"),
        ({"inbound": "192.0.2.1:4143"}, True, "no node certificate"),
        ({"advertise": "node-a.example:7946"}, True, "no node certificate"),
    ],
)
def test_a_non_loopback_address_without_both_is_refused(
    flags: dict[str, str], has_key: bool, missing: str
) -> None:
    with pytest.raises(UsageError) as err:
        build_identity(_settings(**flags), has_key=has_key, now_ms=NOW_MS)  # type: ignore[arg-type]
    text = str(err.value)
    assert f"is not a loopback address and there is {missing}:" in text
    assert "gossipmesh keygen" in text and "gossipmesh ca init" in text
    assert "\n" not in text


def test_certificate_without_key_is_refused_off_loopback(tmp_path: Path) -> None:
    settings = _settings(bind="0.0.0.0:7946", tls_dir=str(_node_dir(tmp_path, cluster="default")))
    with pytest.raises(UsageError, match="there is no gossip key"):
        build_identity(settings, has_key=False, now_ms=NOW_MS)  # type: ignore[arg-type]


def test_production_credentials_are_loaded_and_verified(tmp_path: Path) -> None:
    settings = _settings(cluster="prod", bind="0.0.0.0:7946", tls_dir=str(_node_dir(tmp_path)))
    identity = build_identity(settings, has_key=True, now_ms=NOW_MS)  # type: ignore[arg-type]
    assert not identity.playground
    assert identity.name == "a" and identity.cluster == "prod"
    assert exposed_addresses(settings)  # type: ignore[arg-type]


def test_a_certificate_for_another_node_or_cluster_is_refused(tmp_path: Path) -> None:
    node_dir = _node_dir(tmp_path, name="b")
    with pytest.raises(UsageError, match="is for node 'b', but this agent is named 'a'"):
        build_identity(_settings(cluster="prod", tls_dir=str(node_dir)), has_key=True,  # type: ignore[arg-type]
                       now_ms=NOW_MS)  # fmt: skip
    other = _node_dir(tmp_path / "x", name="a", cluster="staging")
    with pytest.raises(UsageError, match="is for cluster 'staging'"):
        build_identity(_settings(cluster="prod", tls_dir=str(other)), has_key=True,  # type: ignore[arg-type]
                       now_ms=NOW_MS)  # fmt: skip


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    settings = _settings(cluster="prod", tls_dir=str(_node_dir(tmp_path)))
    later = NOW_MS + 400 * 24 * 3600 * 1000
    with pytest.raises(UsageError, match="is not valid: expired"):
        build_identity(settings, has_key=True, now_ms=later)  # type: ignore[arg-type]


def test_a_cluster_name_that_is_no_trust_domain_is_refused() -> None:
    with pytest.raises(UsageError, match="--cluster 'Not A Domain'"):
        build_identity(_settings(cluster="Not A Domain"), has_key=False, now_ms=NOW_MS)  # type: ignore[arg-type]
