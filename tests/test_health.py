"""Health figures in the original space: the maths against hand-computed values, the collector's history
frames carrying them, and the chart builders drawing them against step."""
from __future__ import annotations

import math
import time

import numpy as np
import plotly.graph_objects as go
import pytest
from acestep_viz.collector.health import (
    TOP_TAGS,
    cka_to_first,
    effective_rank,
    frame_health,
    linear_cka,
    tag_silhouette,
    tag_silhouettes,
)
from acestep_viz.collector.projection import pca_layout
from acestep_viz.collector.service import Collector
from acestep_viz.dashboard import health_charts
from acestep_viz.dashboard.health_callbacks import health_outputs
from acestep_viz.dashboard.health_charts import health_figure, series, stores_for, top_tags
from acestep_viz.dashboard.scrubber import history_store
from acestep_viz.dashboard.tags import prompt_tags as dashboard_prompt_tags
from support import synthetic_frames

from acestep_viz.tags import prompt_tags

RNG = np.random.default_rng(0)


def rotation(d: int, seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# -- effective rank ---------------------------------------------------------------------------------------
def test_k_equal_singular_values_give_rank_k():
    k, d = 3, 6
    axes = np.eye(d)[:k]
    x = np.vstack([axes, -axes])  # centred already; singular values all sqrt(2)
    assert effective_rank(x) == pytest.approx(3.0)
    assert effective_rank(x * 7.5) == pytest.approx(3.0)  # a uniform scale changes nothing
    assert effective_rank(x + 100.0) == pytest.approx(3.0)  # the rows are centred: an offset changes nothing


def test_effective_rank_of_unequal_singular_values_by_hand():
    # singular values 3*sqrt(2) and sqrt(2): p = (0.75, 0.25), exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.7548
    x = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert effective_rank(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(x) == pytest.approx(1.7548, abs=1e-4)


def test_effective_rank_falls_as_a_cloud_collapses_and_edge_cases():
    cloud = RNG.normal(size=(400, 32))
    squeezed = cloud * np.r_[np.ones(2), np.full(30, 0.001)]  # nearly all spread in two directions
    assert effective_rank(cloud) > 25 and effective_rank(squeezed) < 2.5
    assert effective_rank(np.ones((10, 4))) == 0.0  # no spread at all
    assert effective_rank(np.ones((1, 4))) is None
    tall = RNG.normal(size=(8, 50))  # fewer rows than features: at most n - 1 directions after centring
    assert effective_rank(tall) <= 7 + 1e-9


# -- linear CKA -------------------------------------------------------------------------------------------
def test_cka_of_a_small_example_by_hand():
    # 1-D, centred: x = (-1, 0, 1), y = (-1, 1, 0); ||yᵀx||² = 1, ||xᵀx|| = ||yᵀy|| = 2: CKA = 1 / 4
    assert linear_cka(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [3.0], [2.0]])) == pytest.approx(0.25)


def test_cka_ignores_rotation_uniform_scale_and_offset_but_not_noise():
    x = RNG.normal(size=(300, 20))
    assert linear_cka(x, x @ rotation(20)) == pytest.approx(1.0)
    assert linear_cka(x, 4.0 * x + 3.0) == pytest.approx(1.0)
    assert linear_cka(x, RNG.normal(size=(300, 20))) < 0.15
    stretched = x * np.r_[np.full(1, 30.0), np.ones(19)]  # not isotropic: one direction dominates
    assert linear_cka(x, stretched) < 0.9


def test_cka_gram_form_equals_the_feature_form():
    x, y = RNG.normal(size=(6, 40)), RNG.normal(size=(6, 40))  # n < d: the Gram form is used
    xc, yc = x - x.mean(0), y - y.mean(0)
    by_features = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(by_features)
    assert linear_cka(x[:, :3], y[:, :3]) == pytest.approx(linear_cka(x[:, :3].copy(), y[:, :3].copy()))


def test_cka_edge_cases():
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))
    assert linear_cka(np.ones((5, 3)), RNG.normal(size=(5, 3))) is None  # one side does not vary
    assert linear_cka(np.ones((1, 3)), np.ones((1, 3))) is None


def test_cka_to_first_matches_rows_by_clip_and_layer_not_by_order():
    base = RNG.normal(size=(50, 8))
    keys = [f"clip{i}|layer{i % 3}" for i in range(50)]
    first = dict(zip(keys, base))
    turned = base @ rotation(8)
    current = dict(zip(reversed(keys), turned[::-1]))  # the same rows, listed backwards
    current["new|layer0"] = np.zeros(8)  # a row the first frame did not have: left out
    assert cka_to_first(first, current) == pytest.approx(1.0)
    rewritten = dict(zip(keys, RNG.normal(size=(50, 8))))
    assert cka_to_first(first, rewritten) < 0.5
    assert cka_to_first(first, {k: current[k] for k in keys[:2]}) is None  # two rows always give 1: too few
    assert cka_to_first(first, current, cap=20) == pytest.approx(1.0)  # a stable sample of the shared rows


# -- tag silhouette ---------------------------------------------------------------------------------------
def test_silhouette_of_two_pairs_by_hand():
    # cosine distances: 1 inside each pair, 2 and 1 to the other pair: a = 1, b = 1.5, s = 0.5 / 1.5 = 1/3
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert tag_silhouette(points, [True, True, False, False]) == pytest.approx(1 / 3)


def test_silhouette_of_tight_clusters_mixed_clouds_and_too_small_groups():
    apart = np.vstack([RNG.normal([10, 0, 0], 0.1, size=(40, 3)), RNG.normal([0, 10, 0], 0.1, size=(40, 3))])
    labels = [True] * 40 + [False] * 40
    assert tag_silhouette(apart, labels) > 0.95
    mixed = RNG.normal(size=(400, 16))
    assert abs(tag_silhouette(mixed, RNG.random(400) < 0.5)) < 0.05
    assert tag_silhouette(apart, [True] + [False] * 79) is None  # a group of one
    big = RNG.normal(size=(3000, 8))
    big[:1500] += 3.0
    has = np.arange(3000) < 1500
    assert tag_silhouette(big, has) == tag_silhouette(big, has)  # sampled with a fixed seed


def test_silhouette_agrees_with_scikit_learn_on_uneven_groups():
    metrics = pytest.importorskip("sklearn.metrics")
    x = RNG.normal(size=(120, 10))
    x[:15] += 1.5
    has = np.arange(120) < 15
    assert tag_silhouette(x, has) == pytest.approx(metrics.silhouette_score(x, has, metric="cosine"), abs=1e-6)


def test_tag_silhouettes_score_the_most_common_tags_that_split_the_rows():
    genres = ["metal", "jazz", "folk"]
    prompts = [f"{genres[i % 3]}, live recording, take {i % 2}" for i in range(90)]
    centres = RNG.normal(0, 5, size=(3, 16))
    vectors = centres[np.arange(90) % 3] + RNG.normal(0, 0.3, size=(90, 16))
    scores = tag_silhouettes(vectors, prompts)
    assert "live recording" not in scores  # every row has it: no second group
    assert scores["metal"] > 0.5 and abs(scores["take 0"]) < 0.2
    assert list(scores)[:2] == ["take 0", "take 1"]  # the most common tags first
    assert len(tag_silhouettes(vectors, prompts, top=2)) == 2


def test_a_clip_row_has_a_tag_when_any_of_its_prompt_texts_does():
    vectors = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [0.0, 1.0]])
    clips = ["a", "a", "b", "b", "c"]
    prompts = ["rock", "rock, drums", "jazz", "jazz", "jazz"]
    own = tag_silhouettes(vectors, prompts)
    by_clip = tag_silhouettes(vectors, prompts, clips)
    assert "drums" not in own  # one row has it
    assert by_clip["drums"] == by_clip["rock"] > 0.5  # both rows of clip a have it through the clip


def test_tag_splitting_is_shared_with_the_dashboard():
    assert dashboard_prompt_tags is prompt_tags
    assert prompt_tags(" Metal ,  Heavy  Guitars; 140 BPM,, ") == ["metal", "heavy guitars", "140 bpm"]


def test_frame_health_per_space():
    vectors = RNG.normal(size=(60, 12))
    meta = [{"id": f"c{i % 20}", "layer": f"l{i % 3}", "prompt": ["rock", "jazz"][i % 2]} for i in range(60)]
    latest = {f"{m['id']}|{m['layer']}": v for m, v in zip(meta, vectors)}
    lora = frame_health("lora", vectors, meta, latest, latest)
    assert set(lora) == {"effective_rank", "cka_to_first", "tag_silhouette"} and lora["cka_to_first"] == 1.0
    latent = frame_health("latent", vectors, [{"id": m["id"]} for m in meta], None, None)
    assert set(latent) == {"effective_rank"}  # no prompt texts: no tag figure


# -- the collector's history frames -----------------------------------------------------------------------
def test_history_frames_carry_the_health_figures(tmp_path):
    collector = Collector("tcp://127.0.0.1:5998", "tcp://127.0.0.1:5997", str(tmp_path / "store"))
    try:
        for steps, seed in ((1, 0), (3, 1)):
            for frame in synthetic_frames(run="health", n_clips=20, steps=steps, seed=seed):
                collector.state.accept(frame)
            for job in collector.state.due_fits(time.time() + 10 * steps, 0.0, max_full=3):
                coords = pca_layout(job.vectors)  # any layout: the figures come from the original space
                collector.state.install(job, coords, 0.0, collector._quality(job, coords))
        frames = {space: collector.answer(f'{{"op":"history","run":"health","space":"{space}"}}'.encode())["frames"]
                  for space in ("latent", "lora", "prompt")}
    finally:
        collector.close()
    for space, history in frames.items():
        assert all(f["effective_rank"] > 1 for f in history), space
        assert set(history[-1]["tag_silhouette"]) >= {"metal song", "jazz song"}, space
        assert "120 bpm" not in history[-1]["tag_silhouette"]  # every prompt has it
    lora = frames["lora"]
    assert len(lora) == 2 and lora[0]["cka_to_first"] == 1.0 and 0 < lora[1]["cka_to_first"] < 1
    assert "cka_to_first" not in frames["latent"][-1]



def test_a_failing_health_figure_costs_the_frame_its_figures_not_the_map(tmp_path, caplog):
    collector = Collector("tcp://127.0.0.1:5998", "tcp://127.0.0.1:5997", str(tmp_path / "store"))
    try:
        for frame in synthetic_frames(run="broken", n_clips=20, steps=1):
            collector.state.accept(frame)
        job = next(j for j in collector.state.due_fits(time.time(), 0.0, max_full=3) if j.space == "latent")
        job.vectors = job.vectors.astype(np.float64)
        job.vectors[0, 0] = np.nan  # the ingest drops such rows; here it stands for any numerical failure
        for _ in range(2):
            quality = collector._quality(job, pca_layout(np.nan_to_num(job.vectors)))
        assert "neighbour_overlap" in quality and "effective_rank" not in quality
        assert collector.state.stats()["projection_errors"] == {"health_LinAlgError": 2}
        assert sum("health figures" in r.message for r in caplog.records) == 1  # logged once
    finally:
        collector.close()

# -- the charts -------------------------------------------------------------------------------------------
SUMMARIES = {
    "latent": [{"version": 1, "step": 0, "effective_rank": 20.0}, {"version": 4, "step": 10, "effective_rank": 18.0}],
    "lora": [{"version": 2, "step": 0, "effective_rank": 30.0, "cka_to_first": 1.0,
              "tag_silhouette": {"metal": 0.1, "jazz": 0.05}},
             {"version": 5, "step": 10, "effective_rank": 12.0, "cka_to_first": 0.7,
              "tag_silhouette": {"jazz": 0.2, "metal": 0.3}}],
    "prompt": [{"version": 3, "step": 0, "tag_silhouette": {"metal": 0.4, "folk": 0.2, "jazz": 0.1}},
               {"version": 6, "step": 10, "tag_silhouette": {"metal": 0.5, "jazz": 0.3}}],
}
OTHER = {"lora": [{"version": 9, "step": 5, "effective_rank": 25.0, "cka_to_first": 0.9}]}


def test_history_store_keeps_the_health_fields_per_frame():
    store = history_store("run-a", SUMMARIES)
    assert store["quality"]["lora"]["effective_rank"] == [30.0, 12.0]
    assert store["quality"]["lora"]["cka_to_first"] == [1.0, 0.7]
    assert store["quality"]["prompt"]["tag_silhouette"][1] == {"metal": 0.5, "jazz": 0.3}
    assert series(store["quality"]["prompt"], "tag_silhouette", "folk") == ([0], [0.2])


def test_health_figure_draws_rank_cka_and_the_top_tags_against_step():
    fig = go.Figure(health_figure({"run-a": history_store("run-a", SUMMARIES)}, "run-a"))
    rank = [t for t in fig.data if t.xaxis == "x"]
    assert [t.name for t in rank] == ["latent", "LoRA"] and list(rank[1].y) == [30.0, 12.0]
    (cka,) = [t for t in fig.data if t.xaxis == "x2"]
    assert list(cka.x) == [0, 10] and list(cka.y) == [1.0, 0.7]
    tags = [t for t in fig.data if t.xaxis == "x3"]
    assert [t.name for t in tags] == ["metal", "jazz", "folk"]  # the prompt space's tags, most frames first
    assert list(tags[0].y) == [0.4, 0.5]
    assert all(t.line.dash == "solid" for t in fig.data)
    assert fig.layout.yaxis3.title.text == "tag silhouette (prompt)"
    assert top_tags(history_store("run-a", SUMMARIES), "lora", limit=1) == ["jazz"]  # newest frame's order


def test_a_picked_tag_is_drawn_for_every_space_that_scores_it():
    fig = health_figure({"run-a": history_store("run-a", SUMMARIES)}, "run-a", tag="Metal")
    tags = [t for t in fig["data"] if t["xaxis"] == "x3"]
    assert [t["name"] for t in tags] == ["metal · LoRA", "metal · prompt"]
    assert tags[0]["y"] == [0.1, 0.3]
    rare = health_figure({"run-a": history_store("run-a", SUMMARIES)}, "run-a", tag="kazoo")
    assert "kazoo" in rare["layout"]["annotations"][0]["text"]  # says why no tag line is drawn


def test_the_chart_names_as_many_top_tags_as_the_collector_scores():
    assert health_charts.TOP_TAGS == TOP_TAGS  # the dashboard cannot import the collector: kept equal here


def test_a_compared_run_is_overlaid_dashed():
    stores = stores_for(history_store("run-a", SUMMARIES), [("run-b", history_store("run-b", OTHER))])
    assert list(stores) == ["run-a", "run-b"]
    fig = health_figure(stores, "run-a")
    dashed = [t for t in fig["data"] if t["line"]["dash"] == "dash"]
    assert sorted(t["name"] for t in dashed) == ["CKA (run-b)", "LoRA (run-b)"]
    assert health_figure(None)["layout"]["annotations"]  # the empty state explains itself


class HistoryClient:
    """Answers ``history`` like CollectorClient, from summaries per run."""

    def __init__(self, runs):
        self.runs, self.asked = runs, []

    def history(self, run, space, version=None):
        self.asked.append((run, space))
        return {"ok": True, "run": run, "space": space, "frames": self.runs[run].get(space, [])}


def test_the_callback_fetches_the_compared_run_only_when_it_differs():
    client = HistoryClient({"run-b": OTHER})
    shown = history_store("run-a", SUMMARIES)
    fig = health_outputs(client, shown, None, "run-b")
    assert {run for run, _ in client.asked} == {"run-b"}
    assert any(t["name"] == "CKA (run-b)" for t in fig["data"])
    client.asked.clear()
    health_outputs(client, shown, None, "run-a")
    health_outputs(client, shown, None, None)
    assert client.asked == []
