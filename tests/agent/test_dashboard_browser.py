"""The web dashboard in a real browser (headless Chromium driven by Selenium) on a three-agent
mesh serving an 80/20 canary: what the page shows matches the admin API, before and after an agent
is killed. ``GOSSIPMESH_SCREENSHOT=PATH`` saves the page there (docs/dashboard.png is one)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_procs import Procs, requires_loopback_aliases, wait_until
from traffic_mesh import CanaryMesh

selenium = pytest.importorskip("selenium", reason="selenium is in the test extra")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    requires_loopback_aliases,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
]
WAIT_S = 60.0


@pytest.fixture(scope="module")
def mesh(procs: Procs) -> Iterator[CanaryMesh]:
    m = CanaryMesh(procs)
    try:
        yield m.start()
    finally:
        m.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    assert CHROMIUM is not None and DRIVER is not None
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1250"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Traffic:
    """Requests to web through a1 from a thread, one in twenty to the denied /admin."""

    def __init__(self, mesh: CanaryMesh) -> None:
        self.mesh = mesh
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.mesh.get("/admin" if i % 20 == 0 else "/")
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def rows(driver: webdriver.Chrome, table: str) -> list[dict[str, str]]:
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr"):
        attrs = driver.execute_script(
            "const o = {}; for (const a of arguments[0].attributes) o[a.name] = a.value; return o;",
            tr,
        )
        out.append({k.removeprefix("data-"): v for k, v in attrs.items() if k.startswith("data-")})
    return out


def page_round(driver: webdriver.Chrome) -> int:
    value = driver.find_element(By.ID, "updated").get_attribute("data-round")
    return int(value or 0)


def fresh(driver: webdriver.Chrome) -> None:
    """Wait for one more complete redraw than now."""
    start = page_round(driver)
    wait_until("a dashboard redraw", lambda: page_round(driver) > start, WAIT_S, 0.1)


def split(stats: dict[str, Any]) -> dict[str, float]:
    [route] = [r for r in stats["routes"] if r["route"] == "web-canary"]
    return {d["destination"]: d["observed_share"] for d in route["destinations"]}


def test_the_page_matches_the_admin_api_while_traffic_flows_and_an_agent_dies(
    mesh: CanaryMesh, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    a1 = mesh.agents["a1"]
    browser.get(f"http://{a1.admin}/ui/")
    with Traffic(mesh):
        wait_until("traffic in the page", lambda: rows(browser, "routes")
                   and rows(browser, "routes")[0].get("observed") not in (None, "", "null"),
                   WAIT_S, 0.2)  # fmt: skip
        time.sleep(3)  # a few seconds of steady traffic in the window
        fresh(browser)
        api = a1.client.stats(window_s=10)
        page_split = {r["destination"]: float(r["observed"]) for r in rows(browser, "routes")}
        configured = {r["destination"]: float(r["configured"]) for r in rows(browser, "routes")}
        assert configured == {"web@v1": 0.8, "web@v2": 0.2}
        for dest, share in split(api).items():  # two reads a moment apart, same 10 s window
            assert abs(page_split[dest] - share) <= 0.02, (page_split, split(api))
        members = {r["member"]: r["state"] for r in rows(browser, "members")}
        assert members == {m["name"]: m["state"] for m in a1.client.members()}
        assert set(members.values()) == {"alive"}
        services = {(r["service"], r["node"]): r["health"] for r in rows(browser, "services")}
        assert services == {(s["service"], s["node"]): s["health"] for s in a1.client.services()}
        assert services == {("web", "a2"): "passing", ("web", "a3"): "passing"}
        stat_rows = {r["service"]: r for r in rows(browser, "stats") if "destination" not in r}
        assert float(stat_rows["web"]["success"]) > 0.5  # /admin's 403s are answers, not failures
        denials = rows(browser, "denials")
        assert {(d["service"], d["policy"]) for d in denials} == {("web", "web-admin")}
        history = {r["key"] for r in rows(browser, "history")}
        assert {"route/web-canary", "policy/web-admin"} <= history

        mesh.agents["a3"].signal(signal.SIGKILL)  # the canary's only node
        wait_until("a1 sees a3 gone", lambda: a1.members()["a3"] in ("suspect", "dead"), WAIT_S)

        def page_agrees() -> bool:
            fresh(browser)
            shown = {r["member"]: r["state"] for r in rows(browser, "members")}
            return shown == a1.members() and shown["a3"] == "dead"

        wait_until("the page showing a3 dead, as the API does", page_agrees, WAIT_S, 0.2)
        text = browser.find_element(By.ID, "stats-window").text
        assert "from 2 agent(s)" in text, text
        shot = os.environ.get("GOSSIPMESH_SCREENSHOT") or str(tmp_path / "dashboard.png")
        assert browser.save_screenshot(shot)
    assert Path(shot).stat().st_size > 10_000


def test_a_token_in_the_fragment_moves_to_session_storage(
    mesh: CanaryMesh, browser: webdriver.Chrome
) -> None:
    a1 = mesh.agents["a1"]
    browser.get(f"http://{a1.admin}/ui/#token=s3cret%2Btoken")
    wait_until("the fragment gone", lambda: browser.execute_script("return location.hash") == "",
               WAIT_S, 0.1)  # fmt: skip
    assert browser.current_url == f"http://{a1.admin}/ui/"
    stored = browser.execute_script("return sessionStorage.getItem('gossipmesh.admin-token')")
    assert stored == "s3cret+token"
    # On a loopback admin address the reads need no token: a wrong one is never asked for.
    fresh(browser)
    assert browser.find_element(By.ID, "login").get_attribute("hidden") is not None
    browser.execute_script("sessionStorage.clear()")
