"""The installed tab in a real headless Chromium: an ACETrainer-shaped app showing a live dashboard."""
from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from acestep_viz.dashboard import ids

from tests.browser_support import POINTS_JS
from tests.support import (
    REPO,
    CollectorProcess,
    DashboardProcess,
    ManagedProcess,
    child_env,
    free_port,
    send_frames,
    synthetic_frames,
    wait_for,
)
from tests.test_dashboard_browser import playwright_browser  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIXTURES = REPO / "tests" / "fixtures" / "acetrainer"
SCREENSHOT = REPO / "test-artifacts" / "acetrainer-tab.png"
WAIT_MS = 120_000
FRAME = "iframe[data-acestep-viz-frame]"
LOOPBACK = ("127.0.0.1", "localhost")


class AceTrainerApp(ManagedProcess):
    """A fixture checkout's tiny Flask app on a free loopback port."""

    def __init__(self, root: Path, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        super().__init__([sys.executable, str(root / "app.py"), "--host", "127.0.0.1", "--port", str(self.port)],
                         log_path=log_dir / f"acetrainer-{self.port}.log")

    def __enter__(self):
        self.start()

        def ready():
            if not self.alive():
                raise RuntimeError(f"the fixture app exited early:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False
        wait_for(ready, 30, 0.2)
        return self


def install(root: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "acestep_viz", "acetrainer", "install", str(root), *args],
                            cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def shown(page, selector: str) -> bool:
    return page.evaluate("(s) => getComputedStyle(document.querySelector(s)).display !== 'none'", selector)


def open_tab(page, name: str) -> None:
    page.click(f".tab-btn[data-tab={name}]")
    assert shown(page, f"#tab-{name}")


def frame_src(page) -> str | None:
    return page.get_attribute(FRAME, "src")


STATUS = "[data-acestep-viz-status]"


def status_state(page) -> str | None:
    return page.get_attribute(STATUS, "data-acestep-viz-state")


def pump_until(page, predicate, timeout_ms: int = WAIT_MS) -> None:
    """Let the page's events arrive (the sync API delivers them only inside its calls) until ``predicate``."""
    waited = 0
    while not predicate():
        assert waited < timeout_ms, "condition not met"
        page.wait_for_timeout(200)
        waited += 200


def is_poll(request) -> bool:
    """A dashboard update tick, or the tab's sidecar status check."""
    if request.url.endswith("/api/status"):
        return True
    return "_dash-update-component" in request.url and f"{ids.INTERVAL}.n_intervals" in (request.post_data or "")


def test_the_tab_shows_the_live_dashboard_and_the_old_tabs_still_work(playwright_browser, tmp_path):  # noqa: F811
    root = Path(shutil.copytree(FIXTURES / "three-tabs", tmp_path / "acetrainer"))
    with CollectorProcess(tmp_path / "store") as collector:
        send_frames(collector.ingest, synthetic_frames(run="acetrainer-run", n_clips=30, steps=3))
        with DashboardProcess(collector.query, interval_s=1, log_dir=tmp_path) as dashboard:
            install(root, "--dashboard-url", dashboard.url)
            with AceTrainerApp(root, tmp_path) as app:
                check_tab(playwright_browser, app, dashboard)


def check_tab(browser, app: AceTrainerApp, dashboard: DashboardProcess) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(app.url, wait_until="domcontentloaded")
        page.wait_for_load_state("load")
        assert frame_src(page) is None, "the dashboard must load only when the tab is first opened"
        assert not shown(page, "#tab-embeddings")

        open_tab(page, "embeddings")
        assert not shown(page, "#tab-training")
        assert "active" in page.get_attribute(".tab-btn[data-tab=embeddings]", "class")
        page.wait_for_function(f"document.querySelector('{FRAME}').getAttribute('src')")
        assert frame_src(page) == dashboard.url + "?embed=1"
        link = page.locator("a[data-acestep-viz-open]")
        assert link.get_attribute("href") == dashboard.url and link.get_attribute("target") == "_blank"
        assert link.inner_text() == "Open in new window"

        # inside the iframe: the dashboard's three panels fill with points; embed mode drops the header card
        frame = page.locator(FRAME).element_handle().content_frame()
        frame.wait_for_function(POINTS_JS, arg=10, timeout=WAIT_MS)
        counts = frame.evaluate(f"document.querySelector('#{ids.GRAPH} .js-plotly-plot')"
                                "._fullData.map(t => t.x.length)")
        assert counts == [30, 270, 30]
        assert frame.locator(f"#{ids.HEADER}").is_hidden()
        assert frame.locator(f"#{ids.REFRESH_BUTTON}").is_visible()
        assert frame.locator(f"#{ids.STAT_LORA}").is_visible()
        frame.wait_for_function(f"document.getElementById('{ids.EMBED_BADGE}').innerText === 'Live'",
                                timeout=WAIT_MS)
        assert frame.locator(f"#{ids.EMBED_BADGE}").is_visible()
        # the status line says the sidecar is up
        pump_until(page, lambda: page.inner_text(STATUS).startswith("Sidecar up: 1 run, "))  # after any warm-up
        assert status_state(page) == "up"

        # nothing polls while the tab is hidden: neither the dashboard in the frame nor the status line
        polls: list[str] = []
        page.on("request", lambda request: polls.append(request.url) if is_poll(request) else None)
        pump_until(page, lambda: any("/api/status" in u for u in polls) and any("_dash" in u for u in polls))
        open_tab(page, "training")
        settled = -1
        while settled != len(polls):  # ticks already on their way may still land
            settled = len(polls)
            page.wait_for_timeout(1500)
        quiet = len(polls)
        page.wait_for_timeout(5000)  # five dashboard intervals, one status interval
        assert len(polls) == quiet, polls[quiet:]
        open_tab(page, "embeddings")
        pump_until(page, lambda: any("_dash" in u for u in polls[quiet:]))

        frame_box = page.locator(FRAME).bounding_box()
        assert frame_box["width"] > 1000 and frame_box["height"] > 600
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

        # the existing visualization tab still switches through ACETrainer's own switchTab
        frame.evaluate("window.__still_here = true")
        open_tab(page, "visualization")
        assert not shown(page, "#tab-embeddings")
        assert page.inner_text("#viz-activity") == "Active (opened 1 times)"
        open_tab(page, "training")
        assert page.inner_text("#viz-activity") == "Not active"

        # back to ours: the same dashboard page, not a reload
        open_tab(page, "embeddings")
        assert frame.evaluate("window.__still_here") is True
        assert frame_src(page) == dashboard.url + "?embed=1"

        # the dashboard on its own keeps its header card
        page.goto(dashboard.url, wait_until="domcontentloaded")
        page.wait_for_selector(f"#{ids.HEADER}", state="visible", timeout=WAIT_MS)
        assert page.locator(f"#{ids.EMBED_STATUS}").is_hidden()
    finally:
        page.close()
    outside = [url for url in requests if not url.startswith(("data:", "blob:", "about:"))
               and urlsplit(url).hostname not in LOOPBACK]
    assert outside == [], outside


def test_the_tab_says_when_the_sidecar_is_not_running(playwright_browser, tmp_path):  # noqa: F811
    root = Path(shutil.copytree(FIXTURES / "two-tabs", tmp_path / "acetrainer"))
    install(root, "--dashboard-url", f"http://127.0.0.1:{free_port()}/")  # nothing listens there
    with AceTrainerApp(root, tmp_path) as app:
        page = playwright_browser.new_page()
        try:
            page.goto(app.url, wait_until="load")
            open_tab(page, "embeddings")
            pump_until(page, lambda: status_state(page) == "down")
            assert "not running" in page.inner_text(STATUS) and "acestep-viz up" in page.inner_text(STATUS)
        finally:
            page.close()


@pytest.mark.parametrize("host", LOOPBACK)
def test_without_a_url_the_tab_uses_the_page_host_and_port_8050(playwright_browser, tmp_path, host):  # noqa: F811
    root = Path(shutil.copytree(FIXTURES / "two-tabs", tmp_path / "acetrainer"))
    install(root)
    with AceTrainerApp(root, tmp_path) as app:
        page = playwright_browser.new_page()
        # whatever listens on this machine's port 8050, the test answers for it
        page.route(f"http://{host}:8050/**", lambda route: route.fulfill(body="<p>stub dashboard</p>",
                                                                          content_type="text/html"))
        try:
            page.goto(f"http://{host}:{app.port}/", wait_until="load")
            assert frame_src(page) is None
            open_tab(page, "embeddings")
            page.wait_for_function(f"document.querySelector('{FRAME}').getAttribute('src')")
            assert frame_src(page) == f"http://{host}:8050/?embed=1"
            assert page.get_attribute("a[data-acestep-viz-open]", "href") == f"http://{host}:8050/"
            frame = page.locator(FRAME).element_handle().content_frame()
            frame.wait_for_selector("text=stub dashboard")
            open_tab(page, "datasets")
            assert page.inner_text("#dataset-info") == "No dataset loaded (refreshed)."
        finally:
            page.close()
