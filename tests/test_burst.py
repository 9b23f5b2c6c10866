"""A burst larger than ``--max-fit-points``, then nothing: every buffered row still reaches its map
(CollectorState's scheduling without processes, then a real collector), and the stat boxes say how many
rows a map shows while it shows fewer than the buffer holds."""
import numpy as np
import pytest
from acestep_viz.collector.placement import PLACE_BATCH, RefitPolicy, extend_layout, rows_to_place
from acestep_viz.collector.state import CollectorState
from acestep_viz.dashboard import status
from support import CollectorProcess, install_fake_fit, query, send_frames, synthetic_frames, wait_for

from acestep_viz.wire import SPACES, Frame


def burst(state, rows, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    for space in SPACES:
        ids = [f"clip{i}" for i in range(rows)]
        meta = [{"layer": "l0"} if space == "lora" else {} for _ in ids]
        state.accept(Frame("run", space, 0, rng.normal(size=(rows, dim)).astype(np.float16), ids, meta=meta))




def rounds_until_idle(state, start=1.0, step=0.01, interval=1.0, limit=50):
    """Projection rounds a few milliseconds apart (well inside the fit interval) until nothing is due."""
    done = []
    for i in range(limit):
        jobs = state.due_fits(start + i * step, interval)
        if not jobs:
            return done
        for job in jobs:
            install_fake_fit(state, job)
            done.append(job)
    raise AssertionError(f"still fitting after {limit} rounds")


def test_a_burst_above_the_fit_cap_reaches_every_map_without_more_rows():
    rows = 300 + PLACE_BATCH + 200
    state = CollectorState(buffer_size=5000, max_fit_points=300, refit_policy=RefitPolicy(max_age_s=60))
    burst(state, rows)
    jobs = rounds_until_idle(state)
    for space in SPACES:
        own = [j for j in jobs if j.space == space]
        assert [j.full for j in own] == [True, False, False]  # one capped fit, then the rest placed in batches
        assert [len(j.keys) for j in own] == [300, 300 + PLACE_BATCH, rows]
        assert state.counts("run")[space]["projected"] == rows == state.counts("run")[space]["buffered"]
        history = list(state.runs["run"].spaces[space].history)
        for before, after in zip(history, history[1:]):  # placing never moved a point already on the map
            where = {k: i for i, k in enumerate(after.keys)}
            assert np.array_equal(after.coords[[where[k] for k in before.keys]], before.coords)
        # each row is placed among the fitted rows: the batches give the map one placement would give
        vectors, keys, _ = state.runs["run"].spaces[space].buffer.snapshot()
        fit = history[0]
        at_once, _ = extend_layout(fit.keys, fit.coords, keys, vectors, anchors=frozenset(fit.keys))
        assert history[-1].keys == keys and np.allclose(history[-1].coords, at_once)


def test_rows_left_out_by_the_cap_are_not_new_rows_for_the_refit_policy():
    state = CollectorState(buffer_size=5000, max_fit_points=100,
                           refit_policy=RefitPolicy(max_new_share=0.2, max_age_s=0))
    burst(state, 400)
    rounds_until_idle(state)  # a fit of 100 rows, 300 placed onto it
    burst_keys = {f"fresh{i}" for i in range(5)}  # 5 of 405 rows are new: placed, no full fit
    rng = np.random.default_rng(2)
    state.accept(Frame("run", "latent", 1, rng.normal(size=(5, 16)).astype(np.float16), sorted(burst_keys)))
    jobs = rounds_until_idle(state, start=5.0)
    assert jobs and not any(j.full for j in jobs)
    assert burst_keys <= set(state.runs["run"].spaces["latent"].projection.keys)


def test_rows_arriving_during_the_catch_up_are_placed_first():
    state = CollectorState(buffer_size=5000, max_fit_points=100)
    burst(state, 100 + PLACE_BATCH + 50)
    install_fake_fit(state, next(j for j in state.due_fits(1.0, 1.0) if j.space == "latent"))
    rng = np.random.default_rng(3)
    state.accept(Frame("run", "latent", 1, rng.normal(size=(3, 16)).astype(np.float16), ["late0", "late1", "late2"]))
    job = next(j for j in state.due_fits(1.01, 1.0) if j.space == "latent")  # inside the interval: placed at once
    assert not job.full and {"late0", "late1", "late2"} <= set(job.keys)


def test_new_rows_are_placed_among_the_fitted_rows_not_among_placed_ones():
    fitted_vectors = np.array([[0.0, 0.0], [10.0, 0.0]])
    prev_keys, prev_coords = ["f0", "f1", "p0"], np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    vectors = np.vstack([fitted_vectors, [[6.0, 0.0]], [[6.1, 0.0]]])  # "new" sits right next to placed "p0"
    keys = ["f0", "f1", "p0", "new"]
    among_all, _ = extend_layout(prev_keys, prev_coords, keys, vectors, k=2)
    among_fitted, _ = extend_layout(prev_keys, prev_coords, keys, vectors, k=2, anchors=frozenset({"f0", "f1"}))
    assert np.allclose(among_all[3], [5.0, 5.0], atol=0.5)  # pulled onto the placed point
    assert among_fitted[3][1] == 0.0 and 0.0 < among_fitted[3][0] < 1.0  # between the two fitted rows


def test_rows_to_place_keeps_the_map_and_the_newest_other_rows():
    keys = ["a", "b", "c", "d", "e", "f"]
    assert rows_to_place(["b", "d"], keys, batch=2).tolist() == [1, 3, 4, 5]
    assert rows_to_place(["b", "d"], keys, batch=10).tolist() == [0, 1, 2, 3, 4, 5]


def test_the_stat_box_says_how_many_rows_the_map_shows():
    assert status.stat_text({"buffered": 10000, "projected": 3000}) == "3,000 of 10,000 samples on the map"
    assert status.stat_text({"buffered": 10000, "projected": 10000}) == "10,000 samples (projected)"
    assert status.stat_text({"buffered": 8, "projected": 5, "method": "pca"}) == "5 of 8 samples on the map (PCA)"
    state = CollectorState(buffer_size=5000, max_fit_points=100)
    burst(state, 500)
    (first,) = state.due_fits(1.0, 1.0)  # one full fit per round: the other spaces have no map yet
    install_fake_fit(state, first)
    texts = status.stat_texts(state.snapshot("run", None))
    assert texts == {space: "100 of 500 samples on the map" if space == first.space else "500 samples"
                     for space in SPACES}


@pytest.mark.slow
def test_a_real_collector_places_a_whole_burst_above_its_fit_cap(tmp_path):
    frames = synthetic_frames(run="burst", n_clips=1500, steps=1, lora_layers=1)
    with CollectorProcess(tmp_path / "store", extra_args=["--max-fit-points", "300"]) as collector:
        collector.wait_ready()
        send_frames(collector.ingest, frames)

        def whole_maps():
            snap = query(collector.query, {"op": "snapshot", "run": "burst", "since": None})
            spaces = snap.get("spaces") or {}
            shown = {s: len(spaces[s]["points"]["x"]) for s in spaces}
            return snap if shown and all(shown[s] == spaces[s]["buffered"] == 1500 for s in SPACES) else None

        snap = wait_for(whole_maps, timeout=120, interval=0.5)
        assert all(len(set(snap["spaces"][s]["points"]["id"])) == 1500 for s in SPACES)
        history = query(collector.query, {"op": "history", "run": "burst", "space": "prompt"})["frames"]
        assert [f["fit"] for f in history][:1] == ["full"] and history[0]["points"] == 300
