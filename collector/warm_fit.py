"""A warm PaCMAP fit: PaCMAP's later phases run from the current map, its old rows anchored.

A full PaCMAP fit starts with a global phase (mid-near pairs weighted up to 1000) that arranges
the clusters from scratch, and it shrinks any given ``init`` to 1e-4 of its size first, so a
refit of unchanged rows lands somewhere else. Between fits a row's vector never changes, so the
current map is already a PaCMAP layout of most rows. A warm fit keeps it: the layout is scaled to
where PaCMAP's own loss is lowest, then optimised with PaCMAP's gradient kernel and Adam step
through phase 2 (mid-near weight 3) and phase 3 (neighbours and further pairs only), with a spring
pulling each old row towards its place on the current map. New rows move freely.
"""
from __future__ import annotations

import numpy as np

WARM_ITERS = (0, 50, 100)  # PaCMAP's phases 1-3 (its cold fit runs 100, 100, 250)
ANCHOR = 0.2  # spring constant pulling old rows to their place, in PaCMAP's gradient units
LEARNING_RATE = 1.0  # PaCMAP's default Adam step
_ADAM_BETAS = (0.9, 0.999)  # PaCMAP's
_SCALES = np.geomspace(0.25, 64.0, 25)  # candidate sizes (RMS radius) of the layout at the start


def warm_fit(points: np.ndarray, init: np.ndarray, held: np.ndarray, pair_neighbors: np.ndarray,
             n_mid_near: int, n_further: int, iters: tuple[int, int, int] = WARM_ITERS,
             anchor: float = ANCHOR) -> np.ndarray:
    """PaCMAP coordinates (n, 2) of ``points`` starting from ``init`` (n, 2), in init's frame.

    ``held`` (n,) marks the rows anchored to their place in ``init``; ``pair_neighbors`` are the
    PaCMAP neighbour pairs of ``points`` (collector/pacmap_inputs.py: neighbour_pairs).
    """
    from pacmap import pacmap as kernels

    points = np.ascontiguousarray(points, dtype=np.float32)
    n_neighbors = len(pair_neighbors) // len(points)
    pair_neighbors, pair_mn, pair_fp = kernels.generate_pair_no_neighbors(
        points, n_neighbors, n_mid_near, n_further, pair_neighbors, "euclidean", False)
    centre = np.asarray(init, dtype=np.float64).mean(axis=0)
    unit = _unit_size(np.asarray(init, dtype=np.float64) - centre)
    scale = _pacmap_scale(unit, pair_neighbors, pair_fp)
    coords = np.ascontiguousarray(unit * scale, dtype=np.float32)
    start = coords.copy()
    held = np.asarray(held, dtype=bool)
    moment, second = np.zeros_like(coords), np.zeros_like(coords)
    beta1, beta2 = (np.float32(b) for b in _ADAM_BETAS)
    for step in range(sum(iters)):
        w_mn, w_nn, w_fp = kernels.find_weight(1000.0, step, num_iters=iters)
        grad = kernels.pacmap_grad(coords, pair_neighbors, pair_mn, pair_fp, np.float32(w_nn),
                                   np.float32(w_mn), np.float32(w_fp))
        grad[:-1][held] += np.float32(anchor) * (coords[held] - start[held])
        kernels.update_embedding_adam(coords, grad, moment, second, beta1, beta2, np.float32(LEARNING_RATE),
                                      np.int32(step))
    size = _rms_radius(np.asarray(init, dtype=np.float64) - centre)
    return coords.astype(np.float64) / scale * size + centre


def _rms_radius(coords: np.ndarray) -> float:
    return float(np.sqrt((coords ** 2).sum(axis=1).mean()))


def _unit_size(centred: np.ndarray) -> np.ndarray:
    radius = _rms_radius(centred)
    return centred / radius if radius > 0 else centred


def _pacmap_scale(unit: np.ndarray, pair_neighbors: np.ndarray, pair_fp: np.ndarray) -> float:
    """The size at which PaCMAP's final-phase loss (neighbour and further pairs) of this arrangement
    is lowest: PaCMAP's kernels have fixed length scales, so a map from another frame is resized first."""
    from pacmap import pacmap as kernels

    no_pairs = np.zeros((0, 2), dtype=np.int32)
    losses = [kernels.pacmap_grad(np.ascontiguousarray(unit * s, dtype=np.float32), pair_neighbors, no_pairs,
                                  pair_fp, np.float32(1.0), np.float32(0.0), np.float32(1.0))[-1, 0]
              for s in _SCALES]
    return float(_SCALES[int(np.argmin(losses))])
