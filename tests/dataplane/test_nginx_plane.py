"""NginxPlane against a real nginx: every change a tested file and a graceful reload; a file
nginx -t refuses is never applied; identical tables cost nothing; lifecycle."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import trio
from dataplane_helpers import RecordingLog, backend, free_port, get, needs, port_of, table

from gossipmesh.dataplane import DataplaneStartError, PlaneSettings
from gossipmesh.dataplane.nginx import NginxPlane, worker_pids
from gossipmesh.dataplane.nginx_config import CONFIG_FILE
from gossipmesh.proxy.table import Endpoint

pytestmark = needs("nginx")
SETTLE_S = 30.0


def plane_for(tmp_path: Path, port: int) -> NginxPlane:
    settings = PlaneSettings("nginx", shutil.which("nginx") or "nginx", ("127.0.0.1", port),
                             None, (), tmp_path, workers=1)  # fmt: skip
    return NginxPlane(settings, RecordingLog(), Counter())


def eps(*ports: int) -> list[Endpoint]:
    return [Endpoint(f"n{p}", "127.0.0.1", p) for p in ports]


async def applied_or_refused(plane: NginxPlane, version: int) -> None:
    failures = plane.counters["dataplane.apply_failures"]
    with trio.fail_after(SETTLE_S):
        while (
            plane.applied_version != version
            and plane.counters["dataplane.apply_failures"] == failures
        ):
            await trio.sleep(0.02)


async def test_changes_are_tested_reloaded_and_a_refused_file_is_never_applied(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = free_port()
    with backend("b1") as b1, backend("b2") as b2:
        plane = plane_for(tmp_path, port)
        plane.update(*table({"web": eps(port_of(b1))}, version=1))
        await nursery.start(plane.run)
        assert get(port, "web")[:2] == (200, "b1")
        assert plane.child is not None and plane.child.pid is not None
        master = plane.child.pid
        before = worker_pids(master)
        plane.update(*table({"web": eps(port_of(b2))}, version=2))  # an endpoint change
        await applied_or_refused(plane, 2)
        assert plane.counters["dataplane.reloads"] == 1 and plane.last_error is None
        assert get(port, "web")[:2] == (200, "b2")
        with trio.fail_after(SETTLE_S):  # the old worker finished and left
            while worker_pids(master) & before:
                await trio.sleep(0.05)
        plane.update(*table({"web": eps(port_of(b2))}, version=3))  # the same config
        await applied_or_refused(plane, 3)
        assert plane.counters["dataplane.reloads"] == 1
        live = (tmp_path / "dataplane-nginx" / CONFIG_FILE).read_text()
        bad = {"hosts": ["bad.example"], "path": {"regex": "/\\x{100}"},
               "destinations": [{"service": "web"}]}  # fmt: skip
        plane.update(*table({"web": eps(port_of(b1))}, {"bad": bad}, version=4))
        await applied_or_refused(plane, 4)
        assert plane.applied_version == 3 and plane.counters["dataplane.apply_failures"] == 1
        assert plane.last_error is not None and "nginx -t" in plane.last_error
        assert (tmp_path / "dataplane-nginx" / CONFIG_FILE).read_text() == live
        assert get(port, "web")[:2] == (200, "b2")  # the old configuration keeps serving
        assert plane.status()["apply_failures"] == 1
        plane.update(*table({"web": eps(port_of(b1))}, version=5))  # a good one applies again
        await applied_or_refused(plane, 5)
        assert get(port, "web")[:2] == (200, "b1")
        nursery.cancel_scope.cancel()


async def test_nginx_stops_with_the_plane(tmp_path: Path) -> None:
    plane = plane_for(tmp_path, free_port())
    plane.update(*table({"web": []}, version=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        assert plane.child is not None and plane.child.pid is not None
        pid = plane.child.pid
        workers = worker_pids(pid)
        assert workers
        nursery.cancel_scope.cancel()
    for p in (pid, *workers):
        with pytest.raises(ProcessLookupError):
            os.kill(p, 0)


async def test_a_listener_nginx_cannot_bind_is_a_one_line_start_error(tmp_path: Path) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        plane = plane_for(tmp_path, taken.getsockname()[1])
        plane.update(*table({}, version=1))
        with pytest.raises(DataplaneStartError) as info:
            await plane.run()
    message = str(info.value)
    assert "\n" not in message and "Address already in use" in message, message
