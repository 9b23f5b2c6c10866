"""Projection maths: PaCMAP fits, PCA layouts of small spaces, and keeping consecutive layouts
in the same frame.

Pure functions over numpy arrays; the collector runs ``fit_layout`` in a separate worker
process so that ingest never waits for a fit. LoRA datasets often hold 5 to 9 clips, and the
latent and prompt spaces hold about one row per clip: below PaCMAP's useful size a space is
laid out by PCA (``projection_method``), so every map appears from ``MIN_POINTS`` rows on.
"""
from __future__ import annotations

import warnings

import numpy as np
from acestep_viz.collector.pacmap_inputs import neighbour_pairs, pair_counts, reduce_dimensions
from acestep_viz.collector.placement import extend_layout
from acestep_viz.collector.warm_fit import warm_fit

MIN_POINTS = 3  # the fewest rows a map is drawn from (by PCA)
PACMAP_MIN_POINTS = 10  # PaCMAP errors at n <= 3 and is meaningless below about 10
METHODS = ("pacmap", "pca")
WARM_START_MIN_SHARED = 0.5  # reuse the previous arrangement when at least half the rows are old


def projection_method(rows: int, n_neighbors: int = 10) -> str:
    """"pca" below PaCMAP's useful size (fewer than 10 rows, or than n_neighbors + 1), else "pacmap"."""
    return "pca" if rows < max(PACMAP_MIN_POINTS, n_neighbors + 1) else "pacmap"


def pca_layout(vectors: np.ndarray) -> np.ndarray:
    """2-D coordinates (n, 2) on the first two principal components; a missing component stays 0."""
    data = np.asarray(vectors, dtype=np.float64)
    coords = np.zeros((data.shape[0], 2))
    if data.shape[0] < 2:
        return coords
    centred = data - data.mean(axis=0)
    u, sigma, _ = np.linalg.svd(centred, full_matrices=False)
    components = min(2, len(sigma))
    coords[:, :components] = u[:, :components] * sigma[:components]
    return coords


def fit_layout(vectors: np.ndarray, n_neighbors: int = 10, init: np.ndarray | None = None,
               held: np.ndarray | None = None) -> np.ndarray:
    """2-D PaCMAP coordinates of ``vectors`` (n, d).

    Cold (``init`` None): PaCMAP's full three-phase fit from its PCA start. Warm: PaCMAP's later
    phases from ``init`` (n, 2), with the rows marked in ``held`` (n,) anchored to their place
    (collector/warm_fit.py), returned in init's frame. Either way the rows are first reduced to
    100 dimensions and paired by exact neighbours (collector/pacmap_inputs.py). A new reducer per
    fit: a fitted one silently reuses its neighbour pairs on new data."""
    import pacmap

    n = vectors.shape[0]
    if n < PACMAP_MIN_POINTS:
        raise ValueError(f"PaCMAP needs at least {PACMAP_MIN_POINTS} points, got {n}: use pca_layout")
    n_neighbors = min(n_neighbors, n - 1)
    points = reduce_dimensions(vectors)
    pairs_per_row, n_mid_near, n_further = pair_counts(n, n_neighbors)
    pairs = neighbour_pairs(points, pairs_per_row)
    if init is not None and _spread(init):
        held = np.ones(n, dtype=bool) if held is None else held
        return warm_fit(points, init, held, pairs, n_mid_near, n_further)
    reducer = pacmap.PaCMAP(n_components=2, n_neighbors=n_neighbors, pair_neighbors=pairs, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = reducer.fit_transform(points, init="pca")
    return np.asarray(coords, dtype=np.float64)


def _spread(coords: np.ndarray) -> bool:
    """Whether a layout has any extent to start from (not all its points on one spot)."""
    return bool(np.ptp(np.asarray(coords, dtype=np.float64), axis=0).max() > 0)


def warm_start(prev_keys: list[str], prev_coords: np.ndarray | None, new_keys: list[str],
               vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A start for a warm fit of ``new_keys`` from the previous map: (init (n, 2), held (n,)),
    or None (a cold fit) when too little is shared.

    Old rows keep their place and are held there; new rows are placed among them by their
    neighbours in ``vectors`` and move freely.
    """
    if prev_coords is None or len(prev_keys) == 0 or len(new_keys) == 0:
        return None
    old = set(prev_keys)
    held = np.array([key in old for key in new_keys], dtype=bool)
    if held.sum() < max(WARM_START_MIN_SHARED * len(new_keys), 3):
        return None
    return extend_layout(prev_keys, prev_coords, new_keys, vectors)[0], held


def procrustes(reference: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rotation (reflection allowed), scale and shift that best map ``moving`` onto ``reference``.

    Returns (R, s, t) minimising ||s * moving @ R + t - reference||.
    """
    ref_mean, mov_mean = reference.mean(axis=0), moving.mean(axis=0)
    ref_c, mov_c = reference - ref_mean, moving - mov_mean
    u, sigma, vt = np.linalg.svd(mov_c.T @ ref_c)
    rotation = u @ vt
    norm = (mov_c ** 2).sum()
    scale = float(sigma.sum() / norm) if norm > 0 else 1.0
    shift = ref_mean - scale * mov_mean @ rotation
    return rotation, scale, shift


def align_to_previous(prev_keys: list[str], prev_coords: np.ndarray | None, new_keys: list[str],
                      new_coords: np.ndarray) -> np.ndarray:
    """Express ``new_coords`` in the previous frame's orientation and scale, using shared keys."""
    if prev_coords is None or len(prev_keys) == 0:
        return new_coords
    index = {k: i for i, k in enumerate(prev_keys)}
    pairs = [(row, index[k]) for row, k in enumerate(new_keys) if k in index]
    if len(pairs) < 3:
        return new_coords
    new_rows, prev_rows = (np.array(p) for p in zip(*pairs))
    rotation, scale, shift = procrustes(prev_coords[prev_rows], new_coords[new_rows])
    return scale * new_coords @ rotation + shift


def layout_diameter(coords: np.ndarray) -> float:
    """Diagonal of the bounding box: the yardstick for how far points moved."""
    if len(coords) == 0:
        return 0.0
    return float(np.linalg.norm(coords.max(axis=0) - coords.min(axis=0)))
