"""Comparing two runs: which rows enter the joint map, when it is refitted, the op, the LoRA panel and charts."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
from acestep_viz.collector.compare import (
    CompareBook,
    CompareError,
    RunRows,
    check_pair,
    compare_reply,
    joint_rows,
    split_cap,
)
from acestep_viz.collector.service import Collector
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.client import CollectorRequestError
from acestep_viz.dashboard.compare import (
    compare_options,
    compared_pair,
    joint_lora_traces,
    link_pairs,
)
from acestep_viz.dashboard.compare_callbacks import poll_compare
from acestep_viz.dashboard.figures import build_figure
from acestep_viz.dashboard.layout import LATEST_RUN_OPTION
from acestep_viz.dashboard.quality_chart import quality_figure
from acestep_viz.dashboard.scrubber import history_store
from acestep_viz.dashboard.view import View
from acestep_viz.trainer_plugin.demo.compare import demo_runs
from dash.exceptions import PreventUpdate
from support import CollectorProcess, projected_snapshot, query, send_frames, synthetic_frames, wait_for

from acestep_viz.wire import Frame


# -- rows and cap ------------------------------------------------------------------------------
def run_rows(run: str, clips: int, steps: int, dim: int = 8, stamp=(0.0, 1), seed: int = 0) -> RunRows:
    meta = [{"id": f"clip{c}", "step": s, "layer": "block0", "loss": 0.1} for s in range(steps) for c in range(clips)]
    keys = [f"clip{m['id']}|block0|{m['step']}" for m in meta]
    vectors = np.random.default_rng(seed).normal(size=(len(meta), dim)).astype(np.float32)
    return RunRows(run, stamp, vectors, keys, meta)


def test_the_cap_is_split_evenly_and_a_run_needing_less_hands_its_share_on():
    assert split_cap(100, {"a": 500, "b": 500}) == {"a": 50, "b": 50}
    assert split_cap(101, {"a": 500, "b": 500}) == {"a": 51, "b": 50}
    assert split_cap(100, {"a": 20, "b": 500}) == {"a": 20, "b": 80}
    assert split_cap(100, {"a": 30, "b": 40}) == {"a": 30, "b": 40}
    assert split_cap(100, {"a": 0, "b": 500}) == {"a": 0, "b": 100}


def test_joint_rows_hold_both_runs_within_the_cap_each_clip_kept_and_tagged_with_its_run():
    a, b = run_rows("lr-1e-3", clips=10, steps=20), run_rows("lr-4e-3", clips=10, steps=20, seed=1)
    joint = joint_rows([a, b], cap=60)
    assert joint.counts == {"lr-1e-3": 30, "lr-4e-3": 30} and joint.vectors.shape == (60, 8)
    for run in ("lr-1e-3", "lr-4e-3"):
        clips = {m["id"] for m in joint.meta if m["run"] == run}
        assert clips == {f"clip{c}" for c in range(10)}  # every clip of each run is in the map
    assert len(set(joint.keys)) == 60  # the same row key in both runs stays two rows
    assert a.meta[0].get("run") is None  # the buffers' metadata is not changed


def test_runs_of_different_models_cannot_share_a_map():
    with pytest.raises(CompareError, match="different sizes"):
        joint_rows([run_rows("a", 5, 2, dim=8), run_rows("b", 5, 2, dim=16)], cap=100)


@pytest.mark.parametrize("runs", [None, ["a"], ["a", "a"], ["a", 3], "ab"])
def test_a_compare_request_names_two_different_runs(runs):
    with pytest.raises(CompareError):
        check_pair(runs)


# -- when a joint map is refitted -----------------------------------------------------------------
def fitted(book: CompareBook, pair, key, now) -> None:
    rows = joint_rows([run_rows(pair[0], 4, 1), run_rows(pair[1], 4, 1)], 100)
    book.install(pair, "lora", key, rows, np.zeros((len(rows.keys), 2)), 0.1, "pca", now)


def test_a_pair_is_refitted_when_its_rows_change_not_more_often_than_the_interval():
    book, pair = CompareBook(), ("a", "b")
    assert book.due(0.0, 1.0) == []  # nobody asked
    book.request(pair, "lora", ("g1",), now=10.0)
    assert book.due(10.0, 1.0) == [(pair, "lora")]
    book.started(pair, "lora", 10.0)
    fitted(book, pair, ("g1",), 10.5)
    book.request(pair, "lora", ("g1",), now=11.0)
    assert book.due(12.0, 1.0) == []  # fitted on the rows the runs hold
    book.request(pair, "lora", ("g2",), now=12.0)
    assert book.due(10.5, 1.0) == []  # rows changed, but the interval has not passed
    assert book.due(12.0, 1.0) == [(pair, "lora")]
    assert book.due(12.0 + book.ttl_s + 1, 1.0) == []  # nobody asked for a while: dropped


def test_the_reply_says_whether_the_map_is_current_and_skips_points_the_client_has():
    book, pair = CompareBook(), ("a", "b")
    state = book.request(pair, "lora", ("g1",), now=1.0)
    waiting = compare_reply(pair, "lora", state)
    assert waiting["version"] is None and not waiting["current"] and waiting["points"]["x"] == []
    fitted(book, pair, ("g1",), 2.0)
    reply = compare_reply(pair, "lora", book.request(pair, "lora", ("g1",), now=3.0))
    assert reply["current"] and reply["counts"] == {"a": 4, "b": 4}
    assert sorted(set(reply["points"]["run"])) == ["a", "b"] and len(reply["points"]["x"]) == 8
    stale = compare_reply(pair, "lora", book.request(pair, "lora", ("g2",), now=4.0), since=reply["version"])
    assert not stale["current"] and not stale["changed"] and "points" not in stale


# -- the op, on a collector without sockets -------------------------------------------------------
def lora_frames(run: str, clips: int, step: int, seed: int) -> Frame:
    rng = np.random.default_rng([seed, step])
    return Frame(run=run, space="lora", step=step, vectors=rng.normal(size=(clips, 16)).astype(np.float16),
                 ids=[f"clip{c}" for c in range(clips)], meta=[{"layer": "block0"} for _ in range(clips)],
                 sent_at=0.0)


def ask(collector: Collector, request: dict) -> dict:
    return collector.answer(json.dumps(request).encode())


def test_the_compare_op_records_the_pair_and_the_projection_loop_fits_both_runs_into_one_map(tmp_path):
    collector = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", str(tmp_path), max_fit_points=6)
    try:
        for run, seed in (("lr-a", 0), ("lr-b", 1)):
            for step in range(2):
                collector.state.accept(lora_frames(run, 4, step, seed))
        first = ask(collector, {"op": "compare", "runs": ["lr-a", "lr-b"], "space": "lora"})
        assert first["ok"] and first["version"] is None  # the query thread only records the request
        collector._fit_compares()  # what the projection loop runs after the runs' own fits
        reply = ask(collector, {"op": "compare", "runs": ["lr-a", "lr-b"]})
        assert reply["current"] and reply["method"] == "pca" and reply["counts"] == {"lr-a": 3, "lr-b": 3}
        assert sorted(reply["points"]["run"]) == ["lr-a"] * 3 + ["lr-b"] * 3
        collector.state.accept(lora_frames("lr-b", 4, 2, 1))
        assert not ask(collector, {"op": "compare", "runs": ["lr-a", "lr-b"]})["current"]
        unknown = ask(collector, {"op": "compare", "runs": ["lr-a", "nope"]})
        assert unknown["reason"] == "unknown_run" and not unknown["ok"]
        assert ask(collector, {"op": "compare", "runs": ["lr-a", "lr-a"]})["reason"] == "bad_request"
    finally:
        collector.close()


# -- the LoRA panel ----------------------------------------------------------------------------------
def joint_reply(pair=("lr-a", "lr-b"), clips=4, steps=2, only_first=()) -> dict:
    points = {k: [] for k in ("x", "y", "run", "id", "step", "loss", "timestep", "layer", "prompt")}
    for r, run in enumerate(pair):
        for step in range(steps):
            for c in range(clips):
                for layer in ("block0", "block1"):
                    if r == 1 and f"clip{c}" in only_first:
                        continue
                    for name, value in (("x", c + 10 * r), ("y", step), ("run", run), ("id", f"clip{c}"),
                                        ("step", step), ("loss", 0.1), ("timestep", 500.0), ("layer", layer),
                                        ("prompt", "jazz")):
                        points[name].append(value)
    return {"ok": True, "runs": list(pair), "version": 3, "current": True, "method": "pacmap",
            "counts": {run: len(points["x"]) // 2 for run in pair}, "points": points}


def own_snapshot(run="lr-a") -> dict:
    def space(n):
        return {"buffered": n, "projected": n, "points": {"x": list(range(n)), "y": [0.0] * n,
                                                          "id": [f"clip{i % 4}" for i in range(n)],
                                                          "step": [0] * n, "layer": ["block0"] * n}}
    return {"run": run, "version": 9, "spaces": {"latent": space(4), "lora": space(8), "prompt": space(4)}}


def test_links_join_each_clip_and_layers_newest_point_in_both_runs():
    reply = joint_reply(only_first=("clip3",))
    points = reply["points"]
    a = {k: [v for v, r in zip(col, points["run"]) if r == "lr-a"] for k, col in points.items()}
    b = {k: [v for v, r in zip(col, points["run"]) if r == "lr-b"] for k, col in points.items()}
    pairs = link_pairs(a, b)
    assert len(pairs) == 3 * 2  # clip3 is only in the first run: 3 clips x 2 layers linked
    assert all(a["step"][i] == 1 and b["step"][j] == 1 for i, j in pairs)  # the newest step on both sides
    assert all(a["id"][i] == b["id"][j] and a["layer"][i] == b["layer"][j] for i, j in pairs)
    assert {a["id"][i] for i, _ in link_pairs(a, b, only=frozenset({"clip1"}))} == {"clip1"}


def test_the_lora_panel_shows_the_joint_map_coloured_by_run_and_leaves_the_other_panels_alone():
    snap, reply, pair = own_snapshot(), joint_reply(), ("lr-a", "lr-b")
    alone = build_figure(snap, View())
    fig = build_figure(snap, View(), joint=reply, pair=pair)
    go.Figure(fig)  # valid Plotly
    assert fig["data"][0] == alone["data"][0] and fig["data"][2] == alone["data"][2]
    runs = [t for t in fig["data"] if t.get("meta") == "lora"]
    assert [t["name"] for t in runs] == list(pair) and all(t["showlegend"] for t in runs)
    assert runs[0] is fig["data"][1] and len(runs[0]["x"]) == len(runs[1]["x"]) == 16
    assert runs[0]["marker"]["color"] != runs[1]["marker"]["color"]
    assert fig["layout"]["showlegend"] and fig["layout"]["meta"]["compare"] == list(pair)
    links = [t for t in fig["data"] if t.get("meta") == "compare-link"]
    assert len(links) == 1 and links[0]["x"].count(None) == 4 * 2  # one segment per (clip, layer)
    assert "lr-a (16) vs lr-b (16)" in fig["layout"]["annotations"][1]["text"]


def test_selecting_a_clip_highlights_it_in_both_runs_and_links_only_it():
    view = View(selected=frozenset({"clip2"}), trajectories=True)
    traces = joint_lora_traces(joint_reply(), ("lr-a", "lr-b"), view)
    for trace in traces[:2]:
        assert {trace["customdata"][i] for i in trace["selectedpoints"]} == {"clip2"}
    link = [t for t in traces if t.get("meta") == "compare-link"][0]
    assert link["x"].count(None) == 2  # clip2's two layers
    assert len([t for t in traces if t.get("meta") == "trajectory"]) == 4  # 2 layers x 2 runs


def test_without_a_joint_map_yet_the_lora_panel_stays_the_runs_own():
    snap = own_snapshot()
    waiting = {"ok": True, "version": None, "current": False, "points": {"x": []}}
    assert build_figure(snap, View(), joint=waiting, pair=("lr-a", "lr-b")) == build_figure(snap, View())


def test_the_compare_picker_lists_every_run_and_off():
    options = compare_options([LATEST_RUN_OPTION, {"label": "a", "value": "a"}, {"label": "b", "value": "b"}])
    assert [o["value"] for o in options] == ["", "a", "b"]
    assert compared_pair("a", "b") == ("a", "b")
    assert compared_pair("a", "a") is None and compared_pair("a", None) is None and compared_pair(None, "b") is None


class CompareClient:
    """Answers the compare op like CollectorClient, from a dict."""

    def __init__(self, reply=None, error=None):
        self.reply, self.error, self.requests = reply, error, []

    def compare(self, runs, space="lora", since=None):
        self.requests.append((tuple(runs), since))
        if self.error:
            raise self.error
        return self.reply if since != self.reply["version"] else {**self.reply, "changed": False}


def test_polling_caches_the_joint_map_and_keeps_only_its_version_in_the_browser():
    cache, client = ReplyCache(), CompareClient({**joint_reply(), "changed": True})
    seen = poll_compare(client, cache, {"run": "lr-a"}, "lr-b", None)
    assert seen == {"runs": ["lr-a", "lr-b"], "version": 3, "current": True}
    assert cache.get(("compare", "lr-a", "lr-b", 3))["points"]["run"][0] == "lr-a"
    with pytest.raises(PreventUpdate):  # nothing new
        poll_compare(client, cache, {"run": "lr-a"}, "lr-b", seen)
    assert client.requests[-1] == (("lr-a", "lr-b"), 3)  # asked only for what is newer
    assert poll_compare(client, cache, {"run": "lr-a"}, None, seen) is None  # comparison off
    gone = CompareClient(error=CollectorRequestError("no run", "unknown_run"))
    assert poll_compare(gone, cache, {"run": "lr-a"}, "deleted", seen) is None


# -- the quality chart and the demo -------------------------------------------------------------------
def test_the_quality_chart_overlays_the_compared_run_dashed_and_names_lines_by_run():
    def store(run, overlap):
        return history_store(run, {"lora": [{"version": v, "step": v * 10, "neighbour_overlap": overlap,
                                              "lora_drift": 0.1 * v} for v in (1, 2)]})

    single = quality_figure(store("lr-a", 0.8))
    assert [t["name"] for t in single["data"]] == ["LoRA", "LoRA drift"]
    fig = quality_figure(store("lr-a", 0.8), store("lr-b", 0.6))
    go.Figure(fig)
    names = [t["name"] for t in fig["data"]]
    assert names == ["LoRA · lr-a", "LoRA drift · lr-a", "LoRA · lr-b", "LoRA drift · lr-b"]
    assert fig["data"][2]["line"]["dash"] == "dash" and "dash" not in fig["data"][0]["line"]
    assert fig["data"][2]["y"] == [0.6, 0.6]


def test_the_demo_trains_two_runs_of_the_same_clips_at_two_learning_rates_when_comparing():
    assert demo_runs("demo-1", False, 0.002) == [("demo-1", 0.002)]
    runs = demo_runs("demo-1", True)
    assert [name for name, _ in runs] == ["demo-1-lr0.001", "demo-1-lr0.004"]
    assert runs[1][1] == 4 * runs[0][1]


# -- a collector process with two runs streamed -------------------------------------------------------
def joint_map(endpoint: str, pair: list[str], newer_than: int = 0) -> dict | None:
    reply = query(endpoint, {"op": "compare", "runs": pair, "space": "lora"})
    return reply if reply["current"] and (reply["version"] or 0) > newer_than else None


@pytest.mark.slow
def test_a_collector_fits_two_streamed_runs_into_one_map_and_refits_it_as_a_run_grows(tmp_path):
    pair = ["lr-1e-4", "lr-4e-4"]
    with CollectorProcess(tmp_path / "store", extra_args=["--projection-interval-s", "0.2",
                                                          "--max-fit-points", "300"]) as collector:
        collector.wait_ready()
        for run, seed in zip(pair, (0, 1)):  # the same 30 clips, other vectors
            send_frames(collector.ingest, synthetic_frames(run=run, n_clips=30, steps=3, seed=seed))
        wait_for(lambda: all(projected_snapshot(collector.query, run) for run in pair), timeout=120)
        reply = wait_for(lambda: joint_map(collector.query, pair), timeout=120)
        assert reply["method"] == "pacmap" and reply["counts"] == {pair[0]: 150, pair[1]: 150}  # the cap split
        points = reply["points"]
        assert len(points["x"]) == 300 and sorted(set(points["run"])) == sorted(pair)
        for run in pair:  # every clip of each run is on the joint map
            assert len({clip for clip, r in zip(points["id"], points["run"]) if r == run}) == 30
        assert all(np.isfinite(points["x"])) and all(np.isfinite(points["y"]))
        send_frames(collector.ingest, synthetic_frames(run=pair[1], n_clips=30, steps=5, seed=2)[-3:])
        newer = wait_for(lambda: joint_map(collector.query, pair, reply["version"]), timeout=120)
        assert newer["version"] > reply["version"] and max(newer["points"]["step"]) == 4
        unknown = query(collector.query, {"op": "compare", "runs": [pair[0], "no-such-run"]})
        assert unknown["ok"] is False and unknown["reason"] == "unknown_run"
        assert collector.alive()


# -- in the browser ---------------------------------------------------------------------------------
QUALITY_JS = f"document.querySelector('#{ids.QUALITY_GRAPH} .js-plotly-plot')"


@pytest.mark.browser
@pytest.mark.slow
def test_picking_a_run_to_compare_shows_both_runs_in_the_lora_panel_and_the_quality_chart(tmp_path):
    from tests.browser_support import GRAPH_JS, SHORT_MS, RunFeeder, chromium, dashboard_page, running_stack, traces

    with running_stack(tmp_path) as stack, chromium() as browser:
        first = RunFeeder(stack.collector, "rank-8", seed=0).feed(steps=2, new_clips=10)
        second = RunFeeder(stack.collector, "rank-16", seed=1).feed(steps=2, new_clips=10)  # the same clip keys
        with dashboard_page(browser, stack, second) as watched:  # the dashboard follows the newest run
            page = watched.page
            page.click(f"#{ids.COMPARE_SELECT}")
            page.get_by_role("option", name=first.run, exact=True).click()
            page.wait_for_function(f"{GRAPH_JS}.data.filter(t => t.meta === 'lora').length === 2",
                                   timeout=120_000)
            shown = traces(page)
            lora = {t["text"][0].split("<br>")[0]: t for t in shown if t["meta"] == "lora"}
            assert set(lora) == {"Run: rank-16", "Run: rank-8"}
            assert lora["Run: rank-16"]["n"] == second.counts["lora"]
            assert lora["Run: rank-8"]["n"] == first.counts["lora"]
            assert shown[1]["text"][0].startswith("Run: rank-16")  # trace 1 stays the shown run's
            assert shown[0]["n"] == second.counts["latent"]  # the latent panel stays the shown run's own map
            assert any(t["meta"] == "compare-link" for t in shown)
            legend = page.evaluate(f"Array.from({GRAPH_JS}.querySelectorAll('.legendtext')).map(e => e.textContent)")
            assert sorted(legend) == ["rank-16", "rank-8"]
            page.wait_for_function(f"{QUALITY_JS}.data.some(t => t.name.endsWith('rank-8'))", timeout=SHORT_MS)
            lines = page.evaluate(f"{QUALITY_JS}.data.map(t => [t.name, (t.line || {{}}).dash || null])")
            assert ["LoRA · rank-8", "dash"] in lines and ["LoRA · rank-16", None] in lines
