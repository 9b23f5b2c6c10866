"""Points glide to their new place when a new fit moves the live map; nothing else animates.

A fake collector (tests/fake_collector.py) serves 3 x 40 points and moves them all on demand; a
real dashboard process polls it (only when the test clicks Refresh: its interval is an hour); a real
headless Chromium shows it. A sampler in the page reads one point's drawn x coordinate on every
animation frame from the WebGL layer, so the test sees the positions the user saw, not how long anything
took.
"""
from __future__ import annotations

import pytest
from acestep_viz.dashboard import ids

from tests.browser_support import GRAPH_JS, SHORT_MS, chromium, wait_counts, watched_page
from tests.fake_collector import FakeCollector
from tests.support import DashboardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N = 40
SHIFT = 3.0
HOUR_S = 3600

# what the WebGL layer of the latent panel draws: its first point's x (Plotly's scattergl scene)
SAMPLE_JS = f"""() => {{
    window.__samples = [];
    const gd = {GRAPH_JS};
    const sample = () => {{
        window.__samples.push(gd._fullLayout._plots.xy._scene.markerOptions[0].positions[0]);
        requestAnimationFrame(sample);
    }};
    requestAnimationFrame(sample);
}}"""
FIRST_X_JS = f"() => {GRAPH_JS}._fullData[0].x[0]"
VERSION_JS = f"""(version) => {{ const gd = {GRAPH_JS};
    return gd.layout.meta && gd.layout.meta.version === version && gd.data[0].x.bdata !== undefined; }}"""
REFRESH_JS = f"() => document.getElementById('{ids.REFRESH_BUTTON}').click()"
MORE_FRAMES_JS = "(n) => window.__samples.length >= n"
ARRIVED_JS = "(x) => window.__samples.length > 0 && window.__samples[window.__samples.length - 1] === x"


@pytest.fixture(scope="module")
def playwright_browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def fake_stack(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("motion")
    with FakeCollector(N) as fake, DashboardProcess(fake.endpoint, interval_s=HOUR_S, log_dir=log_dir) as dashboard:
        yield fake, dashboard


def settled(page, version: int) -> None:
    """Until the figure of ``version`` is drawn exactly as the server sent it (any motion over)."""
    page.wait_for_function(VERSION_JS, arg=version, timeout=SHORT_MS)


def move_and_sample(page, fake) -> tuple[float, float, list[float]]:
    """(x before, x after, every x drawn in between) of the first latent point across one refit."""
    before = page.evaluate(FIRST_X_JS)
    page.evaluate(SAMPLE_JS)
    version = fake.move(SHIFT)
    page.evaluate(REFRESH_JS)
    settled(page, version)
    after = page.evaluate(FIRST_X_JS)
    page.wait_for_function(ARRIVED_JS, arg=after, timeout=SHORT_MS)  # the motion, if any, has ended
    return before, after, page.evaluate("() => window.__samples")


def between(samples: list[float], start: float, end: float) -> list[float]:
    low, high = sorted((start, end))
    margin = 0.05 * (high - low)
    return [x for x in samples if low + margin < x < high - margin]


def test_a_new_fit_moves_points_smoothly_and_a_colour_change_does_not(playwright_browser, fake_stack):
    fake, dashboard = fake_stack
    with watched_page(playwright_browser, dashboard.url) as watched:
        page = watched.page
        wait_counts(page, [N, N, N])
        before, after, samples = move_and_sample(page, fake)
        assert after == pytest.approx(before + SHIFT, abs=1e-4)
        assert between(samples, before, after), samples  # drawn part of the way, more than once a jump

        page.evaluate(SAMPLE_JS)
        page.evaluate(f"""() => window.dash_clientside.set_props('{ids.COLOUR_SELECTS["latent"]}',
                                                                 {{value: 'clip'}})""")
        page.wait_for_function(f"{GRAPH_JS}._fullData[0].marker.colorbar.title.text === 'Clip'", timeout=SHORT_MS)
        frames = page.evaluate("() => window.__samples.length")
        page.wait_for_function(MORE_FRAMES_JS, arg=frames + 30, timeout=SHORT_MS)
        assert set(page.evaluate("() => window.__samples")) == {after}  # recoloured in place


def test_points_jump_when_the_user_prefers_reduced_motion(playwright_browser, fake_stack):
    fake, dashboard = fake_stack
    with watched_page(playwright_browser) as watched:
        page = watched.page
        page.emulate_media(reduced_motion="reduce")
        page.goto(dashboard.url, wait_until="domcontentloaded")
        wait_counts(page, [N, N, N])
        before, after, samples = move_and_sample(page, fake)
        assert after == pytest.approx(before + SHIFT, abs=1e-4)
        assert between(samples, before, after) == [], samples
