"""PaCMAP's inputs prepared cheaply at the sizes the collector fits (up to a few thousand rows).

PaCMAP reduces rows of more than 100 dimensions to 100 with sklearn's randomized TruncatedSVD and
finds neighbour candidates with an approximate index; at a few thousand rows of 2560 dimensions
both cost more than its optimisation. Here the reduction is a float32 randomized PCA and the
candidates come from an exact search by matrix products; PaCMAP's own numba kernels then pick the
neighbour pairs from the candidates by its scaled distance, as it does with its own index.
"""
from __future__ import annotations

import logging

import numpy as np

PCA_DIMS = 100  # the dimensions PaCMAP reduces wider rows to before pairing
POWER_ITERATIONS = 2  # of the randomized range finder: enough for kNN-grade components
OVERSAMPLING = 10  # extra random directions of the range finder
EXTRA_CANDIDATES = 50  # PaCMAP ranks its n_neighbors + 50 nearest rows by scaled distance
_BLOCK = 1024  # query rows per distance block (bounds the temporary matrix)


def reduce_dimensions(vectors: np.ndarray, dims: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """Centred float32 rows projected on their first ``dims`` principal components (the rows
    themselves, centred, when they have no more than ``dims`` columns)."""
    data = np.asarray(vectors, dtype=np.float32)
    data = data - data.mean(axis=0)
    if data.shape[1] <= dims:
        return np.ascontiguousarray(data)
    basis = _range_basis(data, min(dims + OVERSAMPLING, *data.shape), seed)
    # The SVD of the small (width x columns) matrix from the eigenvectors of its width x width Gram
    # matrix, in float64: a fraction of LAPACK's SVD time, and the precision lost by squaring falls
    # on components far below the ones kept.
    small = (basis.T @ data).astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(small @ small.T)  # ascending
    keep = min(dims, len(eigenvalues))
    sigma = np.sqrt(np.maximum(eigenvalues[::-1][:keep], 0.0))
    return np.ascontiguousarray((basis @ eigenvectors[:, ::-1][:, :keep].astype(np.float32)) * sigma, dtype=np.float32)


def _range_basis(data: np.ndarray, width: int, seed: int) -> np.ndarray:
    """An orthonormal (rows, width) basis of ``data``'s leading column space: a randomized range finder.
    Between power iterations the columns only need to stay independent and of bounded size, which a
    symmetric orthogonalisation from a small Gram matrix gives at a fraction of a QR's cost; the last
    step takes one QR. numpy only: scipy brings its own BLAS, whose threads would compete with numpy's."""
    basis = np.random.default_rng(seed).standard_normal((data.shape[1], width), dtype=np.float32)
    for _ in range(POWER_ITERATIONS):
        basis = _orthogonalised(data @ basis)
        basis = _orthogonalised(data.T @ basis)
    return np.linalg.qr(data @ basis)[0]


def _orthogonalised(columns: np.ndarray) -> np.ndarray:
    """``columns`` times the inverse square root of their Gram matrix (float64): nearly orthonormal
    columns spanning the same space; directions the columns do not span stay near zero."""
    wide = columns.astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(wide.T @ wide)
    floor = max(float(eigenvalues[-1]), 1e-300) * 1e-12
    inverse_root = eigenvectors / np.sqrt(np.maximum(eigenvalues, floor))
    return (wide @ inverse_root).astype(np.float32)


def nearest_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows, nearest first: indices (n, k) int32, distances (n, k) float32."""
    points = np.asarray(points, dtype=np.float32)
    n = len(points)
    if not 0 < k < n:
        raise ValueError(f"need 0 < k < rows, got k={k} for {n} rows")
    norms = np.einsum("ij,ij->i", points, points)
    index_blocks, dist_blocks = [], []
    for start in range(0, n, _BLOCK):
        block = points[start:start + _BLOCK]
        squared = norms[start:start + len(block), None] + norms[None, :] - 2.0 * block @ points.T
        squared[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not its own neighbour
        idx = np.argpartition(squared, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(squared, axis=1)[:, :k]
        dist = np.take_along_axis(squared, idx, axis=1)
        order = np.argsort(dist, axis=1, kind="stable")
        index_blocks.append(np.take_along_axis(idx, order, axis=1))
        dist_blocks.append(np.sqrt(np.maximum(np.take_along_axis(dist, order, axis=1), 0.0)))
    return np.vstack(index_blocks).astype(np.int32), np.vstack(dist_blocks).astype(np.float32)


def pair_counts(rows: int, n_neighbors: int) -> tuple[int, int, int]:
    """(neighbour, mid-near, further) pairs per row as PaCMAP settles them for ``rows`` rows."""
    import pacmap

    reducer = pacmap.PaCMAP(n_components=2, n_neighbors=n_neighbors, verbose=False)
    quiet = logging.getLogger("pacmap")
    level, quiet.level = quiet.level, logging.ERROR  # it warns when small maps shrink the counts
    try:
        reducer.decide_num_pairs(rows)
    finally:
        quiet.level = level
    return reducer.n_neighbors, reducer.n_MN, reducer.n_FP


def neighbour_pairs(points: np.ndarray, n_neighbors: int) -> np.ndarray:
    """PaCMAP's neighbour pairs (n * n_neighbors, 2): of each row's exact n_neighbors + 50 nearest
    rows, the n_neighbors closest by PaCMAP's scaled distance d^2 / (sigma_i sigma_j)."""
    from pacmap import pacmap as kernels

    points = np.ascontiguousarray(points, dtype=np.float32)
    candidates = min(n_neighbors + EXTRA_CANDIDATES, len(points) - 1)
    idx, dist = nearest_neighbours(points, candidates)
    sigma = np.maximum(dist[:, 3:6].mean(axis=1), 1e-10).astype(np.float32)
    scaled = kernels.scale_dist(dist, sigma, idx)
    return kernels.sample_neighbors_pair(points, scaled, idx, np.int32(n_neighbors))
