import numpy as np
import pytest
from acestep_viz.collector.projection import align_to_previous, layout_diameter, warm_start
from acestep_viz.collector.projector import Projector
from support import NUMBA_CACHE

pytestmark = pytest.mark.slow


def test_the_worker_fits_cold_and_warm_and_a_warm_fit_keeps_the_old_rows_near_their_place():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, size=(4, 32))
    vectors = (centres[rng.integers(0, 4, 120)] + rng.normal(size=(120, 32))).astype(np.float32)
    keys = [f"k{i}" for i in range(120)]
    with Projector(numba_cache_dir=str(NUMBA_CACHE)) as projector:
        cold, _ = projector.fit(vectors[:100], 10, timeout=300)
        assert cold.shape == (100, 2) and np.isfinite(cold).all()
        init, held = warm_start(keys[:100], cold, keys, vectors)  # 20 new rows, placed and free
        warm, _ = projector.fit(vectors, 10, init, held)
    warm = align_to_previous(keys[:100], cold, keys, warm)
    assert warm.shape == (120, 2) and held.sum() == 100
    assert np.median(np.linalg.norm(warm[:100] - cold, axis=1)) < 0.03 * layout_diameter(cold)
