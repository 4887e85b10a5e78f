"""deploy/kubernetes: every manifest validates against the Kubernetes schemas of a pinned version
(``kubernetes-validate``, strict: unknown fields are errors), and the pieces fit each other and
the agent: the DaemonSet's arguments with the ConfigMap's TOML are settings the agent accepts,
its probes ask what needs no token, its names match the Secret, ConfigMap and user, and the
example app's HTTP_PROXY is the agent's outbound listener."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_flags import DEPLOY, settings_from

from gossipmesh.agent.admin_auth import AdminAuth
from gossipmesh.agent.log import EventLog
from gossipmesh.errors import UsageError
from gossipmesh.ids import Address

kubernetes_validate = pytest.importorskip("kubernetes_validate")

KUBERNETES_VERSION = "1.33.0"  # the schemas the manifests are checked against
MANIFESTS = DEPLOY / "kubernetes"
NODE = {"NODE_NAME": "node-1", "HOST_IP": "10.0.0.5"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]  # fmt: skip
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize(
    ("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_validates_against_the_pinned_schemas(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_can_fail() -> None:
    ds = one("DaemonSet")
    broken = {**ds, "spec": {**ds["spec"], "hostNetwrok": True}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def agent_container() -> dict[str, Any]:
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return container


def expand(text: str) -> str:
    for var, value in NODE.items():
        text = text.replace(f"$({var})", value)
    return text


def test_daemonset_one_agent_per_node_on_the_host_network(tmp_path: Path) -> None:
    ds = one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["automountServiceAccountToken"] is False  # no RBAC: the agent never calls the API
    assert not [d for _, d in documents() if d["kind"] in ("Role", "ClusterRole")]
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    container = agent_container()
    toml = one("ConfigMap", "gossipmesh-agent")["data"]["agent.toml"]
    args = [expand(a) for a in container["args"]]
    assert args[0] == "agent"
    settings = settings_from(args[1:], toml, tmp_path)
    assert settings.name == "node-1"
    assert settings.advertise == Address("10.0.0.5", 7946)
    assert settings.sidecar.outbound == Address("10.0.0.5", 4140)
    assert settings.tls_dir == Path("/etc/gossipmesh/tls") and settings.data_dir is not None
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[str(settings.tls_dir)]]["hostPath"]["path"] == "/etc/gossipmesh/tls"
    assert "hostPath" in volumes[mounts[str(settings.data_dir)]]
    assert volumes[mounts["/etc/gossipmesh/agent.toml"]]["configMap"]["name"] == "gossipmesh-agent"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER (deploy/Containerfile)


def test_probes_ask_the_admin_api_what_needs_no_token(tmp_path: Path) -> None:
    container = agent_container()
    toml = one("ConfigMap", "gossipmesh-agent")["data"]["agent.toml"]
    settings = settings_from([expand(a) for a in container["args"][1:]], toml, tmp_path)
    auth = AdminAuth(settings.admin, None, Counter(), EventLog(level="error"))
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert Address(get["host"], get["port"]) == settings.admin  # loopback: hostNetwork
        assert not auth.needs_token("GET", get["path"]) and get["path"] == "/v1/health"


def test_the_gossip_key_comes_from_the_secret_and_the_placeholder_is_refused() -> None:
    env = {e["name"]: e for e in agent_container()["env"]}
    ref = env["GOSSIPMESH_ENCRYPT"]["valueFrom"]["secretKeyRef"]
    secret = one("Secret", ref["name"])
    placeholder = secret["stringData"][ref["key"]]
    from gossipmesh.crypto import decode_key

    with pytest.raises(UsageError):
        decode_key(placeholder)  # applied unedited, the agent refuses to start (exit 2)


def test_apps_reach_the_sidecar_at_the_nodes_outbound_listener(tmp_path: Path) -> None:
    container = agent_container()
    outbound = next(a for a in container["args"] if a.startswith("--outbound="))
    app = one("Deployment", "example-client")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in app["env"]}
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["HTTP_PROXY"]["value"] == "http://" + outbound.removeprefix("--outbound=")


def test_seeds_resolve_through_the_headless_service() -> None:
    service = one("Service", "gossipmesh-peers")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    join = next(a for a in agent_container()["args"] if a.startswith("--join="))
    assert join.startswith(
        f"--join={service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    )
