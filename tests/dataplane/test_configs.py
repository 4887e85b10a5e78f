"""The generated HAProxy and nginx configurations: accepted by the real binaries (when
installed), quoting that cannot be escaped from, values that cannot be carried left out."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dataplane_helpers import needs, table

from gossipmesh.config.schema import LoadBalancer, Retry, ServiceConfig
from gossipmesh.dataplane import haproxy_config as hc
from gossipmesh.dataplane import nginx_config as nc
from gossipmesh.dataplane.model import Layout, layout, local_instances
from gossipmesh.proxy.table import Endpoint, ServiceSettings

ROUTES = {
    "api": {
        "hosts": ["api.example", "*.api.example"],
        "path": {"prefix": "/v1"},
        "methods": ["GET", "POST"],
        "headers": [
            {"name": "x-canary", "exact": 'it\'s "x" #1 $HOME \\d;{}'},
            {"name": "x-user", "regex": r"u\d+"},
            {"name": "x-debug", "present": True},
        ],
        "destinations": [
            {"service": "web", "weight": 90},
            {"service": "web", "weight": 10, "tags": ["v2"]},
        ],  # fmt: skip
    },
    "item": {"path": {"regex": r"/item/\d+"}, "destinations": [{"service": "solo"}]},
    "exact": {
        "hosts": ["x.example"],
        "path": {"exact": "/a"},
        "priority": 5,
        "destinations": [{"service": "hashed"}],
    },  # fmt: skip
}
ENDPOINTS = {
    "web": [
        Endpoint("a1", "127.0.0.1", 9001, ("v1",)),
        Endpoint("a2", "10.0.0.2", 9002, ("v2",), 3, ("127.0.0.3", 4143)),
    ],  # fmt: skip
    "solo": [],
    "hashed": [Endpoint("a3", "::1", 9003, (), 1, ("::1", 4143))],
}
SERVICES = {
    "hashed": ServiceConfig("hashed", load_balancer=LoadBalancer("ring_hash", "x-user")),
    "web": ServiceConfig("web", retry=Retry(on_status=(502, 418, 504), on_connect_failure=False)),
}


def sample(routes: dict[str, dict[str, object]] | None = None) -> Layout:
    tab, rs = table(ENDPOINTS, ROUTES if routes is None else routes, SERVICES)
    return layout(tab, rs, unique_dests=True)


LOCAL = local_instances({"web": [("127.0.0.1", 9001)], "solo": [("127.0.0.1", 9005)]})


def haproxy_files(tmp_path: Path, lay: Layout) -> hc.Rendered:
    rendered = hc.render(hc.Plan(lay, LOCAL, ("127.0.0.2", 4140), ("::1", 4143), str(tmp_path)))
    for name, text in rendered.files.items():
        (tmp_path / name).write_text(text)
    return rendered


def nginx_file(tmp_path: Path, lay: Layout, user: str | None = None) -> nc.Rendered:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    plan = nc.Plan(lay, LOCAL, ("127.0.0.2", 4140), ("::1", 4143), str(tmp_path), 1, user)
    rendered = nc.render(plan)
    (tmp_path / nc.CONFIG_FILE).write_text(rendered.text)
    return rendered


def test_haproxy_quoting_is_strong_and_refuses_what_it_cannot_carry() -> None:
    assert hc.q("it's") == "'it'\\''s'"
    assert hc.q('a "b" $X #c \\d') == "'a \"b\" $X #c \\d'"
    with pytest.raises(hc.Unexpressible):
        hc.q("line\nbreak")
    with pytest.raises(hc.Unexpressible):
        hc.q("caf\u00e9")


def test_haproxy_maps_service_settings() -> None:
    web = ServiceSettings.from_config(SERVICES["web"])
    assert hc.retry_on(web) == "502 504"  # 418 has no HAProxy retry-on keyword
    assert hc.balance(ServiceSettings.from_config(SERVICES["hashed"])) == [
        "balance hdr(x-user)", "hash-type consistent",
    ]  # fmt: skip
    args = hc.server_args(ServiceSettings(name="x", consecutive_failures=7), 999)
    assert "weight 256 " in args and "error-limit 7 on-error mark-down" in args


@needs("haproxy")
def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    rendered = haproxy_files(tmp_path, sample())
    assert rendered.left_out == ()
    text = rendered.files[hc.CONFIG_FILE]
    assert "server 10.0.0.2:9002 127.0.0.3:4143 weight 3" in text
    assert "server ::1:9003 ipv6@::1:4143" in text and "bind ipv6@::1:4143" in text
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(tmp_path / hc.CONFIG_FILE)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_haproxy_leaves_out_a_route_it_cannot_quote(tmp_path: Path) -> None:
    bad = {"hosts": ["bad.example"], "headers": [{"name": "x-a", "exact": "a\nb"}],
           "destinations": [{"service": "solo"}]}  # fmt: skip
    rendered = haproxy_files(tmp_path, sample({**ROUTES, "bad": bad}))
    assert len(rendered.left_out) == 1 and rendered.left_out[0].startswith("route bad:")
    text = rendered.files[hc.CONFIG_FILE]
    assert "a\nb" not in text and "bad.example" not in text and "api.example" in text


def test_nginx_quoting_escapes_backslash_and_quote() -> None:
    assert nc.s('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(nc.Unexpressible):
        nc.s("tab\tinside")


@needs("nginx")
def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    rendered = nginx_file(tmp_path, sample())
    assert rendered.left_out == ()
    text = rendered.text
    assert "split_clients" in text and "90.00% c" in text
    assert "hash $http_x_user consistent;" in text
    assert "\nuser " not in text
    check = subprocess.run(["nginx", "-t", "-q", "-p", f"{tmp_path}/", "-c",
                            str(tmp_path / nc.CONFIG_FILE)], capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_nginx_routes_keep_the_native_precedence_order(tmp_path: Path) -> None:
    text = nginx_file(tmp_path, sample()).text
    route_map = text[text.index("$gm_route {") :]
    # "exact" has priority 5, then the regex path route, then the prefix one.
    assert route_map.index("x\\\\.example") < route_map.index("item") < route_map.index("api")


def test_nginx_leaves_out_a_route_it_cannot_quote_and_keeps_flag_positions(
    tmp_path: Path,
) -> None:
    bad = {"hosts": ["bad.example"], "priority": 9, "headers": [{"name": "x-a", "regex": "é"}],
           "destinations": [{"service": "solo"}]}  # fmt: skip
    rendered = nginx_file(tmp_path, sample({**ROUTES, "bad": bad}))
    assert [x.split(":")[0] for x in rendered.left_out] == ["route bad"]
    assert "bad\\\\.example" not in rendered.text
    # The left-out route's header flag still has a variable, so later routes' positions hold.
    assert "map $host $gm_h0 {" in rendered.text and "$gm_h0$gm_h1$gm_h2$gm_h3" in rendered.text


def test_nginx_runs_its_workers_as_the_given_user(tmp_path: Path) -> None:
    assert nginx_file(tmp_path, sample(), user="gossip").text.splitlines()[1] == "user gossip;"


@pytest.mark.skipif(shutil.which("nginx") is None or os.geteuid() != 0, reason="needs nginx, root")
def test_nginx_config_with_user_root_passes_the_test(tmp_path: Path) -> None:
    nginx_file(tmp_path, sample(), user="root")
    check = subprocess.run(["nginx", "-t", "-q", "-p", f"{tmp_path}/", "-c",
                            str(tmp_path / nc.CONFIG_FILE)], capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
