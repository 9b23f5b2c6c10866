"""Pure tests of what the user controls: colour-by, layer filter, linked selection, trajectories,
the step scrubber, the quality charts and the exports. Snapshot dicts in, figures and rows out."""
from __future__ import annotations

import base64
import io
import zipfile

import plotly.graph_objects as go
import pytest
from acestep_viz.dashboard import figures
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.client import CollectorUnavailable
from acestep_viz.dashboard.colouring import tick_names
from acestep_viz.dashboard.export_callbacks import export_outputs
from acestep_viz.dashboard.quality_chart import quality_figure
from acestep_viz.dashboard.scrubber import history_store, is_live, marks, next_position, position_label, versions_at
from acestep_viz.dashboard.selection import details, selected_ids, trajectories
from acestep_viz.dashboard.tags import chosen_tag, clip_tags, has_tag, prompt_tags, tag_counts
from acestep_viz.dashboard.typed_arrays import decoded
from acestep_viz.dashboard.view import View, view_from_controls
from acestep_viz.dashboard.view_callbacks import render_outputs, scrubber_outputs
from dash import no_update
from dash.exceptions import PreventUpdate

from tests.test_figures import snapshot

LORA = 1


def figure(snap, **view) -> go.Figure:
    return go.Figure(figures.build_figure(snap, View(**view)))  # validated by plotly


# -- colour-by ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("choice, title", [("step", "Step"), ("loss", "Loss"), ("timestep", "Timestep"),
                                           ("layer", "Layer"), ("tag", "Prompt tag"), ("clip", "Clip")])
def test_every_colour_choice_colours_the_lora_panel_and_names_its_bar(choice, title):
    fig = figure(snapshot(), colour_by={"latent": "step", "lora": choice, "prompt": "step"})
    assert fig.data[LORA].marker.colorbar.title.text == ("Tag: 120 bpm" if choice == "tag" else title)
    assert len(decoded(fig.data[LORA].marker.color)) == len(decoded(fig.data[LORA].x))


def test_loss_colours_follow_the_loss_values():
    snap = snapshot()
    fig = figure(snap, colour_by={"latent": "step", "lora": "loss", "prompt": "step"})
    assert decoded(fig.data[LORA].marker.color) == pytest.approx(snap["spaces"]["lora"]["points"]["loss"], rel=1e-6)


def test_a_field_a_space_does_not_have_falls_back_to_step_and_says_so():
    fig = figure(snapshot(), colour_by={"latent": "loss", "lora": "layer", "prompt": "step"})
    assert fig.data[0].marker.colorbar.title.text == "Step (no loss here)"


def test_categories_get_readable_inert_tick_labels():
    snap = snapshot(prompt="<b>rock</b>, loud")
    fig = figure(snap, colour_by={"latent": "tag", "lora": "layer", "prompt": "step"}, tag="<b>rock</b>")
    assert list(fig.data[0].marker.colorbar.ticktext) == ["without &lt;b&gt;rock&lt;/b&gt;",
                                                         "with &lt;b&gt;rock&lt;/b&gt;"]
    paths = ["transformers.transformer_blocks.0.attn.to_out.0", "transformers.transformer_blocks.12.attn.to_out.0"]
    assert tick_names(paths) == ["0.attn.to_out.0", "12.attn.to_out.0"]


def test_prompt_tags_are_the_comma_separated_parts_in_any_order():
    assert prompt_tags("Lo-Fi  Hip Hop, chill; 80 bpm") == ["lo-fi hip hop", "chill", "80 bpm"]
    assert prompt_tags("") == [] and prompt_tags(None) == []
    prompts = ["rock, loud", "loud, rock", "jazz, calm", "a rock song with a loud guitar " * 3]
    assert tag_counts(prompts) == [("loud", 2), ("rock", 2), ("calm", 1), ("jazz", 1)]  # no sentence-long tags
    assert chosen_tag(tag_counts(prompts), None) == "loud" and chosen_tag(tag_counts(prompts), "Jazz") == "jazz"
    assert chosen_tag([], None) is None


def test_a_chosen_tag_splits_prompt_points_by_text_and_clip_points_by_the_clips_texts():
    spaces = {"prompt": {"id": ["a", "a", "b", "c"], "prompt": ["rock, loud", "a rock song", "jazz", None]},
              "latent": {"id": ["a", "b", "c"], "prompt": ["a rock song", "jazz", None]}}
    by_clip = clip_tags(spaces)
    assert has_tag(spaces["prompt"], "rock", None) == [True, False, False, None]  # each text on its own
    assert has_tag(spaces["latent"], "rock", by_clip) == [True, False, None]  # clip a has a text with "rock"


def test_colour_by_tag_in_the_figure_uses_the_picked_tag():
    snap = snapshot()
    prompt_points = snap["spaces"]["prompt"]["points"]
    prompt_points["prompt"] = ["metal, loud" if i % 3 == 0 else "folk, calm" for i in range(30)]
    latent_points = snap["spaces"]["latent"]["points"]
    latent_points["prompt"] = ["folk, calm"] * 30  # the clips' first texts; clip 0, 3, ... also had "metal"
    tagged = {"latent": "tag", "lora": "layer", "prompt": "tag"}
    fig = figure(snap, colour_by=tagged, tag="metal")
    assert decoded(fig.data[2].marker.color) == [1 if i % 3 == 0 else 0 for i in range(30)]
    assert decoded(fig.data[0].marker.color) == [1 if i % 3 == 0 else 0 for i in range(30)]
    assert fig.data[2].marker.colorbar.title.text == "Tag: metal"
    common = figure(snap, colour_by=tagged)  # nothing picked: the most common tag
    assert common.data[2].marker.colorbar.title.text.startswith("Tag: ")


def test_unknown_control_values_fall_back_to_the_defaults():
    view = view_from_controls(("bogus", None, "clip"), None, None, [])
    assert view.colour_for("latent") == "step" and view.colour_for("lora") == "layer"
    assert view.colour_for("prompt") == "clip" and not view.trajectories and not view.selected


# -- LoRA layer filter ---------------------------------------------------------------------------------
def test_the_layer_filter_keeps_only_the_chosen_layers():
    snap = snapshot()
    assert figures.layer_names(snap) == ["block0.to_out.0", "block1.to_out.0", "block2.to_out.0"]
    fig = figure(snap, layers=frozenset({"block1.to_out.0"}))
    assert len(decoded(fig.data[LORA].x)) == 30
    assert all("block1.to_out.0" in text for text in fig.data[LORA].text)
    assert len(decoded(fig.data[0].x)) == 30  # other panels, no filter
    assert len(decoded(figure(snap).data[LORA].x)) == 90


# -- linked selection ------------------------------------------------------------------------------------
def test_lasso_and_click_give_the_clip_keys():
    lasso = {"points": [{"curveNumber": 0, "customdata": "clip_003"}, {"curveNumber": 0, "customdata": "clip_001"},
                        {"curveNumber": 3}]}
    assert selected_ids(lasso) == ["clip_001", "clip_003"]
    assert selected_ids(None, {"points": [{"customdata": "clip_007"}]}) == ["clip_007"]
    assert selected_ids(None, None) == []


def test_a_selected_clip_is_highlighted_in_all_three_panels():
    snap = snapshot()
    fig = figure(snap, selected=frozenset({"clip_002"}))
    for trace, space in zip(fig.data[:3], figures.SPACES):
        ids = snap["spaces"][space]["points"]["id"]
        assert list(trace.selectedpoints) == [i for i, key in enumerate(ids) if key == "clip_002"]
        assert trace.unselected.marker.opacity < 0.5
    assert figure(snap).data[0].selectedpoints is None  # nothing selected: nothing fades


def test_trajectories_join_a_clips_lora_points_in_step_order():
    points = {"id": ["a", "a", "a", "b", "a"], "layer": ["L1", "L1", "L1", "L1", "L2"],
              "step": [3, 1, 2, 1, 1], "x": [3.0, 1.0, 2.0, 9.0, 5.0], "y": [0.0, 0.0, 0.0, 0.0, 0.0]}
    lines = trajectories(points, frozenset({"a"}), "x2", "y2")
    assert len(lines) == 1  # (a, L1) has three steps; (a, L2) a single point: no line
    assert lines[0]["x"] == [1.0, 2.0, 3.0] and lines[0]["xaxis"] == "x2"


def test_the_figure_draws_trajectories_only_when_asked():
    snap = snapshot()
    snap["spaces"]["lora"]["points"]["id"] = [f"clip_{i % 30:03d}" for i in range(90)]  # 3 rows per clip
    with_lines = figure(snap, selected=frozenset({"clip_000"}))
    without = figure(snap, selected=frozenset({"clip_000"}), trajectories=False)
    assert len(without.data) == 3
    assert len(with_lines.data) > 3 and all(t.meta == "trajectory" for t in with_lines.data[3:])


def test_details_list_each_clip_with_prompt_steps_and_loss():
    snap = snapshot(prompt="<script>x()</script> jazz")
    spaces = {s: figures.space_points(snap, s) for s in figures.SPACES}
    [row] = details(spaces, ["clip_001"])
    assert row["key"] == "clip_001" and row["prompt"] == "<script>x()</script> jazz"  # Dash shows it as text
    assert row["steps"] == "1" and row["loss"].startswith("1.1235") and row["layers"] == 1
    assert row["spaces"] == "latent, lora, prompt"


def test_details_list_every_prompt_text_of_a_clip():
    spaces = {"prompt": {"id": ["a", "a", "b"], "prompt": ["rock, loud", "loud,  rock", "jazz"],
                         "step": [0, 4, 1], "loss": [None] * 3, "layer": [None] * 3},
              "latent": {"id": ["a"], "prompt": ["rock, loud"], "step": [0], "loss": [None], "layer": [None]}}
    [row] = details(spaces, ["a"])
    assert row["prompt"] == "2 texts: rock, loud | loud, rock"


# -- the step scrubber ---------------------------------------------------------------------------------
SUMMARIES = {"latent": [{"version": 1, "step": 0}, {"version": 4, "step": 10}],
             "lora": [{"version": 2, "step": 0, "lora_drift": 0.0}, {"version": 5, "step": 10, "lora_drift": 0.2},
                      {"version": 7, "step": 20, "lora_drift": 0.3}],
             "prompt": [{"version": 3, "step": 0, "neighbour_overlap": 0.8}]}


def test_each_panel_shows_its_newest_frame_at_or_before_the_step():
    store = history_store("run-a", SUMMARIES)
    assert store["steps"] == [0, 10, 20]
    assert versions_at(store, 0) == {"latent": 1, "lora": 2, "prompt": 3}
    assert versions_at(store, 2) == {"latent": 4, "lora": 7, "prompt": 3}
    assert is_live(store, 3) and not is_live(store, 2) and is_live(store, None)
    assert marks(store) == {0: "0", 1: "10", 2: "20", 3: "Live"}
    assert position_label(store, 1).startswith("Step 10")


def test_a_scrubber_on_live_stays_live_and_one_in_the_past_keeps_its_step():
    store = history_store("run-a", SUMMARIES)
    assert scrubber_outputs(store, None)[2] == 3  # Live follows to the new end
    assert scrubber_outputs(store, 10)[2] == 1  # step 10 stays step 10
    older_dropped = history_store("run-a", {"lora": [{"version": 5, "step": 10}, {"version": 7, "step": 20},
                                                     {"version": 9, "step": 30}]})
    assert scrubber_outputs(older_dropped, 10)[2] == 0  # frames aged out before it: still step 10
    assert scrubber_outputs(older_dropped, 0)[2] == 0  # its step aged out: the oldest kept
    assert next_position(store, 3) == 0 and next_position(store, 1) == 2


class StubClient:
    """Answers like CollectorClient from dicts, counting requests."""

    def __init__(self, snap=None, frames=None, fail=False):
        self.snap, self.frames, self.fail, self.requests = snap, frames or {}, fail, []

    def snapshot(self, run, since):
        self.requests.append(("snapshot", run))
        if self.fail:
            raise CollectorUnavailable("down")
        return self.snap

    def history(self, run, space, version=None):
        self.requests.append(("history", space, version))
        return {"frame": {"points": self.frames[(space, version)]}}


def test_render_draws_the_live_map_from_the_cache_without_asking_again():
    snap = snapshot()
    cache, client = ReplyCache(), StubClient(fail=True)
    cache.put(("snapshot", "run-a", 7), snap)
    fig, layers, _card, tags = render_outputs(client, cache, {"run": "run-a", "version": 7}, None, None, View())
    assert [len(decoded(t["x"])) for t in fig["data"][:3]] == [30, 90, 30] and client.requests == []
    assert [o["value"] for o in layers] == figures.layer_names(snap)
    assert [o["value"] for o in tags] == ["120 bpm", "jazz song"]


def test_render_of_a_past_step_uses_one_history_frame_per_space():
    store = history_store("run-a", SUMMARIES)
    pts = {space: snapshot()["spaces"][space]["points"] for space in figures.SPACES}
    frames = {("latent", 1): pts["latent"], ("lora", 2): pts["lora"], ("prompt", 3): pts["prompt"]}
    client = StubClient(frames=frames)
    fig, _layers, _card, _tags = render_outputs(client, ReplyCache(), {"run": "run-a", "version": 9}, store, 0,
                                                View())
    assert sorted(r for r in client.requests) == [("history", "latent", 1), ("history", "lora", 2),
                                                  ("history", "prompt", 3)]
    assert [len(decoded(t["x"])) for t in fig["data"][:3]] == [30, 90, 30]


def test_the_figure_says_whether_it_is_the_live_map_so_that_only_live_updates_move_points():
    snap = snapshot()
    cache = ReplyCache()
    cache.put(("snapshot", "run-a", 7), snap)
    pts = {space: snap["spaces"][space]["points"] for space in figures.SPACES}
    client = StubClient(frames={("latent", 1): pts["latent"], ("lora", 2): pts["lora"], ("prompt", 3): pts["prompt"]})
    seen = {"run": "run-a", "version": 7}
    live = render_outputs(client, cache, seen, None, None, View())[0]["layout"]["meta"]
    past = render_outputs(client, cache, seen, history_store("run-a", SUMMARIES), 0, View())[0]["layout"]["meta"]
    assert live == {"run": "run-a", "version": 7, "live": True}
    assert past["live"] is False  # the scrubber shows a past step


def test_render_leaves_the_figure_alone_when_the_collector_is_down():
    with pytest.raises(PreventUpdate):
        render_outputs(StubClient(fail=True), ReplyCache(), {"run": "r", "version": 1}, None, None, View())


# -- quality charts and exports -----------------------------------------------------------------------
def test_quality_chart_plots_overlap_per_space_and_lora_drift():
    fig = go.Figure(quality_figure(history_store("run-a", SUMMARIES)))
    names = [t.name for t in fig.data]
    assert names == ["prompt", "LoRA drift"]
    assert list(fig.data[1].y) == [0.0, 0.2, 0.3] and fig.data[1].xaxis == "x2"
    assert quality_figure(None)["layout"]["annotations"]  # empty state explains itself


def test_html_export_is_self_contained():
    fig = figures.build_figure(snapshot())
    download, message = export_outputs(StubClient(), "html", "run-a", fig)
    page = download["content"] if not download.get("base64") else base64.b64decode(download["content"]).decode()
    assert download["filename"] == "run-a.html" and "run-a.html" in message
    assert 'src="http' not in page  # plotly.js is inlined, nothing is fetched
    assert "Plotly" in page and "clip_001" in page


def test_html_export_before_any_data_says_so():
    download, message = export_outputs(StubClient(), "html", None, figures.empty_figure())
    assert download is no_update and "Nothing to export" in message


def test_collector_exports_are_downloaded_when_the_files_are_here(tmp_path):
    files = []
    for name in ("tensors.tsv", "metadata.tsv"):
        (tmp_path / name).write_text(name)
        files.append(str(tmp_path / name))

    class Exporter(StubClient):
        def export(self, run, fmt):
            return {"ok": True, "run": "run-a", "path": str(tmp_path), "files": files}

    download, message = export_outputs(Exporter(), "tensorboard", None, None)
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(download["content"])))
    assert sorted(archive.namelist()) == ["metadata.tsv", "tensors.tsv"] and str(tmp_path) in message

    class Remote(StubClient):
        def export(self, run, fmt):
            return {"ok": True, "run": "run-a", "path": "/elsewhere", "files": ["/elsewhere/run-a.npz"]}

    download, message = export_outputs(Remote(), "npz", None, None)
    assert download is no_update and "/elsewhere" in message and "collector's machine" in message
