import numpy as np
import pytest
from acestep_viz.collector.projection import (
    align_to_previous,
    fit_layout,
    layout_diameter,
    pca_layout,
    procrustes,
    projection_method,
    warm_start,
)


def rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_procrustes_undoes_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 2))
    moved = (ref @ rotation(1.1) @ np.diag([1, -1])) * 3.0 + [5, -2]
    r, s, t = procrustes(ref, moved)
    assert np.allclose(s * moved @ r + t, ref, atol=1e-9)


def test_alignment_uses_shared_keys_only():
    rng = np.random.default_rng(1)
    prev = rng.normal(size=(20, 2))
    keys = [f"k{i}" for i in range(20)]
    new_keys = keys[5:] + ["n1", "n2"]
    new = np.vstack([prev[5:], rng.normal(size=(2, 2))]) @ rotation(2.0) * 0.1
    aligned = align_to_previous(keys, prev, new_keys, new)
    assert np.allclose(aligned[:15], prev[5:], atol=1e-9)


def test_alignment_without_enough_shared_keys_changes_nothing():
    new = np.ones((4, 2))
    assert align_to_previous(["a", "b"], np.zeros((2, 2)), ["a", "x", "y", "z"], new) is new


def test_warm_start_keeps_old_rows_and_needs_a_majority():
    prev = np.arange(10, dtype=float).reshape(5, 2)
    vectors = np.random.default_rng(0).normal(size=(6, 4))
    init, _ = warm_start(list("abcde"), prev, list("abcdx"), vectors[:5])
    assert np.allclose(init[:4], prev[:4]) and np.isfinite(init[4]).all()
    assert warm_start(list("abcde"), prev, list("avwxyz"), vectors) is None


def test_layout_diameter():
    assert layout_diameter(np.array([[0, 0], [3, 4]])) == pytest.approx(5.0)


def test_pacmap_separates_clusters():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 10, size=(3, 32))
    labels = np.repeat(np.arange(3), 20)
    data = centres[labels] + rng.normal(size=(60, 32))
    coords = fit_layout(data, n_neighbors=10)
    assert coords.shape == (60, 2)
    means = np.array([coords[labels == k].mean(axis=0) for k in range(3)])
    within = np.mean([np.linalg.norm(coords[labels == k] - means[k], axis=1).mean() for k in range(3)])
    between = min(np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3))
    assert between > 2 * within


def test_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 10"):
        fit_layout(np.zeros((5, 3)))


@pytest.mark.parametrize("rows, n_neighbors, method", [(3, 10, "pca"), (9, 10, "pca"), (10, 10, "pca"),
                                                       (11, 10, "pacmap"), (10, 5, "pacmap"), (9, 5, "pca")])
def test_small_spaces_are_laid_out_by_pca(rows, n_neighbors, method):
    assert projection_method(rows, n_neighbors) == method


def test_pca_layout_of_three_points_keeps_their_distances_order():
    vectors = np.array([[0.0, 0, 0, 0], [1, 0, 0, 0], [10, 1, 0, 0]])
    coords = pca_layout(vectors)
    assert coords.shape == (3, 2) and np.isfinite(coords).all()
    distance = lambda a, b: np.linalg.norm(coords[a] - coords[b])  # noqa: E731
    assert distance(0, 1) < distance(0, 2) and distance(1, 2) < distance(0, 2)
    np.testing.assert_allclose(distance(0, 2), np.linalg.norm(vectors[0] - vectors[2]), rtol=1e-3)
    assert pca_layout(np.ones((3, 4))).tolist() == [[0.0, 0.0]] * 3  # identical rows: one spot, no NaN


def clustered_rows(rng, n, dim=64, centres=6, spread=8.0):
    """Rows around a few well separated centres, and each row's centre."""
    middle = rng.normal(0, spread, size=(centres, dim))
    labels = rng.integers(0, centres, n)
    return (middle[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels, middle


def refit_with_new_rows(rng, data, labels, middle, coords, share=0.1):
    """Replace ``share`` of the rows by new rows from the same clusters and refit as the collector
    does: warm start from the current map, then align to it. Returns (new map, data, labels, keys, old keys)."""
    n = len(data)
    keys = [f"k{i}" for i in range(n)]
    new_keys, data, labels = list(keys), data.copy(), labels.copy()
    for row in rng.choice(n, size=int(share * n), replace=False):
        labels[row] = rng.integers(0, len(middle))
        data[row] = middle[labels[row]] + rng.normal(size=data.shape[1])
        new_keys[row] = f"new{row}"
    init, held = warm_start(keys, coords, new_keys, data)
    refit = align_to_previous(keys, coords, new_keys, fit_layout(data, 10, init, held))
    return refit, data, labels, new_keys, keys


def median_move_pct(keys, before, new_keys, after):
    where = {k: i for i, k in enumerate(keys)}
    rows = [(where[k], i) for i, k in enumerate(new_keys) if k in where]
    moves = np.linalg.norm(after[[i for _, i in rows]] - before[[p for p, _ in rows]], axis=1)
    return float(np.median(moves) / layout_diameter(before) * 100)


def test_a_full_refit_with_ten_percent_new_rows_keeps_the_old_points_near_their_place():
    rng = np.random.default_rng(7)
    data, labels, middle = clustered_rows(rng, 400, centres=10, spread=1.0)
    coords = fit_layout(data, 10)
    refit, *_, new_keys, keys = refit_with_new_rows(rng, data, labels, middle, coords)
    assert median_move_pct(keys, coords, new_keys, refit) < 4.0  # PaCMAP's own warm start moves them ~13 %


def test_a_warm_refit_keeps_neighbourhoods_and_puts_new_rows_in_their_cluster():
    from acestep_viz.collector.quality import neighbour_overlap

    rng = np.random.default_rng(4)
    data, labels, middle = clustered_rows(rng, 400)
    coords = fit_layout(data, 10)
    refit, data, labels, new_keys, _ = refit_with_new_rows(rng, data, labels, middle, coords)
    assert neighbour_overlap(data, refit) >= neighbour_overlap(data, fit_layout(data, 10)) - 0.05
    means = np.array([refit[labels == c].mean(axis=0) for c in range(len(middle))])
    new_rows = [i for i, key in enumerate(new_keys) if key.startswith("new")]
    nearest_mean = np.linalg.norm(refit[new_rows, None, :] - means[None], axis=2).argmin(axis=1)
    assert (nearest_mean == labels[new_rows]).mean() > 0.9


def test_a_warm_fit_comes_back_in_the_frame_of_its_start():
    rng = np.random.default_rng(5)
    data, _, _ = clustered_rows(rng, 200)
    pca_frame = pca_layout(data) * 1000.0  # e.g. a small space's PCA map, far from PaCMAP's own scale
    coords = fit_layout(data, 10, pca_frame)
    assert np.median(np.linalg.norm(coords - pca_frame, axis=1)) < 0.03 * layout_diameter(pca_frame)


def test_warm_start_holds_the_old_rows_only():
    prev = np.arange(20, dtype=float).reshape(10, 2)
    vectors = np.random.default_rng(0).normal(size=(10, 4))
    init, held = warm_start(list("abcdefghij"), prev, list("abcdefghxy"), vectors)
    assert held.tolist() == [True] * 8 + [False] * 2 and np.allclose(init[:8], prev[:8])


@pytest.mark.parametrize("warm", [False, True])
def test_fits_of_a_thousand_wide_rows_give_one_point_per_row(warm):
    rng = np.random.default_rng(6)
    data, _, _ = clustered_rows(rng, 1000, dim=2560)
    init = rng.normal(size=(1000, 2)) if warm else None
    coords = fit_layout(data.astype(np.float16), 10, init)
    assert coords.shape == (1000, 2) and np.isfinite(coords).all()
