"""The adapter chart's figure: a band and a median per run, the largest layers named, a compared run dashed."""
from acestep_viz.dashboard.adapter_callbacks import thresholds_from
from acestep_viz.dashboard.adapter_chart import adapter_figure, summary, top_layers
from acestep_viz.dashboard.alerts import Thresholds

LAYERS = {
    "blocks.0.q": {"step": [0, 50, 100], "value": [0.0, 0.01, 0.02]},
    "blocks.0.k": {"step": [0, 50, 100], "value": [0.0, 0.03, 0.05]},
    "blocks.1.q": {"step": [0, 50, 100], "value": [0.0, 0.02, 0.04]},
    "blocks.1.k": {"step": [0, 50], "value": [0.0, 0.5]},  # not measured at 100 (capped or added late)
}


def test_summary_is_the_median_and_range_over_layers_measured_at_each_step():
    assert summary(LAYERS) == {"step": [0, 50, 100], "median": [0.0, 0.025, 0.04],
                               "min": [0.0, 0.01, 0.02], "max": [0.0, 0.5, 0.05]}


def test_top_layers_are_the_largest_at_their_latest_step():
    assert top_layers(LAYERS, 2) == ["blocks.1.k", "blocks.0.k"]


def test_the_figure_names_the_largest_layers_and_draws_a_compared_run_dashed():
    figure = adapter_figure({"run-a": LAYERS, "run-b": {"x": {"step": [0, 50], "value": [0.0, 0.1]}}}, "run-b")
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["run-a min", "run-a range", "run-a: median of layers", "blocks.1.k", "blocks.0.k",
                     "blocks.1.q", "run-b min", "run-b range", "run-b: median of layers"]
    median_a, median_b = figure["data"][2], figure["data"][-1]
    assert median_a["y"] == [0.0, 0.025, 0.04] and median_a["line"]["dash"] == "solid"
    assert median_b["line"]["dash"] == "dash"
    assert figure["data"][3]["hovertemplate"].startswith("blocks.1.k: ")


def test_an_empty_figure_says_when_the_chart_appears():
    figure = adapter_figure({"run-a": {}})
    assert figure["data"] == [] and "adapter_every" in figure["layout"]["annotations"][0]["text"]


def test_thresholds_come_from_the_alert_settings():
    limits = thresholds_from({"alert_adapter_min": 0.001, "alert_window_steps": 50, "collector": "tcp://x"})
    assert limits == Thresholds(adapter_min=0.001, window_steps=50)


def test_a_collector_that_does_not_answer_leaves_the_chart_as_it_is():
    import pytest
    from acestep_viz.dashboard.adapter_callbacks import adapter_outputs
    from acestep_viz.dashboard.client import CollectorClient
    from dash.exceptions import PreventUpdate

    from tests.support import free_port

    nobody = CollectorClient(f"tcp://127.0.0.1:{free_port()}", timeout_ms=200)
    with pytest.raises(PreventUpdate):
        adapter_outputs(nobody, Thresholds(), {"run": "run-a"}, None, None, None)
