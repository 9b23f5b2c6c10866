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
    init = warm_start(list("abcde"), prev, list("abcdx"), vectors[:5])
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
