"""HAProxyPlane against a real HAProxy: endpoint changes through the runtime API (no reload, no
request lost under load), structural changes through a seamless reload, lifecycle."""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest
import trio
from dataplane_helpers import Load, RecordingLog, backend, free_port, get, needs, port_of, table

from gossipmesh.dataplane import DataplaneStartError, PlaneSettings
from gossipmesh.dataplane import haproxy_api as api
from gossipmesh.dataplane.haproxy import HAProxyPlane
from gossipmesh.proxy.table import Endpoint, RouteTable

pytestmark = needs("haproxy")
SETTLE_S = 30.0


def settings(tmp_path: Path, out_port: int) -> PlaneSettings:
    return PlaneSettings(
        "haproxy", shutil.which("haproxy") or "haproxy", ("127.0.0.1", out_port), None, (),
        tmp_path, workers=1,
    )  # fmt: skip


def eps(*ports: int, weights: dict[int, int] | None = None) -> list[Endpoint]:
    return [Endpoint(f"n{p}", "127.0.0.1", p, weight=(weights or {}).get(p, 1)) for p in ports]


async def applied(plane: HAProxyPlane, version: int) -> None:
    with trio.fail_after(SETTLE_S):
        while plane.applied_version != version:
            await trio.sleep(0.02)


async def worker_pid(plane: HAProxyPlane) -> int:
    worker = api.current_worker(
        api.parse_show_proc(await api.command(plane.master_socket, "show proc"))
    )
    assert worker is not None
    return worker.pid


async def test_endpoint_changes_use_the_runtime_api_and_drop_nothing_under_load(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = free_port()
    with backend("b1") as b1, backend("b2") as b2, backend("b3") as b3:
        p1, p2, p3 = port_of(b1), port_of(b2), port_of(b3)
        plane = HAProxyPlane(settings(tmp_path, port), RecordingLog(), Counter())
        plane.update(*table({"web": eps(p1)}, version=1))
        await nursery.start(plane.run)
        assert get(port, "web")[:2] == (200, "b1")
        pid = await worker_pid(plane)
        steps = [
            eps(p1, p2),  # join
            eps(p1, p2, p3, weights={p2: 5}),  # join + weight
            eps(p2, p3, weights={p2: 5}),  # death of p1
            eps(p1, p2, p3),  # p1 back before or after its deletion; weight back to 1
            eps(p1, p3),  # drain p2
            eps(p1, p2, p3, weights={p3: 3}),
        ]
        load = Load(port, "web")
        with load.running():
            for version, step in enumerate(steps, start=2):
                await trio.sleep(0.3)  # let traffic flow on each state
                plane.update(*table({"web": step}, version=version))
                await applied(plane, version)
            await trio.sleep(0.3)
        assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors)
        assert load.total > 100  # the loop really ran through every change
        assert set(load.bodies) == {"b1", "b2", "b3"}
        assert await worker_pid(plane) == pid  # no reload: the same worker served it all
        assert plane.counters["dataplane.reloads"] == 0
        assert plane.counters["dataplane.runtime_ops"] >= 8
        with trio.fail_after(SETTLE_S):  # removed servers are deleted once nothing uses them
            while plane.maint:
                await trio.sleep(0.1)
        state = await api.command(plane.master_socket, "@1 show servers state gm:web")
        assert f"127.0.0.1:{p1}" in state and f"127.0.0.1:{p2}" in state
        nursery.cancel_scope.cancel()


async def test_a_route_change_reloads_seamlessly_and_a_refused_config_keeps_serving(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = free_port()
    with backend("b1") as b1, backend("b2") as b2:
        endpoints = {"web": eps(port_of(b1)), "api": eps(port_of(b2))}
        plane = HAProxyPlane(settings(tmp_path, port), RecordingLog(), Counter())
        plane.update(*table(endpoints, version=1))
        await nursery.start(plane.run)
        pid = await worker_pid(plane)
        assert get(port, "shop.example")[0] == 404
        route = {"hosts": ["shop.example"], "destinations": [{"service": "api"}]}
        load = Load(port, "web", connections=2)
        with load.running():
            plane.update(*table(endpoints, {"shop": route}, version=2))
            await applied(plane, 2)
            await trio.sleep(0.3)
        assert plane.counters["dataplane.reloads"] == 1
        assert await worker_pid(plane) != pid
        assert get(port, "shop.example")[:2] == (200, "b2")
        assert set(load.statuses) == {200} and load.errors == [], (
            load.statuses,
            load.bodies,
            load.errors,
        )
        # A regex HAProxy's PCRE cannot compile (RE2 takes \x{100}; PCRE outside UTF mode does
        # not): refused, counted, and the running configuration keeps serving.
        bad = {"hosts": ["bad.example"], "path": {"regex": "/\\x{100}"},
               "destinations": [{"service": "web"}]}  # fmt: skip
        plane.update(*table(endpoints, {"shop": route, "bad": bad}, version=3))
        with trio.fail_after(SETTLE_S):
            while not plane.counters["dataplane.apply_failures"]:
                await trio.sleep(0.05)
        assert plane.applied_version == 2 and plane.last_error
        assert get(port, "shop.example")[:2] == (200, "b2")
        nursery.cancel_scope.cancel()


async def test_haproxy_is_stopped_with_the_plane_and_restarted_when_it_dies(
    tmp_path: Path,
) -> None:
    port = free_port()
    with backend("b1") as b1:
        plane = HAProxyPlane(settings(tmp_path, port), RecordingLog(), Counter())
        plane.update(*table({"web": eps(port_of(b1))}, version=1))
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            assert plane.child is not None and plane.child.pid is not None
            first = plane.child.pid
            os.kill(first, signal.SIGKILL)
            with trio.fail_after(SETTLE_S):
                while plane.counters["dataplane.restarts"] == 0 or not plane.child.running:
                    await trio.sleep(0.05)
            assert plane.child.pid != first
            with trio.fail_after(SETTLE_S):
                while True:
                    try:
                        if get(port, "web")[:2] == (200, "b1"):
                            break
                    except OSError:
                        pass
                    await trio.sleep(0.05)
            second = plane.child.pid
            nursery.cancel_scope.cancel()
        assert second is not None
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)  # gone with the plane (and reaped)


async def test_a_listener_haproxy_cannot_bind_is_a_one_line_start_error(tmp_path: Path) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plane = HAProxyPlane(settings(tmp_path, port), RecordingLog(), Counter())
        plane.update(RouteTable(), ())
        with pytest.raises(DataplaneStartError) as info:
            await plane.run()
    message = str(info.value)
    assert "\n" not in message and "cannot bind socket" in message, message
    assert plane.child is not None and not plane.child.running
