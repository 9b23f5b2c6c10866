"""The dashboard in a real headless Chromium, against a real collector fed with synthetic frames."""
from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest

from dashboard import ids
from dashboard.figures import TITLES
from tests.support import REPO, CollectorProcess, DashboardProcess, send_frames, synthetic_frames

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO / "test-artifacts" / "dashboard.png"
SCREENSHOT_CLEARED = REPO / "test-artifacts" / "dashboard-cleared.png"
EVIL = " <script>window.__pwned = 1</script> & <b>bold</b>"
WAIT_MS = 120_000

GRAPH_JS = f"document.querySelector('#{ids.GRAPH} .js-plotly-plot')"
POINTS_JS = f"""(min) => {{
    const gd = {GRAPH_JS};
    if (!gd || !gd.data || gd.data.length !== 3) return false;
    return gd.data.every(t => t.x && t.x.length >= min);
}}"""


def badge_text(page) -> str:
    return page.inner_text(f"#{ids.STATUS_BADGE}")


def wait_badge(page, label: str, timeout: int = WAIT_MS):
    page.wait_for_function(f"(label) => document.getElementById('{ids.STATUS_BADGE}').innerText === label",
                           arg=label, timeout=timeout)


def graph_data(page) -> list[dict]:
    return page.evaluate(f"{GRAPH_JS}.data.map(t => ({{n: t.x.length, xaxis: t.xaxis || 'x', yaxis: t.yaxis || 'y', "
                         f"type: t.type, text: t.text ? t.text.slice(0, 3) : []}}))")


@pytest.fixture(scope="module")
def playwright_browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def stack(tmp_path):
    with CollectorProcess(tmp_path / "store") as collector:
        send_frames(collector.ingest, synthetic_frames(run="browser-run", n_clips=30, steps=3, prompt_suffix=EVIL))
        with DashboardProcess(collector.query, interval_s=1, log_dir=tmp_path) as dashboard:
            yield collector, dashboard


def test_dashboard_end_to_end(playwright_browser, stack):
    collector, dashboard = stack
    page = playwright_browser.new_page(viewport={"width": 1600, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    dialogs: list[str] = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    try:
        page.goto(dashboard.url, wait_until="domcontentloaded")

        # three panels fill with projected points (the collector may still be warming up PaCMAP)
        page.wait_for_function(POINTS_JS, arg=10, timeout=WAIT_MS)
        traces = graph_data(page)
        assert [(t["xaxis"], t["yaxis"]) for t in traces] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
        assert [t["type"] for t in traces] == ["scattergl"] * 3
        assert [t["n"] for t in traces] == [30, 270, 30]
        wait_badge(page, "Live")
        titles = page.evaluate(f"{GRAPH_JS}.layout.annotations.map(a => a.text)")
        assert titles[:3] == list(TITLES)
        rendered = page.inner_text(f"#{ids.GRAPH}")
        for title in TITLES:
            assert title in rendered
        for stat in (ids.STAT_LATENT, ids.STAT_LORA, ids.STAT_PROMPT):
            assert page.inner_text(f"#{stat}").endswith("samples (projected)")
        assert page.inner_text(f"#{ids.STAT_LORA}") == "270 samples (projected)"

        # user text is inert: escaped in the hover text, never executed
        assert "&lt;script&gt;" in traces[0]["text"][0] and "<script>" not in traces[0]["text"][0]
        assert page.evaluate("window.__pwned") is None

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # pause / resume auto-update
        page.click(f"#{ids.PAUSE_BUTTON}")
        wait_badge(page, "Paused", 10_000)
        assert page.inner_text(f"#{ids.PAUSE_BUTTON}") == "Resume Auto-Update"
        page.click(f"#{ids.PAUSE_BUTTON}")
        wait_badge(page, "Live", 10_000)
        assert page.inner_text(f"#{ids.PAUSE_BUTTON}") == "Pause Auto-Update"

        # clear, after the confirmation dialog
        page.click(f"#{ids.CLEAR_BUTTON}")
        wait_badge(page, "Cleared", 20_000)
        assert dialogs and "cannot be undone" in dialogs[0]
        page.wait_for_function(f"{GRAPH_JS}.data.every(t => t.x.length === 0)", timeout=20_000)
        assert page.inner_text(f"#{ids.STAT_LATENT}") == "0 samples"
        page.screenshot(path=str(SCREENSHOT_CLEARED), full_page=True)

        # new data brings the panels back
        send_frames(collector.ingest, synthetic_frames(run="browser-run-2", n_clips=20, steps=1, seed=1))
        page.wait_for_function(POINTS_JS, arg=10, timeout=WAIT_MS)
        wait_badge(page, "Live")

        # the collector goes away: the badge says so and the figure stays
        collector.stop()
        wait_badge(page, "Collector offline", 30_000)
        assert all(t["n"] >= 10 for t in graph_data(page))
        assert page.evaluate("window.__pwned") is None
    finally:
        page.close()

    # nothing left this machine: every request went to the dashboard on 127.0.0.1
    assert requests
    outside = [url for url in requests
               if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname != "127.0.0.1"]
    assert outside == [], outside
    assert any("/assets/bootstrap.min.css" in url for url in requests)
    assert any("/assets/acestep-viz.css" in url for url in requests)
