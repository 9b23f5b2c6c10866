import numpy as np
import pytest
from acestep_viz.collector.pacmap_inputs import nearest_neighbours, neighbour_pairs, pair_counts, reduce_dimensions


def brute_force(points, k):
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def test_nearest_neighbours_are_exact_and_nearest_first_across_blocks():
    points = np.random.default_rng(0).normal(size=(1100, 8)).astype(np.float32)  # more rows than one block
    idx, dist = nearest_neighbours(points, 12)
    want_idx, want_dist = brute_force(points.astype(np.float64), 12)
    assert (idx == want_idx).mean() > 0.999  # float32 ties aside
    np.testing.assert_allclose(dist, want_dist, rtol=1e-3, atol=1e-3)
    assert (np.diff(dist, axis=1) >= 0).all() and (idx != np.arange(1100)[:, None]).all()


def test_nearest_neighbours_rejects_impossible_k():
    with pytest.raises(ValueError, match="0 < k < rows"):
        nearest_neighbours(np.zeros((5, 2), dtype=np.float32), 5)


def test_reduction_keeps_the_distances_of_rows_spanning_few_dimensions():
    rng = np.random.default_rng(1)
    rows = (rng.normal(size=(300, 60)) @ rng.normal(size=(60, 2560))).astype(np.float32)  # rank 60 in 2560 dims
    reduced = reduce_dimensions(rows)
    assert reduced.shape == (300, 100) and reduced.dtype == np.float32
    before = np.linalg.norm(rows[:50, None] - rows[None, :50], axis=2)
    after = np.linalg.norm(reduced[:50, None] - reduced[None, :50], axis=2)
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-2 * before.mean())


def test_narrow_rows_are_only_centred():
    rows = np.random.default_rng(2).normal(5.0, 1.0, size=(40, 16))
    np.testing.assert_allclose(reduce_dimensions(rows), rows - rows.mean(axis=0), atol=1e-5)


def test_neighbour_pairs_link_each_row_to_its_close_rows():
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 20, size=(4, 10))
    labels = np.repeat(np.arange(4), 50)
    points = (centres[labels] + rng.normal(size=(200, 10))).astype(np.float32)
    pairs = neighbour_pairs(points, 10)
    assert pairs.shape == (2000, 2) and (pairs[:, 0] == np.repeat(np.arange(200), 10)).all()
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).all()


def test_pair_counts_follow_pacmap_on_small_maps():
    assert pair_counts(1000, 10) == (10, 5, 20)
    small = pair_counts(12, 10)
    assert sum(small) < 12 and small[0] >= 1
