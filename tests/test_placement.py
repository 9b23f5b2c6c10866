"""Incremental maps: placement maths (collector/placement.py) and the full-or-place policy in
``CollectorState.due_fits``, without processes or PaCMAP."""
import numpy as np
import pytest
from acestep_viz.collector.placement import (
    MapChange,
    RefitPolicy,
    extend_layout,
    full_fit_reason,
    map_change,
    nearest_rows,
    neighbour_weights,
    place_rows,
)
from acestep_viz.collector.state import CollectorState
from support import install_fake_fit

from acestep_viz.wire import Frame


def clusters(rng, per_cluster=30, dim=64, k=3):
    centres = rng.normal(0, 10, size=(k, dim))
    labels = np.repeat(np.arange(k), per_cluster)
    return centres, labels, centres[labels] + rng.normal(size=(len(labels), dim))


def test_nearest_rows_finds_the_closest_reference_rows():
    reference = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    idx, dist = nearest_rows(reference, np.array([[9.0, 8.0]]), k=2)
    assert set(idx[0]) == {1, 3} and dist[0].min() == pytest.approx(np.sqrt(5), rel=1e-5)


def test_weights_favour_the_nearest_neighbours_and_sum_to_one():
    weights = neighbour_weights(np.array([[1.0, 1.5, 4.0]]))
    assert weights.sum() == pytest.approx(1.0) and weights[0, 0] > weights[0, 1] > weights[0, 2]


def test_new_rows_land_in_their_nearest_neighbours_cluster():
    rng = np.random.default_rng(0)
    centres, labels, vectors = clusters(rng)
    layout = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])[labels] + rng.normal(0, 1, size=(len(labels), 2))
    new = centres[[2, 0, 1]] + rng.normal(size=(3, centres.shape[1]))
    placed = place_rows(vectors, layout, new)
    for row, cluster in enumerate([2, 0, 1]):
        centre = layout[labels == cluster].mean(axis=0)
        spread = np.linalg.norm(layout[labels == cluster] - centre, axis=1).max()
        assert np.linalg.norm(placed[row] - centre) < spread


def test_extending_a_map_keeps_every_old_point_exactly_where_it_was():
    rng = np.random.default_rng(1)
    centres, labels, vectors = clusters(rng)
    keys = [f"k{i}" for i in range(len(labels))]
    layout = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])[labels] + rng.normal(0, 1, size=(len(labels), 2))
    gone = {0, 31}  # evicted since the last map
    new_keys = [k for i, k in enumerate(keys) if i not in gone] + ["n0", "n1"]
    new_vectors = np.vstack([vectors[[i for i in range(len(keys)) if i not in gone]],
                             centres[[1, 2]] + rng.normal(size=(2, vectors.shape[1]))])
    coords, placed = extend_layout(keys, layout, new_keys, new_vectors)
    assert placed == 2 and coords.shape == (len(new_keys), 2)
    where = {k: i for i, k in enumerate(keys)}
    old = [row for row, k in enumerate(new_keys) if k in where]
    assert np.array_equal(coords[old], layout[[where[new_keys[row]] for row in old]])
    assert np.linalg.norm(coords[-2] - layout[labels == 1].mean(axis=0)) < 4
    assert np.linalg.norm(coords[-1] - layout[labels == 2].mean(axis=0)) < 4


def test_map_change_counts_new_and_lost_rows():
    change = map_change(frozenset("abcd"), list("bcdxy"))
    assert change == MapChange(full_size=4, kept=3, new=2, total=5)
    assert change.new_share == pytest.approx(0.4) and change.lost_share == pytest.approx(0.25)


@pytest.mark.parametrize("change, age, forced, expected", [
    (None, 0.0, False, "first"),
    (MapChange(100, 100, 5, 105), 1.0, True, "requested"),
    (MapChange(100, 100, 5, 105), 1.0, False, None),
    (MapChange(100, 100, 30, 130), 1.0, False, "new_share"),
    (MapChange(100, 70, 0, 70), 1.0, False, "new_share"),
    (MapChange(100, 100, 5, 105), 61.0, False, "age"),
    (MapChange(100, 5, 0, 5), 1.0, False, "too_few_kept"),
])
def test_full_fit_reason(change, age, forced, expected):
    assert full_fit_reason(change, age, RefitPolicy(max_new_share=0.2, max_age_s=60), forced) == expected


# the policy inside CollectorState ----------------------------------------------------------------

def frame(space, ids, rng, step=0):
    return Frame("run", space, step, rng.normal(size=(len(ids), 16)).astype(np.float16), list(ids),
                 meta=[{"layer": "l0"} if space == "lora" else {} for _ in ids])




def test_a_few_new_rows_are_placed_and_a_full_fit_follows_past_the_share():
    rng = np.random.default_rng(0)
    state = CollectorState(refit_policy=RefitPolicy(max_new_share=0.2, max_age_s=0))
    state.accept(frame("latent", [f"c{i}" for i in range(100)], rng))
    (job,) = state.due_fits(1.0, 0.0)
    assert job.full and job.reason == "first"
    install_fake_fit(state, job)
    kinds = []
    for batch in range(7):  # 10 new clips at a time: placements until more than 20 % of the map is new
        before = state.runs["run"].spaces["latent"].projection
        state.accept(frame("latent", [f"n{batch}-{i}" for i in range(10)], rng))
        (job,) = state.due_fits(2.0 + batch, 0.0)
        kinds.append("full" if job.full else "placed")
        install_fake_fit(state, job)
        proj = state.runs["run"].spaces["latent"].projection
        if not job.full:  # old points did not move at all
            where = {k: i for i, k in enumerate(proj.keys)}
            assert np.array_equal(proj.coords[[where[k] for k in before.keys]], before.coords)
    assert kinds == ["placed", "placed", "full", "placed", "placed", "placed", "full"]
    summary = state.history("run", "latent", None)["frames"]
    assert [f["fit"] for f in summary] == ["full", *kinds] and summary[2]["placed"] == 20


def test_a_full_fit_waits_its_turn_while_other_spaces_get_placements():
    rng = np.random.default_rng(1)
    state = CollectorState(refit_policy=RefitPolicy(max_new_share=0.2, max_age_s=0))
    for space in ("latent", "prompt"):
        state.accept(frame(space, [f"c{i}" for i in range(50)], rng))
    jobs = state.due_fits(1.0, 0.0)
    assert [j.full for j in jobs] == [True]  # one full fit per round; the other space waits (no map yet)
    install_fake_fit(state, jobs[0])
    (second,) = state.due_fits(1.1, 0.0)
    assert second.full and second.space != jobs[0].space
    install_fake_fit(state, second)
    for space in ("latent", "prompt"):
        state.accept(frame(space, [f"n{i}" for i in range(30)], rng))  # both past the share
    jobs = state.due_fits(2.0, 0.0)
    assert sorted(j.full for j in jobs) == [False, True]  # the waiting one is placed meanwhile
    assert not jobs[0].full  # placements come first


def test_a_refit_request_and_a_clear_start_from_a_full_fit():
    rng = np.random.default_rng(2)
    state = CollectorState()
    state.accept(frame("prompt", [f"c{i}" for i in range(40)], rng))
    install_fake_fit(state, state.due_fits(1.0, 0.0)[0])
    state.request_refit(None, None)
    (job,) = state.due_fits(2.0, 0.0)
    assert job.full and job.reason == "requested"
    install_fake_fit(state, job)
    state.clear(None, "prompt")
    state.accept(frame("prompt", [f"c{i}" for i in range(40)], rng))
    (job,) = state.due_fits(3.0, 0.0)
    assert job.full and job.reason == "first"


def test_placements_take_every_new_row_even_above_the_fit_cap():
    rng = np.random.default_rng(3)
    state = CollectorState(max_fit_points=50, refit_policy=RefitPolicy(max_new_share=0.5, max_age_s=0))
    state.accept(frame("latent", [f"c{i}" for i in range(80)], rng))
    job = state.due_fits(1.0, 0.0)[0]
    assert job.full and len(job.keys) == 50
    install_fake_fit(state, job)
    (job,) = state.due_fits(1.5, 0.0)  # the 30 rows the cap left out: placed, not another capped fit
    assert not job.full and len(job.keys) == 80
    install_fake_fit(state, job)
    state.accept(frame("latent", ["fresh"], rng))
    (job,) = state.due_fits(2.0, 0.0)
    assert not job.full and "fresh" in job.keys and len(job.keys) == 81


def test_the_fit_sample_above_the_cap_stays_the_same_as_clips_arrive():
    from acestep_viz.collector.quality import cap_rows
    meta = [{"id": f"clip{i}"} for i in range(300)]
    before = {meta[i]["id"] for i in cap_rows(meta, cap=100)}
    meta += [{"id": f"late{i}"} for i in range(10)]
    after = {meta[i]["id"] for i in cap_rows(meta, cap=100)}
    assert len(before) == len(after) == 100 and len(before & after) >= 90


def test_five_clips_give_three_maps_drawn_by_pca_and_the_method_is_recorded():
    rng = np.random.default_rng(5)
    state = CollectorState()
    for space in ("latent", "prompt", "lora"):
        state.accept(frame(space, [f"c{i}" for i in range(5)], rng))
    jobs = state.due_fits(1.0, 0.0)
    assert sorted(j.space for j in jobs) == ["latent", "lora", "prompt"]  # all at once: PCA costs no PaCMAP turn
    assert all(j.full and j.method == "pca" for j in jobs)
    for job in jobs:
        install_fake_fit(state, job)
    snapshot = state.snapshot("run", None)
    for space in ("latent", "prompt", "lora"):
        assert snapshot["spaces"][space]["method"] == "pca" and len(snapshot["spaces"][space]["points"]["x"]) == 5
        assert snapshot["counts"][space] == {"buffered": 5, "projected": 5, "method": "pca"}
    assert state.history("run", "latent", None)["frames"][-1]["method"] == "pca"


def test_two_rows_draw_no_map_and_a_grown_space_gets_its_first_pacmap_fit():
    rng = np.random.default_rng(6)
    state = CollectorState()
    state.accept(frame("latent", ["a", "b"], rng))
    assert state.due_fits(1.0, 0.0) == []  # a map needs 3 rows
    state.accept(frame("latent", ["c"], rng))
    (job,) = state.due_fits(2.0, 0.0)
    assert job.method == "pca"
    install_fake_fit(state, job)
    state.accept(frame("latent", [f"n{i}" for i in range(20)], rng))
    (job,) = state.due_fits(3.0, 0.0)
    assert job.full and job.method == "pacmap" and job.reason == "grown"  # never placed on a PCA map
