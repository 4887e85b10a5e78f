"""The agent process imports what it runs at idle, and the rest at first use (issue 19: idle RSS).

Each check runs a fresh interpreter (``python -c``), because this test process has long since
imported everything: what ``python -m gossipmesh.agent`` loads before it serves, which heavy
libraries are absent, and that the feature that needs one brings it in through its lazy boundary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Imported by an idle agent's code path only when the feature runs (the boundary in brackets).
LAZY = {
    "prometheus_client": "the first /metrics scrape (gossipmesh/metric_export.py)",
    "h2.connection": "a gRPC health check (agent/grpc_health.py; the proxy has its own core)",
    "hpack": "the first HTTP/2 connection (proxy/h2side.py) or gRPC health check",
    "hyperframe": "a gRPC health check, with h2.connection",
    "gossipmesh.proxy.h2link": "the first HTTP/2 connection (proxy/h2side.py)",
    "importlib.metadata": "the first package_version() (/v1/self, /metrics)",
    "tomllib": "a --config file (agent/settings.py)",
    "re2": "the first route regex (config/regex.py)",
    "opentelemetry": "span export configured (proxy/spans.py)",
    "importlib.resources": "the first request for the dashboard (agent/dashboard.py)",
    "zipfile": "the first request for the dashboard, with importlib.resources",
    "gossipmesh.agent.faults": "--enable-fault-injection (agent/main.py)",
    "gossipmesh.dataplane": "--dataplane haproxy|nginx (agent/main.py, agent/sidecar.py)",
    # The CLI's libraries: the agent runs in its own process (agent/launch.py).
    "typer": "never in the agent",
    "rich": "never in the agent",
    "click": "never in the agent",
}

# The modules themselves, and those an agent imports while it starts (admin routes, config API,
# replica store), which is where the dashboard and fault injection are installed.
AGENT_IMPORTS = (
    "import gossipmesh.agent.main, gossipmesh.agent.launch, gossipmesh.agent.admin\n"
    "import gossipmesh.agent.config_api, gossipmesh.agent.replica\n"
)


def loaded_after(code: str) -> set[str]:
    """The LAZY modules in ``sys.modules`` after the agent's imports and then ``code``."""
    probe = (
        "import json, sys\n"
        + AGENT_IMPORTS
        + code
        + f"\nprint(json.dumps(sorted(m for m in {sorted(LAZY)!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_agent_path_imports_none_of_the_lazy_libraries() -> None:
    assert loaded_after("") == set()


def test_the_first_metrics_render_imports_prometheus_client() -> None:
    code = (
        "from gossipmesh.proxy.metrics import ProxyMetrics\n"
        "m = ProxyMetrics()\n"
        "assert 'prometheus_client' not in sys.modules\n"
        "m.connections_total['outbound'] = 3\n"
        "assert b'gossipmesh_proxy_connections_total{direction=\"outbound\"} 3.0' in m.render()\n"
    )
    assert loaded_after(code) == {"prometheus_client"}


def test_the_first_http2_connection_builds_the_h2_side() -> None:
    code = (
        "from gossipmesh.proxy.server import Proxy\n"
        "p = Proxy(outbound=None, inbound=None)\n"
        "assert p.h2.front is None and 'h2.connection' not in sys.modules\n"
        "front = p.h2.built()\n"
        "assert p.h2.built() is front and p.h2.pool is not None\n"
    )
    # The proxy's HTTP/2 core is its own (h2core.py): h2's connection and hyperframe stay out.
    assert loaded_after(code) == {"hpack", "gossipmesh.proxy.h2link"}


def test_a_grpc_health_check_imports_h2() -> None:
    code = (
        "import trio\n"
        "from gossipmesh.agent.health import probe_io\n"
        "from gossipmesh.config.local_services import HealthCheck, LocalService\n"
        "import socket\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n"
        "port = srv.getsockname()[1]\n"
        "svc = LocalService(name='api', address='127.0.0.1', port=port)\n"
        "check = HealthCheck(kind='grpc', grpc_service='')\n"
        "async def main():\n"
        "    with trio.move_on_after(2):\n"
        "        await probe_io(svc, check)\n"
        "trio.run(main)\n"
    )
    assert {"h2.connection", "hpack", "hyperframe"} <= loaded_after(code)


def test_package_version_imports_importlib_metadata() -> None:
    code = "from gossipmesh.version import package_version\nassert package_version()\n"
    # importlib.metadata brings zipfile and importlib.resources with it.
    assert loaded_after(code) == {"importlib.metadata", "importlib.resources", "zipfile"}


def test_a_config_file_imports_tomllib(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('name = "n1"\n')
    code = (
        "from pathlib import Path\n"
        "from gossipmesh.agent.settings import load_settings\n"
        f"assert load_settings({{}}, Path({str(config)!r})).name == 'n1'\n"
    )
    assert loaded_after(code) == {"tomllib"}


def test_the_first_dashboard_request_reads_its_files() -> None:
    code = (
        "import trio\n"
        "from gossipmesh.agent.dashboard import install_dashboard\n"
        "from gossipmesh.agent.http import Request, Router\n"
        "class Host:\n"
        "    router = Router()\n"
        "install_dashboard(Host())\n"
        "assert 'importlib.resources' not in sys.modules\n"
        "page = Host.router.resolve('GET', '/ui/')\n"
        "response = trio.run(page, Request('GET', '/ui/', {}, {}, b''))\n"
        "async def body():\n"
        "    return b''.join([chunk async for chunk in response.chunks])\n"
        "assert b'<script src=\"/ui/app.js\"' in trio.run(body)\n"
    )
    assert loaded_after(code) == {"importlib.resources", "zipfile"}
