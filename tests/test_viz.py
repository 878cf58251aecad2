"""`attnsim viz` in a real browser: Debian's chromium driven by Playwright loads the dashboard from
127.0.0.1 with no request leaving it, a control changes the model, Step runs ticks, and the tick
counter and the plots follow. Needs the [viz] extra and /usr/bin/chromium (.ci/run installs both)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from simulator.viz.assets import REQUIRED_ASSETS, asset_cache, missing_assets

CHROMIUM = Path("/usr/bin/chromium")
SCENARIO = """\
name: dashboard
seed: 3
ticks: 30
population:
  users: {count: 400}
  creators: {count: 30}
  goods: {initial: 150}
  advertisers: {count: 5}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, seconds: float = 150.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"attnsim viz exited with {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing served at {url} after {seconds:g} s")


def test_the_asset_cache_holds_what_the_page_loads():
    pytest.importorskip("solara")
    assert missing_assets(asset_cache()) == [], f"reinstall the [viz] extra; {asset_cache()} lacks some of {REQUIRED_ASSETS}"


def test_viz_refuses_a_bad_scenario_with_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "viz", "--set", "allocation.temperature=-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--set:1:1: allocation.temperature: Input should be greater than or equal to 0.000001 (got -1)" in done.stderr


@pytest.mark.slow
def test_dashboard_in_chromium_offline(tmp_path):
    pytest.importorskip("solara")
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    scenario = tmp_path / "dashboard.yaml"
    scenario.write_text(SCENARIO)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "viz", str(scenario), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_serving(origin + "/", server)
        left: list[str] = []
        failed: list[str] = []
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 1150})

            def local(url: str) -> bool:
                return url.startswith((origin + "/", f"ws://127.0.0.1:{port}/", f"blob:{origin}/", "data:"))

            def guard(route) -> None:  # nothing may leave 127.0.0.1: record it and refuse it
                if local(route.request.url):
                    route.continue_()
                else:
                    left.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.on("websocket", lambda socket_: None if local(socket_.url) else left.append(socket_.url))
            page.on("response", lambda response: failed.append(f"{response.status} {response.url}") if response.status >= 400 else None)
            page.goto(origin + "/")
            counter = page.locator(".tick-counter")
            counter.wait_for(timeout=60_000)
            assert counter.inner_text().startswith("tick 0 of 30")
            plots = page.locator("img")
            page.wait_for_function("document.querySelectorAll('img').length >= 5", timeout=30_000)
            before = [plots.nth(i).get_attribute("src") for i in range(plots.count())]

            # a control: the allocation rule, then Reset builds the model with it
            page.locator(".v-select").filter(has_text="allocation rule").click()
            page.locator(".v-list-item").filter(has_text="top_k").first.click()
            page.get_by_role("button", name="Reset").click()
            page.locator(".market-rules").filter(has_text="top_k allocation").wait_for(timeout=30_000)
            for tick in (1, 2, 3):
                page.get_by_role("button", name="Step").click()
                page.locator(".tick-counter").filter(has_text=f"tick {tick} of 30").wait_for(timeout=30_000)
            page.wait_for_timeout(1_000)  # let the last figures arrive
            after = [plots.nth(i).get_attribute("src") for i in range(plots.count())]
            assert len(after) >= 5 and sum(old != new for old, new in zip(before, after)) >= 5, "the plots did not change"
            assert page.locator("table.top-creators tbody tr").count() > 0
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            browser.close()
        assert left == [], f"requests left 127.0.0.1: {left}"
        assert failed == [], f"failed requests: {failed}"
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
