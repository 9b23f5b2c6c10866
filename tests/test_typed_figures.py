"""The figure's numbers travel as base64 typed arrays, and hover labels are built once per point."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from acestep_viz.dashboard import figures
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.hover import HoverTexts, hover_texts
from acestep_viz.dashboard.typed_arrays import JSON_WORDS, decoded, typed_array
from acestep_viz.dashboard.view import View
from acestep_viz.dashboard.view_callbacks import render_outputs
from plotly.io.json import to_json_plotly

from tests.test_figures import points, snapshot

SPACES = ("latent", "lora", "prompt")


def test_coordinates_and_colours_reach_the_browser_as_base64():
    fig = json.loads(to_json_plotly(figures.build_figure(snapshot(), View(colour_by={"lora": "loss"}))))
    for trace, space in zip(fig["data"][:3], SPACES):
        assert trace["x"]["dtype"] == trace["y"]["dtype"] == "f4"
        xs = np.frombuffer(base64.b64decode(trace["x"]["bdata"]), "<f4")
        assert xs.tolist() == pytest.approx(snapshot()["spaces"][space]["points"]["x"], rel=1e-6)
        assert isinstance(trace["text"], list) and isinstance(trace["customdata"], list)  # strings stay lists
    assert fig["data"][1]["marker"]["color"]["dtype"] == "f4"  # loss: continuous
    assert fig["data"][0]["marker"]["color"]["dtype"] == "f4"  # step
    codes = json.loads(to_json_plotly(figures.build_figure(snapshot(), View(colour_by={"lora": "layer"}))))
    assert codes["data"][1]["marker"]["color"]["dtype"] == "i4"  # category codes stay exact integers
    assert decoded(codes["data"][1]["marker"]["color"])[:4] == [0, 1, 2, 0]


def test_a_missing_coordinate_is_nan_and_decodes_as_none():
    spec = typed_array([1.5, None, -2.0])
    assert np.isnan(np.frombuffer(base64.b64decode(spec["bdata"]), "<f4")[1])
    assert decoded(spec) == [1.5, None, -2.0] and decoded([1, 2]) == [1, 2]


def test_float_columns_never_spell_a_word_that_makes_plotly_encode_twice():
    rng = np.random.default_rng(3)
    spelt = 0
    while spelt < 3:  # a map's worth of coordinates spells "NaN" about once in five
        values = rng.uniform(-10, 10, 10000).astype("<f4")
        if not any(word in base64.b64encode(values.tobytes()).decode() for word in JSON_WORDS):
            continue
        spelt += 1
        spec = typed_array(values.tolist())
        assert not any(word in spec["bdata"] for word in JSON_WORDS)
        moved = np.abs(np.asarray(decoded(spec)) - values) / np.abs(values)
        assert 0 < moved.max() <= 2.0 ** -15  # far below a pixel


def test_hover_labels_of_rows_seen_before_are_reused_and_new_rows_get_theirs():
    lora = figures.space_points({"spaces": {"lora": {"points": points(40, "lora")}}}, "lora")
    cache = HoverTexts()
    first = cache.texts("run-a", "lora", lora)
    assert first == hover_texts(lora)
    # the buffer dropped its 5 oldest rows and gained 3 new ones; a refit moved every point
    later = {name: column[5:] + column[:3] for name, column in lora.items()}
    later["step"] = later["step"][:-3] + [9, 9, 9]
    later["x"] = [x + 1 for x in later["x"]]
    again = cache.texts("run-a", "lora", later)
    assert again == hover_texts(later)
    assert all(a is b for a, b in zip(again[:35], first[5:]))  # the same strings, not rebuilt
    assert "Step: 9" in again[-1]


def test_hover_labels_of_unrelated_rows_are_built_afresh():
    cache = HoverTexts()
    cache.texts("run-a", "latent", figures.space_points({"spaces": {"latent": {"points": points(10, "latent")}}},
                                                        "latent"))
    other = figures.space_points({"spaces": {"latent": {"points": points(10, "latent", prompt="other")}}}, "latent")
    assert cache.texts("run-a", "latent", other) == hover_texts(other)


class CountingHover(HoverTexts):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def texts(self, run, space, points):
        self.calls += 1
        return super().texts(run, space, points)


def test_hover_labels_are_built_once_per_snapshot_whatever_the_view():
    cache = ReplyCache()
    cache.hover = CountingHover()
    snap = snapshot()
    cache.put(("snapshot", "run-a", 7), snap)
    seen = {"run": "run-a", "version": 7}
    for view in (View(), View(colour_by={"lora": "loss"}), View(selected=frozenset({"clip_001"}))):
        fig = render_outputs(None, cache, seen, None, None, view)[0]
        assert fig["data"][0]["text"] == hover_texts(figures.space_points(snap, "latent"))
    assert cache.hover.calls == 3  # once per space, for the first of the three views
