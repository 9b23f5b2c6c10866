"""Pure tests of dashboard.figures and dashboard.status: snapshot dicts in, figures out."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest
from acestep_viz.dashboard import figures, status
from acestep_viz.dashboard.colouring import category_codes
from acestep_viz.dashboard.figures import EMPTY_DETAIL, EMPTY_TITLE, INSUFFICIENT, TITLES
from acestep_viz.dashboard.selection import selected_ids
from acestep_viz.dashboard.typed_arrays import decoded
from acestep_viz.dashboard.view import View

SPACES = ("latent", "lora", "prompt")


def points(n: int, space: str, prompt: str = "jazz song, 120 bpm", seed: int = 0) -> dict:
    rng = random.Random(seed)
    return {
        "x": [rng.uniform(-5, 5) for _ in range(n)],
        "y": [rng.uniform(-5, 5) for _ in range(n)],
        "id": [f"clip_{i:03d}" for i in range(n)],
        "step": [i % 4 for i in range(n)],
        "loss": [0.123456 + i for i in range(n)] if space == "lora" else None,
        "timestep": [500.0] * n if space == "lora" else None,
        "layer": [f"block{i % 3}.to_out.0" for i in range(n)] if space == "lora" else None,
        "prompt": [prompt] * n,
    }


def snapshot(sizes=(30, 90, 30), prompt: str = "jazz song, 120 bpm", buffered=None, **extra) -> dict:
    buffered = buffered or sizes
    spaces = {
        space: {"buffered": b, "projected": n, "projected_at": 1.0 if n else None, "last_step": 3,
                "points": points(n, space, prompt)}
        for space, n, b in zip(SPACES, sizes, buffered)
    }
    reply = {"ok": True, "changed": True, "version": 7, "run": "run-a", "warming_up": False, "paused": False,
             "counts": {s: {"buffered": v["buffered"], "projected": v["projected"]} for s, v in spaces.items()},
             "spaces": spaces}
    reply.update(extra)
    return reply


def build_figure(snap, view: View | None = None) -> go.Figure:
    """The dashboard's figure dict, validated by plotly.graph_objects (raises if malformed)."""
    figure = figures.build_figure(snap, view)
    assert set(figure) == {"data", "layout"}
    return go.Figure(figure)


def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_three_subplots_with_the_exact_titles():
    fig = build_figure(snapshot())
    assert annotation_texts(fig)[:3] == list(TITLES)
    assert TITLES == ("Latent Space (Audio)", "LoRA Layer Outputs", "Prompt Embeddings")
    assert [trace.type for trace in fig.data] == ["scattergl"] * 3
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
    for axis in ("xaxis", "xaxis2", "xaxis3"):
        assert fig.layout[axis].title.text == "PaCMAP-1"
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        assert fig.layout[axis].title.text == "PaCMAP-2"


def test_points_per_panel_equal_the_snapshots():
    snap = snapshot(sizes=(30, 90, 45))
    fig = build_figure(snap)
    for trace, space in zip(fig.data, SPACES):
        assert decoded(trace.x) == pytest.approx(snap["spaces"][space]["points"]["x"], rel=1e-6)  # float32
        assert decoded(trace.y) == pytest.approx(snap["spaces"][space]["points"]["y"], rel=1e-6)
        assert list(trace.customdata) == snap["spaces"][space]["points"]["id"]
        assert trace.marker.size == 5
    # no notices when every space has enough points
    assert annotation_texts(fig) == list(TITLES)


def test_colour_scales_and_bars():
    fig = build_figure(snapshot())
    latent, lora, prompt = fig.data
    assert latent.marker.colorbar.title.text == "Step"
    assert lora.marker.colorbar.title.text == "Layer"
    assert prompt.marker.colorbar.title.text == "Step"
    assert latent.marker.colorscale[0][1] == "#440154"  # Viridis starts dark purple
    assert lora.marker.colorscale[0][1] == "#0d0887"  # Plasma, spelt out: plotly.js has no such name
    assert prompt.marker.colorscale[0][1] == "#00224e"  # Cividis
    assert decoded(lora.marker.color)[:3] == [0, 1, 2]  # one colour index per layer


def test_layers_sort_naturally():
    codes, names = category_codes(["block10.q", "block2.q", None, "block2.q"])
    assert names == ["block2.q", "block10.q"]
    assert codes == [1, 0, -1, 0]


def label(trace, i: int) -> str:
    """Point ``i``'s hover label as Plotly fills the trace's template in."""
    return trace.hovertemplate.replace("%{customdata}", trace.customdata[i]).replace("%{text}", trace.text[i])


def test_hover_label_shows_the_id_in_bold_the_fields_and_four_decimal_loss():
    fig = build_figure(snapshot())
    shown = label(fig.data[1], 0)
    assert shown.startswith("<b>clip_000</b><br>Step: 0<br>") and "Loss: 0.1235" in shown
    assert "Layer: block0.to_out.0" in shown and "Prompt: jazz song, 120 bpm" in shown
    assert "Loss" not in label(fig.data[0], 0)  # latent rows have no loss
    assert "clip_000" not in fig.data[1].text[0]  # the id travels once, as customdata


def test_hover_text_escapes_html():
    evil = "<script>alert(1)</script> & <b>bold</b>"
    snap = snapshot(prompt=evil)
    snap["spaces"]["latent"]["points"]["id"][0] = "<img src=x onerror=alert(2)>"
    snap["spaces"]["lora"]["points"]["layer"][0] = "<i>layer</i>"
    fig = build_figure(snap)
    latent_label = label(fig.data[0], 0)
    assert "<script>" not in latent_label and "<img" not in latent_label and "<b>bold" not in latent_label
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in latent_label
    assert "<b>&lt;img src=x onerror=alert(2)&gt;</b>" in latent_label
    assert "Layer: &lt;i&gt;layer&lt;/i&gt;" in label(fig.data[1], 0)


def test_selection_reads_the_escaped_id_back():
    snap = snapshot()
    snap["spaces"]["latent"]["points"]["id"][0] = "rock & <roll>"
    fig = build_figure(snap, View(selected=frozenset({"rock & <roll>"})))
    assert fig.data[0].customdata[0] == "rock &amp; &lt;roll&gt;" and list(fig.data[0].selectedpoints) == [0]
    assert selected_ids(None, {"points": [{"customdata": fig.data[0].customdata[0]}]}) == ["rock & <roll>"]


def test_long_prompts_are_cut_to_60_characters():
    text = figures.hover_text("id", 1, None, None, None, "x" * 100)
    assert "Prompt: " + "x" * 60 + "…" in text and "x" * 61 not in text


def test_fewer_than_three_points_shows_the_notice_in_that_subplot():
    fig = build_figure(snapshot(sizes=(30, 2, 30)))
    notices = [a for a in fig.layout.annotations if a.text == INSUFFICIENT]
    assert INSUFFICIENT == "Insufficient data (need >= 3 samples per space)"
    assert len(notices) == 1 and notices[0].xref == "x2 domain" and notices[0].yref == "y2 domain"
    assert len(decoded(fig.data[1].x)) == 2  # the few points are still drawn


def test_buffered_but_not_yet_projected_says_so():
    fig = build_figure(snapshot(sizes=(0, 90, 30), buffered=(40, 90, 30)))
    assert "Projecting 40 samples..." in annotation_texts(fig)
    warming = build_figure(snapshot(sizes=(0, 0, 0), buffered=(40, 40, 40), warming_up=True))
    assert annotation_texts(warming).count(figures.WARMING_UP) == 3


@pytest.mark.parametrize("snap", [None, snapshot(sizes=(0, 0, 0), buffered=(0, 0, 0)),
                                  {"ok": True, "changed": True, "version": 0, "run": None, "spaces": {}}])
def test_empty_state(snap):
    fig = build_figure(snap)
    texts = annotation_texts(fig)
    assert texts[:3] == list(TITLES)
    assert any(EMPTY_TITLE in t and EMPTY_DETAIL in t.replace("<br>", " ") for t in texts)
    assert INSUFFICIENT not in texts
    assert [len(decoded(t.x)) for t in fig.data] == [0, 0, 0]
    assert EMPTY_TITLE == "Waiting for training data..."


def test_null_columns_and_short_columns_are_tolerated():
    snap = snapshot(sizes=(12, 12, 12))
    snap["spaces"]["latent"]["points"]["step"] = None
    snap["spaces"]["prompt"]["points"]["prompt"] = ["only one"]
    fig = build_figure(snap)
    assert len(decoded(fig.data[0].x)) == 12 and len(fig.data[2].text) == 12


def test_dark_palette():
    fig = build_figure(snapshot())
    template = fig.layout.template.layout
    assert template.paper_bgcolor == "#111827"
    assert template.plot_bgcolor == "#1f2937" and template.font.color == "#9ca3af"
    assert template.xaxis.gridcolor == "#374151" and template.yaxis.zerolinecolor == "#374151"


def test_stat_texts():
    assert status.stat_text({"buffered": 0, "projected": 0}) == "0 samples"
    assert status.stat_text({"buffered": 1500, "projected": 0}) == "1,500 samples"
    assert status.stat_text({"buffered": 30, "projected": 30}) == "30 samples (projected)"
    texts = status.stat_texts(snapshot(sizes=(30, 0, 0), buffered=(30, 5, 0)))
    assert texts == {"latent": "30 samples (projected)", "lora": "5 samples", "prompt": "0 samples"}


def test_status_transitions():
    live = status.status_from_snapshot(snapshot(), None)
    assert live["state"] == status.LIVE
    empty = snapshot(sizes=(0, 0, 0), buffered=(0, 0, 0))
    assert status.status_from_snapshot(empty, None)["state"] == status.WAITING
    assert status.status_from_snapshot(empty, status.status(status.CLEARED))["state"] == status.CLEARED
    # a poll sent before the clear carries the old "live" state: the collector's word decides
    after_clear = {**empty, "cleared": True}
    assert status.status_from_snapshot(after_clear, status.status(status.LIVE))["state"] == status.CLEARED
    assert status.status_from_snapshot(snapshot(warming_up=True), None)["state"] == status.WARMING
    assert status.status_from_snapshot(snapshot(paused=True), None)["state"] == status.PAUSED
    assert status.badge_for(live, auto_update_paused=True).label == "Paused"
    assert status.badge_for(status.status(status.WARMING), False).label == "Warming up"
    assert "25 s" in status.badge_for(status.status(status.WARMING), False).title
    assert status.badge_for(status.status(status.OFFLINE, "boom"), False).label == "Collector offline"


@pytest.mark.slow
def test_dashboard_never_imports_heavy_or_trainer_modules():
    code = ("import sys, acestep_viz.dashboard.app; "
            "print(sorted(m for m in ('torch', 'pacmap', 'numba', 'acestep_viz.trainer_plugin', "
            "'acestep_viz.collector') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_pca_map_says_so_in_its_title_axes_and_stat_box():
    snap = snapshot(sizes=(5, 15, 5))
    for space in ("latent", "prompt"):
        snap["spaces"][space]["method"] = snap["counts"][space]["method"] = "pca"
    snap["spaces"]["lora"]["method"] = "pacmap"
    fig = build_figure(snap)
    assert annotation_texts(fig)[:3] == ["Latent Space (Audio) · PCA (5 points)", "LoRA Layer Outputs",
                                         "Prompt Embeddings · PCA (5 points)"]
    assert (fig.layout.xaxis.title.text, fig.layout.xaxis2.title.text) == ("PC-1", "PaCMAP-1")
    assert not any("Insufficient" in text for text in annotation_texts(fig))
    assert status.stat_texts(snap) == {"latent": "5 samples (projected by PCA)", "lora": "15 samples (projected)",
                                       "prompt": "5 samples (projected by PCA)"}


def test_two_samples_are_insufficient_and_three_are_enough():
    fig = build_figure(snapshot(sizes=(2, 3, 0), buffered=(2, 3, 0)))
    texts = annotation_texts(fig)
    assert texts.count(INSUFFICIENT) == 2  # latent (2 rows) and prompt (none); LoRA's 3 are drawn
