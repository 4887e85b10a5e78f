"""Parsing what HAProxy and nginx say (show proc, show stat, stub_status, runtime answers), and
the runtime commands built for each server operation."""

from __future__ import annotations

from dataplane_helpers import table

from gossipmesh.dataplane import haproxy_api as api
from gossipmesh.dataplane.diff import ServerOp
from gossipmesh.dataplane.model import Server, layout, local_instances
from gossipmesh.dataplane.stats import haproxy_metrics, nginx_metrics, parse_stub_status
from gossipmesh.proxy.table import Endpoint, ServiceSettings

SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
22624           master          2 [failed: 1]   0d00h00m05s     2.6.12-1+deb12u4
# workers
22800           worker          0               0d00h00m01s     2.6.12-1+deb12u4
22774           worker          1               0d00h00m04s     2.6.12-1+deb12u4
# programs

"""


def test_show_proc_gives_the_master_and_the_current_worker() -> None:
    procs = api.parse_show_proc(SHOW_PROC)
    assert procs[0] == api.Proc(22624, "master", 2, 1)
    worker = api.current_worker(procs)
    assert worker is not None and worker.pid == 22800
    assert api.current_worker(api.parse_show_proc("garbage\n# workers\nnope")) is None


def test_runtime_answers_are_judged() -> None:
    assert api.command_failed("\n") is None
    assert api.command_failed("New server registered.\n") is None
    assert api.command_failed("Server deleted.\n") is None
    assert api.command_failed("no need to change the addr, port changed from ...") is None
    assert api.command_failed("Server still has connections attached to it, cannot remove it.")


def test_server_operations_become_worker_commands() -> None:
    srv = Server("10.0.0.1:80", "127.0.0.3", 4143, 300, "a", True)
    s = ServiceSettings(name="web")
    add = api.server_commands(ServerOp("add", ("web", ()), srv), s, revive=False)
    assert add[0].startswith("@1 add server gm:web/10.0.0.1:80 127.0.0.3:4143 weight 256 ")
    assert add[1:] == ["@1 enable health gm:web/10.0.0.1:80", "@1 enable server gm:web/10.0.0.1:80"]
    revive = api.server_commands(ServerOp("add", ("web", ()), srv), s, revive=True)
    assert revive[-1] == "@1 set server gm:web/10.0.0.1:80 state ready"
    remove = api.server_commands(ServerOp("remove", ("web", ()), srv), s, revive=False)
    assert remove == ["@1 set server gm:web/10.0.0.1:80 state maint"]
    assert api.delete_command("gm:web", "10.0.0.1:80") == "@1 del server gm:web/10.0.0.1:80"


STAT = (
    "# pxname,svname,scur,stot,bin,bout,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,wretr,"
    "wredis,chkdown,\n"
    "gm-outbound,FRONTEND,3,40,1000,2000,0,35,0,4,1,,,,\n"
    "gm:web,10.0.0.1:80,1,20,,,0,20,0,0,0,1,0,2,\n"
    "gm:web,BACKEND,2,30,,,0,29,0,0,1,1,2,,\n"
    "gm-local:0,BACKEND,0,5,,,0,5,0,0,0,0,0,,\n"
    "stats,BACKEND,0,0,,,0,0,0,0,0,0,0,,\n"
)


def test_show_stat_fills_the_native_families() -> None:
    lay = layout(table({"web": [Endpoint("a", "10.0.0.1", 80, (), 1, ("127.0.0.3", 4143))]})[0])
    text = haproxy_metrics(api.parse_stat_csv(STAT), lay, local_instances({"api": [("l", 1)]}))
    lines = set(text.decode().splitlines())
    assert ('gossipmesh_proxy_requests_total{destination="web",direction="outbound",node="",'
            'route="",service="web",status_class="2xx"} 29.0') in lines  # fmt: skip
    assert ('gossipmesh_proxy_requests_total{destination="api",direction="inbound",node="",'
            'route="",service="api",status_class="2xx"} 5.0') in lines  # fmt: skip
    assert 'gossipmesh_proxy_retries_total{service="web"} 3.0' in lines
    assert 'gossipmesh_proxy_ejections_total{service="web"} 2.0' in lines
    assert 'gossipmesh_proxy_open_connections{direction="outbound"} 3.0' in lines
    assert 'gossipmesh_proxy_upstream_connections{service="web"} 2.0' in lines


# nginx ends these lines with a space.
STUB = "Active connections: 2 \nserver accepts handled requests\n 13 13 15 \nReading: 0 Writing: 1 Waiting: 1 \n"


def test_stub_status_is_parsed_and_exported() -> None:
    stub = parse_stub_status(STUB)
    assert stub == {"active": 2, "accepts": 13, "handled": 13, "requests": 15, "reading": 0,
                    "writing": 1, "waiting": 1}  # fmt: skip
    lines = set(nginx_metrics(stub).decode().splitlines())
    assert 'gossipmesh_dataplane_requests_total{engine="nginx"} 15.0' in lines
    assert 'gossipmesh_proxy_open_connections{direction="all"} 2.0' in lines
    assert parse_stub_status("Active connections: x\nserver accepts\n 1 2\n") == {}
