"""The dashboard in a real headless Chromium, against a real collector fed with synthetic frames.

Most tests share one collector + dashboard stack (module scope, dashboard polling every second);
each feeds its own run first and the dashboard follows the newest run, so no test depends on
another's data. The end-to-end test has a stack of its own because it stops its collector.
No test asserts how long anything took: rates are compared as counts over equal windows.
"""
from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pytest
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.figures import EMPTY_TITLE, TITLES
from acestep_viz.dashboard.layout import CLEAR_MESSAGE, PAUSE_LABEL, RESUME_LABEL
from acestep_viz.dashboard.view_callbacks import NO_SELECTION, PLAY_LABEL

from tests.browser_support import (
    EVIL,
    GRAPH_JS,
    POINTS_JS,
    SHORT_MS,
    WAIT_MS,
    PollCounter,
    RunFeeder,
    chromium,
    dashboard_page,
    emit_selection,
    figure_meta,
    hover_labels,
    hover_point,
    running_stack,
    shown,
    stat_texts,
    traces,
    wait_badge,
    wait_counts,
    wait_text,
    watched_page,
)
from tests.support import REPO, query, send_frames, synthetic_frames

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = REPO / "test-artifacts" / "dashboard.png"
DOCS_SCREENSHOT = REPO / "docs" / "dashboard.png"
UPDATE_DOCS = "ACESTEP_VIZ_UPDATE_DOCS_SCREENSHOT"  # =1: the screenshot test also refreshes docs/dashboard.png


@pytest.fixture(scope="module")
def playwright_browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("browser-stack")) as shared:
        yield shared


@pytest.fixture()
def new_run(request, stack):
    """A run of this test's own; the shared dashboard follows it because it is the newest."""
    def make(**kw) -> RunFeeder:
        return RunFeeder(stack.collector, f"run-{request.node.name}", **kw)
    return make


def test_dashboard_end_to_end(playwright_browser, tmp_path):
    with running_stack(tmp_path) as own:
        send_frames(own.collector.ingest, synthetic_frames(run="browser-run", n_clips=30, steps=3))
        requests: list[str] = []
        with watched_page(playwright_browser) as watched:
            page = watched.page
            page.on("request", lambda request: requests.append(request.url))
            page.goto(own.url, wait_until="domcontentloaded")

            # three panels fill with projected points (the collector may still be warming up PaCMAP)
            page.wait_for_function(POINTS_JS, arg=10, timeout=WAIT_MS)
            wait_counts(page, [30, 270, 30])
            wait_badge(page, "Live")
            shown_traces = traces(page)
            assert [(t["xaxis"], t["yaxis"]) for t in shown_traces] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
            assert [t["type"] for t in shown_traces] == ["scattergl"] * 3
            assert [t["meta"] for t in shown_traces] == ["latent", "lora", "prompt"]
            titles = page.evaluate(f"{GRAPH_JS}.layout.annotations.map(a => a.text)")
            assert titles[:3] == list(TITLES)
            rendered = page.inner_text(f"#{ids.GRAPH}")
            for title in TITLES:
                assert title in rendered
            assert stat_texts(page) == {"latent": "30 samples (projected)", "lora": "270 samples (projected)",
                                        "prompt": "30 samples (projected)"}
            assert figure_meta(page)["run"] == "browser-run"
            # not embedded: the header card is there, its badge copy in the controls row is not
            assert shown(page, f"#{ids.HEADER}") and not shown(page, f"#{ids.EMBED_STATUS}")

            # the collector goes away: the badge says so and the figure stays
            own.collector.stop()
            wait_badge(page, "Collector offline", 30_000)
            assert [t["n"] for t in traces(page)[:3]] == [30, 270, 30]

    # nothing left this machine: every request went to the dashboard on 127.0.0.1
    assert requests
    outside = [url for url in requests
               if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname != "127.0.0.1"]
    assert outside == [], outside
    assert any("/assets/bootstrap.min.css" in url for url in requests)
    assert any("/assets/acestep-viz.css" in url for url in requests)


def test_pause_stops_updates_until_resumed(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=1, new_clips=20)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        polls = PollCounter(page)
        assert stat_texts(page) == feeder.stat_texts()
        assert polls.over(page, 3000) >= 1  # sanity: the dashboard polls while live

        page.click(f"#{ids.PAUSE_BUTTON}")
        wait_badge(page, "Paused", SHORT_MS)
        wait_text(page, f"#{ids.PAUSE_BUTTON}", RESUME_LABEL)
        page.wait_for_timeout(1500)  # a poll already on its way when the button was pressed lands
        before = {"stats": stat_texts(page), "meta": figure_meta(page), "counts": [t["n"] for t in traces(page)]}

        # the run goes on: more clips and another step, projected by the collector
        feeder.step(1, new_clips=10)
        # several poll intervals (1 s each) pass: nothing is asked and nothing changes
        assert polls.over(page, 4000) == 0
        assert stat_texts(page) == before["stats"]
        assert figure_meta(page) == before["meta"]
        assert [t["n"] for t in traces(page)] == before["counts"] == [20, 60, 20]
        assert page.inner_text(f"#{ids.STATUS_BADGE}") == "Paused"

        page.click(f"#{ids.PAUSE_BUTTON}")
        wait_counts(page, feeder.trace_counts(), SHORT_MS)
        wait_badge(page, "Live", SHORT_MS)
        assert feeder.trace_counts() == [30, 150, 30]
        wait_text(page, f"#{ids.STAT_LORA}", "150 samples (projected)")
        assert stat_texts(page) == feeder.stat_texts()
        assert page.inner_text(f"#{ids.PAUSE_BUTTON}") == PAUSE_LABEL


def test_clear_all_data_after_confirming(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=2, new_clips=12)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        answers = ["dismiss", "accept"]

        def answer(dialog):
            watched.dialogs.append(dialog.message)
            getattr(dialog, answers.pop(0))()

        page.on("dialog", answer)

        # dismissed: nothing is cleared
        page.click(f"#{ids.CLEAR_BUTTON}")
        page.wait_for_timeout(2500)
        assert watched.dialogs == [CLEAR_MESSAGE]
        assert page.inner_text(f"#{ids.STATUS_BADGE}") == "Live"
        assert [t["n"] for t in traces(page)[:3]] == feeder.trace_counts()
        assert feeder.run in query(stack.collector.query, {"op": "stats"})["runs"]

        # accepted: the live view of every run empties, all three panels with it
        emit_selection(page, 0, [0])
        selected_js = f"document.getElementById('{ids.DETAILS}').innerText.toLowerCase().includes('1 clip selected')"
        page.wait_for_function(selected_js, timeout=SHORT_MS)
        page.click(f"#{ids.CLEAR_BUTTON}")
        wait_badge(page, "Cleared", SHORT_MS)
        assert len(watched.dialogs) == 2 and "stored frames are kept" in watched.dialogs[1]
        page.wait_for_function(f"{GRAPH_JS}._fullData.length === 3 && "
                               f"{GRAPH_JS}._fullData.every(t => t.x.length === 0)", timeout=SHORT_MS)
        assert stat_texts(page) == {space: "0 samples" for space in ("latent", "lora", "prompt")}
        assert query(stack.collector.query, {"op": "stats"})["runs"] == {}
        annotations = page.evaluate(f"{GRAPH_JS}.layout.annotations.map(a => a.text)")
        assert any(EMPTY_TITLE in text for text in annotations)
        assert page.inner_text(f"#{ids.SCRUBBER_LABEL}") == "Live"
        wait_text(page, f"#{ids.DETAILS}", NO_SELECTION)  # the cleared clips are not selected any more

        # later polls find nothing and keep saying so
        page.wait_for_timeout(3000)
        assert page.inner_text(f"#{ids.STATUS_BADGE}") == "Cleared"
        assert all(t["n"] == 0 for t in traces(page))


def test_update_interval_select_changes_the_poll_rate(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=1, new_clips=12)
    window_ms = 10_000
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        polls = PollCounter(page)
        assert page.input_value(f"#{ids.INTERVAL_SELECT}") == "1"
        every_second = polls.over(page, window_ms)

        with page.expect_response(lambda r: "_dash-update-component" in r.url
                                  and f"{ids.INTERVAL}.interval" in (r.request.post_data or "")) as answer:
            page.select_option(f"#{ids.INTERVAL_SELECT}", "5")
        assert answer.value.json()["response"][ids.INTERVAL] == {"interval": 5000}
        every_five = polls.over(page, window_ms)

        # about 10 against about 2: the same window, five times fewer requests
        assert every_five >= 1, (every_second, every_five)
        assert every_second >= 3 * every_five, (every_second, every_five)


def test_scrubber_shows_every_panel_at_a_past_step(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=3, new_clips=12)
    slider = f"#{ids.SCRUBBER} [role=slider]"
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        # one position per step with a map, then "Live" at the end, where the slider starts
        page.wait_for_function("(s) => Number(document.querySelector(s).getAttribute('aria-valuemax')) >= 3",
                               arg=slider, timeout=SHORT_MS)
        assert page.get_attribute(slider, "aria-valuenow") == "3"
        assert page.locator(f"#{ids.SCRUBBER} .dash-slider-mark").all_inner_texts() == ["0", "1", "2", "Live"]
        wait_text(page, f"#{ids.SCRUBBER_LABEL}", "Live · 3 steps in the history")
        live = traces(page)[:3]
        assert [t["n"] for t in live] == [36, 216, 36]

        page.focus(slider)
        page.keyboard.press("Home")
        wait_counts(page, [12, 36, 12], SHORT_MS)  # step 0: the first 12 clips, one LoRA step
        wait_text(page, f"#{ids.SCRUBBER_LABEL}", "Step 0 · frame 1 of 3")
        past = traces(page)[:3]
        for before, now in zip(live, past):  # fewer points, of earlier clips only
            assert now["n"] < before["n"] and set(now["customdata"]) < set(before["customdata"]), now["meta"]
        assert {t["meta"] for t in past} == {"latent", "lora", "prompt"}
        assert set(past[0]["customdata"]) == set(feeder.clips[:12])

        # training goes on: the history grows, the scrubbed view stays at step 0
        feeder.step(3, new_clips=12)
        page.wait_for_function("(s) => Number(document.querySelector(s).getAttribute('aria-valuemax')) >= 4",
                               arg=slider, timeout=SHORT_MS)
        wait_text(page, f"#{ids.SCRUBBER_LABEL}", "Step 0 · frame 1 of 4")
        assert [t["n"] for t in traces(page)[:3]] == [12, 36, 12]

        # Play walks through the later steps and stops at Live
        page.evaluate("""(slider) => {
            const thumb = document.querySelector(slider);
            window.__positions = [];
            new MutationObserver(() => window.__positions.push(thumb.getAttribute('aria-valuenow')))
                .observe(thumb, {attributes: true, attributeFilter: ['aria-valuenow']});
        }""", slider)
        page.click(f"#{ids.PLAY_BUTTON}")
        wait_text(page, f"#{ids.SCRUBBER_LABEL}", "Live · 4 steps in the history", SHORT_MS)
        wait_counts(page, feeder.trace_counts(), SHORT_MS)
        wait_text(page, f"#{ids.PLAY_BUTTON}", PLAY_LABEL)
        positions = page.evaluate("window.__positions")
        assert [p for i, p in enumerate(positions) if i == 0 or p != positions[i - 1]] == ["1", "2", "3", "4"], \
            positions


def _indices(trace: dict, keys: set[str]) -> list[int]:
    return [i for i, key in enumerate(trace["customdata"]) if key in keys]


def test_selected_clips_light_up_in_every_panel(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=2, new_clips=15)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        latent = traces(page)[0]
        first_step = [i for i, key in enumerate(latent["customdata"]) if key in feeder.clips[:15]]
        keys = set(emit_selection(page, 0, first_step[:2]))  # a lasso around two points of the latent panel
        assert len(keys) == 2
        page.wait_for_function(f"{GRAPH_JS}.data[1].selectedpoints !== undefined", timeout=SHORT_MS)

        shown_traces = traces(page)
        for trace in shown_traces[:3]:
            assert sorted(trace["selectedpoints"]) == _indices(trace, keys), trace["meta"]
        assert len(shown_traces[1]["selectedpoints"]) == 2 * 3 * 2  # 2 clips of step 0 x 3 layers x 2 steps
        # one trajectory per (clip, layer) through the LoRA panel
        assert sum(1 for t in shown_traces if t["meta"] == "trajectory") == 2 * 3

        details = page.inner_text(f"#{ids.DETAILS}")
        assert "2 clips selected" in details.lower()
        for key in keys:
            assert key in details and feeder.prompts[key] in details

        page.click(f"#{ids.CLEAR_SELECTION_BUTTON}")
        page.wait_for_function(f"{GRAPH_JS}.data.every(t => t.selectedpoints === undefined)", timeout=SHORT_MS)
        assert len(traces(page)) == 3
        wait_text(page, f"#{ids.DETAILS}", NO_SELECTION)


def test_embed_mode_hides_only_the_header(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=1, new_clips=12)
    with dashboard_page(playwright_browser, stack, feeder, query="?embed=1") as watched:
        page = watched.page
        wait_badge(page, "Live", SHORT_MS, badge=ids.EMBED_BADGE)
        assert not shown(page, f"#{ids.HEADER}")
        assert shown(page, f"#{ids.EMBED_STATUS}") and shown(page, f"#{ids.EMBED_BADGE}")
        for control in (ids.REFRESH_BUTTON, ids.PAUSE_BUTTON, ids.CLEAR_BUTTON, ids.INTERVAL_SELECT,
                        ids.SCRUBBER, ids.STAT_LATENT, ids.DETAILS):
            assert shown(page, f"#{control}"), control
        assert shown(page, f"#{ids.GRAPH} .js-plotly-plot")
        assert [t["n"] for t in traces(page)[:3]] == feeder.trace_counts()

        # the copy follows the badge
        page.click(f"#{ids.PAUSE_BUTTON}")
        wait_badge(page, "Paused", SHORT_MS, badge=ids.EMBED_BADGE)

    # embed=0 is the normal page (as is no parameter: see test_dashboard_end_to_end)
    with dashboard_page(playwright_browser, stack, feeder, query="?embed=0") as watched:
        assert shown(watched.page, f"#{ids.HEADER}")
        assert not shown(watched.page, f"#{ids.EMBED_STATUS}")


def test_user_text_stays_inert(playwright_browser, stack, new_run):
    # short prompts so the whole of EVIL fits in the hover label (prompts are cut at 60 characters)
    feeder = new_run(prompt_suffix=EVIL, short_prompts=True).feed(steps=1, new_clips=15)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        latent = traces(page)[0]
        assert all("&lt;script&gt;" in text and "<script>" not in text for text in latent["text"])

        # hover a point with the mouse: the label shows the prompt as text
        point = hover_point(page, 0)
        page.wait_for_function(f"document.querySelectorAll('#{ids.GRAPH} .hoverlayer .hovertext').length > 0",
                               timeout=SHORT_MS)
        labels = hover_labels(page)
        assert len(labels) == 1
        assert f"Prompt: {feeder.prompts[point['key']]}" in labels[0]["text"]
        assert labels[0]["bold"] == [point["key"]]  # only the clip key is bold, not the prompt's <b>
        assert labels[0]["elements"] == 0

        # click it: the details card lists it, literally
        page.mouse.click(point["x"], point["y"])
        wait_text(page, f"#{ids.DETAILS} td", point["key"])
        cells = page.locator(f"#{ids.DETAILS} td").all_inner_texts()
        assert cells[:2] == [point["key"], feeder.prompts[point["key"]]]
        assert "<script>window.__pwned = 1</script> & <b>bold</b>" in cells[1]
        assert page.evaluate(f"document.querySelectorAll('#{ids.DETAILS} script, #{ids.DETAILS} b').length") == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"


def test_colour_by_clip(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=2, new_clips=12)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        assert [t["colour_title"] for t in traces(page)[:3]] == ["Step", "Layer", "Step"]
        page.select_option(f"#{ids.COLOUR_SELECTS['latent']}", "clip")
        page.wait_for_function(f"{GRAPH_JS}.data[0].marker.colorbar.title.text === 'Clip'", timeout=SHORT_MS)
        latent, lora, prompt = traces(page)[:3]
        assert (lora["colour_title"], prompt["colour_title"]) == ("Layer", "Step")
        # one colour code per clip, in the order of the clip keys
        assert sorted(set(latent["colours"])) == list(range(len(feeder.clips)))
        assert page.input_value(f"#{ids.COLOUR_SELECTS['latent']}") == "clip"


def test_tag_picker_colours_points_with_the_picked_tag_apart(playwright_browser, stack, new_run):
    feeder = new_run().feed(steps=2, new_clips=12)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        page.select_option(f"#{ids.COLOUR_SELECTS['prompt']}", "tag")
        page.wait_for_function(f"{GRAPH_JS}.data[2].marker.colorbar.title.text.startsWith('Tag: ')",
                               timeout=SHORT_MS)
        page.click(f"#{ids.TAG_SELECT}")
        page.keyboard.type("upright bass")
        page.keyboard.press("Enter")
        page.wait_for_function(f"{GRAPH_JS}.data[2].marker.colorbar.title.text === 'Tag: upright bass'",
                               timeout=SHORT_MS)
        prompt = traces(page)[2]
        expected = [1 if "upright bass" in feeder.prompts[clip].split(", ") else 0 for clip in prompt["customdata"]]
        assert prompt["colours"] == expected and 0 < sum(expected) < len(expected)


HEALTH_JS = f"document.querySelector('#{ids.HEALTH_GRAPH} .js-plotly-plot')"


def health_lines(page) -> list[dict]:
    return page.evaluate(f"{HEALTH_JS}.data.map(t => ({{name: t.name, axis: t.xaxis, n: t.x.length}}))")


def test_health_charts_draw_rank_cka_and_tag_silhouette_against_step(playwright_browser, stack, new_run):
    feeder = new_run(seed=5).feed(steps=3, new_clips=10)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        page.wait_for_function(f"() => {{ const gd = {HEALTH_JS}; return gd && gd.data && "
                               "['x', 'x2', 'x3'].every(a => gd.data.some(t => t.xaxis === a && t.x.length >= 3)); }",
                               timeout=SHORT_MS)
        lines = health_lines(page)
        assert {line["name"] for line in lines if line["axis"] == "x"} == {"latent", "LoRA", "prompt"}
        assert [line["name"] for line in lines if line["axis"] == "x2"] == ["CKA"]
        drawn = page.evaluate(f"{HEALTH_JS}.querySelectorAll('.scatterlayer .trace path.js-line').length")
        assert drawn >= len(lines)  # lines on the page, not only in the figure's data
        page.click(f"#{ids.TAG_SELECT}")
        page.keyboard.type("ambient")  # among the 8 most common tags, which the collector scores
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => {HEALTH_JS}.data.some(t => t.name === 'ambient · prompt')", timeout=SHORT_MS)
        tag_lines = [line for line in health_lines(page) if line["axis"] == "x3"]
        assert {line["name"] for line in tag_lines} == {f"ambient · {s}" for s in ("latent", "LoRA", "prompt")}

def test_screenshot_with_data_and_a_selection(playwright_browser, stack, new_run):
    """The one screenshot of the whole page: test-artifacts/dashboard.png (and docs/ on request)."""
    feeder = new_run(seed=3).feed(steps=5, new_clips=12)
    with dashboard_page(playwright_browser, stack, feeder) as watched:
        page = watched.page
        latent = traces(page)[0]
        metal = [i for i, key in enumerate(latent["customdata"]) if key.startswith("metal_")][:2]
        emit_selection(page, 0, metal)
        page.wait_for_function(f"{GRAPH_JS}.data.some(t => t.meta === 'trajectory')", timeout=SHORT_MS)
        page.wait_for_function(f"document.querySelectorAll('#{ids.DETAILS} tbody tr').length === 2",
                               timeout=SHORT_MS)
        page.mouse.move(0, 0)
        page.wait_for_timeout(500)  # the quality chart and colour bars finish drawing
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    if os.environ.get(UPDATE_DOCS) == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOT, DOCS_SCREENSHOT)
