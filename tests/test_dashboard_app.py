"""The Dash app as a WSGI app (Flask's test client): URL prefix, local assets, every control present."""
from __future__ import annotations

import json

import pytest
from acestep_viz.dashboard import ids, options
from acestep_viz.dashboard.app import create_app

from acestep_viz.cli import build_parser
from acestep_viz.settings import resolve


def page_and_layout(http, prefix: str) -> tuple[str, str]:
    page = http.get(prefix)
    layout = http.get(f"{prefix}_dash-layout")
    assert page.status_code == 200 and layout.status_code == 200
    return page.get_data(as_text=True), layout.get_data(as_text=True)


@pytest.mark.parametrize("given", ["/viz/", "viz", "/viz"])
def test_url_prefix_serves_the_page_assets_and_callbacks_under_the_path(given):
    http = create_app("tcp://127.0.0.1:5999", interval_s=5, url_prefix=given).server.test_client()
    page, _layout = page_and_layout(http, "/viz/")
    assert "/viz/assets/acestep-viz.css" in page and "/viz/_dash-component-suites/" in page
    assert http.get("/viz/assets/bootstrap.min.css").status_code == 200
    assert '"requests_pathname_prefix":"\\u002fviz\\u002f"' in page  # the browser calls back under it
    assert http.get("/").status_code == 404  # nothing outside the prefix


def test_url_prefix_is_a_setting_of_dashboard_and_up(monkeypatch):
    args = build_parser().parse_args(["dashboard", "--url-prefix", "viz"])
    assert resolve(options.DASHBOARD_SETTINGS, vars(args))["url_prefix"] == "/viz/"
    monkeypatch.setenv("ACESTEP_VIZ_URL_PREFIX", "/tools/viz")
    args = build_parser().parse_args(["up"])
    assert resolve([options.URL_PREFIX], vars(args))["url_prefix"] == "/tools/viz/"


def test_every_control_is_on_the_page():
    http = create_app("tcp://127.0.0.1:5999", interval_s=5).server.test_client()
    _page, layout = page_and_layout(http, "/")
    present = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("props"), dict) and node["props"].get("id"):
                present.add(node["props"]["id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(layout))
    wanted = {ids.RUN_SELECT, ids.LAYER_FILTER, ids.TRAJECTORY_TOGGLE, ids.CLEAR_SELECTION_BUTTON, ids.SCRUBBER,
              ids.PLAY_BUTTON, ids.DETAILS, ids.QUALITY_GRAPH, ids.STALENESS, ids.EXPORT_DOWNLOAD,
              *ids.COLOUR_SELECTS.values(), *ids.EXPORT_BUTTONS.values(), *ids.STAT_IDS.values(),
              ids.REFRESH_BUTTON, ids.PAUSE_BUTTON, ids.CLEAR_BUTTON, ids.INTERVAL_SELECT, ids.GUIDE}
    assert wanted <= present, wanted - present
