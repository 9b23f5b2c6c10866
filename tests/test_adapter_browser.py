"""The adapter chart and the alerts in a real Chromium, fed by the real demo (the twin under Lightning).

Each test trains the twin with ``acestep-viz demo`` against a real collector, with the update size measured
every 10 steps, and a dashboard whose alert warm-up and window fit a short run.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest
from acestep_viz.dashboard import ids

from tests.browser_support import WAIT_MS, chromium, watched_page
from tests.support import CollectorProcess, DashboardProcess, ManagedProcess, child_env, query, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 60
ALERT_FLAGS = ["--alert-warmup-steps", "20", "--alert-window-steps", "30"]
ADAPTER_JS = f"document.querySelector('#{ids.ADAPTER_GRAPH} .js-plotly-plot')"
MEDIANS_JS = f"""(minimum) => {{
    const gd = {ADAPTER_JS};
    if (!gd || !gd.data) return false;
    const median = gd.data.find(t => t.name && t.name.endsWith(': median of layers'));
    return !!median && median.x.length >= minimum;
}}"""
ALERT_JS = f"""(title) => {{
    const area = document.getElementById('{ids.ALERTS}');
    return !!area && area.innerText.includes(title);
}}"""


@pytest.fixture(scope="module")
def playwright_browser():
    with chromium() as browser:
        yield browser


@contextmanager
def demo_stack(tmp_path, run: str, lr: str):
    """A collector, a dashboard with short alert windows, and the demo training ``run`` at ``lr``."""
    with CollectorProcess(tmp_path / "store", extra_args=["--projection-interval-s", "0.5"]) as collector:
        with DashboardProcess(collector.query, interval_s=1, log_dir=tmp_path, extra_args=ALERT_FLAGS) as dashboard:
            demo = ManagedProcess([sys.executable, "-m", "acestep_viz", "demo", "--endpoint", collector.ingest,
                                   "--steps", str(STEPS), "--run", run, "--lr", lr],
                                  env=child_env({"ACESTEP_VIZ_ADAPTER_EVERY": "10"}), log_path=tmp_path / "demo.log")
            with demo:
                yield collector, dashboard, demo


def median_trace(page) -> dict:
    found = page.evaluate(f"{ADAPTER_JS}.data.filter(t => t.name.endsWith(': median of layers'))"
                          ".map(t => ({name: t.name, x: t.x, y: t.y}))")
    return found[0]


def test_the_adapter_chart_draws_a_normal_run_growing_and_no_alert_says_it_is_stuck(playwright_browser, tmp_path):
    with demo_stack(tmp_path, "adapter-normal", "1e-3") as (collector, dashboard, demo):
        with watched_page(playwright_browser, dashboard.url) as watched:
            page = watched.page
            page.wait_for_function(MEDIANS_JS, arg=STEPS // 10, timeout=WAIT_MS * 3)
            median = median_trace(page)
            assert median["name"] == "adapter-normal: median of layers"
            assert median["x"][:3] == [0, 10, 20]
            assert median["y"][0] == 0 and median["y"][-1] > median["y"][1] > 0  # starts at zero, then grows
            names = page.evaluate(f"{ADAPTER_JS}.data.map(t => t.name)")
            assert any(".to_out.0" in name for name in names)  # the largest layers, named
            assert "The adapter does not move" not in page.inner_text(f"#{ids.ALERTS}")
        demo.proc.wait(300)
    assert demo.proc.returncode == 0, demo.log_text()


def test_a_zero_learning_rate_raises_the_adapter_does_not_move_alert(playwright_browser, tmp_path):
    with demo_stack(tmp_path, "adapter-frozen", "0") as (collector, dashboard, demo):
        with watched_page(playwright_browser, dashboard.url) as watched:
            page = watched.page
            page.wait_for_function(ALERT_JS, arg="The adapter does not move", timeout=WAIT_MS * 3)
            text = page.inner_text(f"#{ids.ALERTS}")
            assert "largest update size 0 " in text and "under 0.0001 on every layer since step 0" in text
        assert all(v == 0 for layer in query(collector.query, {"op": "adapter", "run": "adapter-frozen"})[
            "layers"].values() for v in layer["value"])


def test_a_very_high_learning_rate_raises_the_collapse_alert(playwright_browser, tmp_path):
    """Needs ``effective_rank`` in the collector's history summaries (collector/health.py)."""
    with demo_stack(tmp_path, "adapter-collapse", "0.02") as (collector, dashboard, demo):
        frames = wait_for(lambda: query(collector.query, {"op": "history", "run": "adapter-collapse",
                                                          "space": "lora"}).get("frames"), timeout=WAIT_MS / 1000)
        assert "effective_rank" in frames[-1], "the collector's history summaries carry no effective_rank"
        with watched_page(playwright_browser, dashboard.url) as watched:
            page = watched.page
            page.wait_for_function(ALERT_JS, arg="The LoRA space is collapsing", timeout=WAIT_MS * 3)
            assert "effective rank" in page.inner_text(f"#{ids.ALERTS}")
