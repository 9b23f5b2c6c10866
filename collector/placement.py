"""Incremental maps: place a few new rows on a fitted layout without moving the old points.

A row's vector never changes (collector/buffers.py), so between two full PaCMAP fits a map can
grow by placing each new row at the weighted centre of its nearest fitted rows (nearest in the
original space): the fixed point of PaCMAP's own neighbour attraction with the other points held
still, which is what ``PaCMAP.transform`` optimises towards too, at a fraction of the cost.
``full_fit_reason`` decides when that is no longer good enough. Plain numpy, no processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLACE_NEIGHBOURS = 10  # fitted neighbours a new row is placed among
_CHUNK = 256  # new rows per distance block (bounds the temporary matrix)
PLACE_BATCH = 1000  # most rows one placement adds (~0.5 s at 2560-d): the rest follow in the next rounds


@dataclass(frozen=True)
class RefitPolicy:
    """When a space's map is refitted from scratch instead of extended by placement."""
    max_new_share: float = 0.2  # rows not in the last full fit, as a share of the map (and rows it lost)
    max_age_s: float = 60.0  # a full fit at least this often while rows keep arriving; 0: never by age


@dataclass(frozen=True)
class MapChange:
    """How the rows of a fit job relate to the last full fit of the space."""
    full_size: int  # rows in the last full fit
    kept: int  # of those, still in the job
    new: int  # job rows that were not in the last full fit
    total: int  # job rows

    @property
    def new_share(self) -> float:
        return self.new / self.total if self.total else 1.0

    @property
    def lost_share(self) -> float:
        return 1.0 - self.kept / self.full_size if self.full_size else 1.0


def map_change(full_keys: frozenset | set, keys: list[str]) -> MapChange:
    kept = sum(k in full_keys for k in keys)
    return MapChange(full_size=len(full_keys), kept=kept, new=len(keys) - kept, total=len(keys))


def full_fit_reason(change: MapChange | None, age_s: float, policy: RefitPolicy, forced: bool = False,
                    min_points: int = 10) -> str | None:
    """Why the job must be a full fit (None: placing the new rows is enough)."""
    if forced:
        return "requested"
    if change is None or change.full_size == 0:
        return "first"
    if change.kept < min_points:
        return "too_few_kept"
    if change.new_share > policy.max_new_share or change.lost_share > policy.max_new_share:
        return "new_share"
    if policy.max_age_s > 0 and age_s >= policy.max_age_s:
        return "age"
    return None


def rows_to_place(map_keys: list[str], keys: list[str], batch: int = PLACE_BATCH) -> np.ndarray:
    """Indices into ``keys`` (buffered rows, oldest first) of a placement job: every row already on the
    map and the newest ``batch`` of the others, in buffer order. Rows beyond the batch wait for the
    next job, so a burst reaches the map in steps that each stay short."""
    on_map = set(map_keys)
    off_map = [i for i, key in enumerate(keys) if key not in on_map]
    chosen = set(off_map[-batch:]) if batch > 0 else set()
    return np.array([i for i, key in enumerate(keys) if key in on_map or i in chosen], dtype=int)


def nearest_rows(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (m, k) into ``reference`` of each query's k nearest rows and their Euclidean distances."""
    k = min(k, len(reference))
    ref = np.asarray(reference, dtype=np.float32)
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    index_blocks, dist_blocks = [], []
    for start in range(0, len(queries), _CHUNK):
        q = np.asarray(queries[start:start + _CHUNK], dtype=np.float32)
        squared = np.einsum("ij,ij->i", q, q)[:, None] + ref_sq[None, :] - 2.0 * q @ ref.T
        idx = np.argpartition(squared, k - 1, axis=1)[:, :k] if k < len(ref) else np.tile(np.arange(k), (len(q), 1))
        dist = np.sqrt(np.maximum(np.take_along_axis(squared, idx, axis=1), 0.0))
        index_blocks.append(idx)
        dist_blocks.append(dist)
    return np.vstack(index_blocks), np.vstack(dist_blocks)


def neighbour_weights(distances: np.ndarray) -> np.ndarray:
    """Rows summing to 1 that favour the closest neighbours: a Gaussian kernel whose width is each
    row's distance to its nearest neighbour (so the weights do not depend on the data's scale)."""
    nearest = distances.min(axis=1, keepdims=True)
    width = np.maximum(nearest, 1e-12)
    weights = np.exp(-((distances - nearest) / width) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def place_rows(fitted_vectors: np.ndarray, fitted_coords: np.ndarray, new_vectors: np.ndarray,
               k: int = PLACE_NEIGHBOURS) -> np.ndarray:
    """2-D positions (m, 2) for new rows: the weighted centre of their k nearest fitted rows."""
    if len(new_vectors) == 0:
        return np.zeros((0, 2))
    if len(fitted_vectors) == 0:
        raise ValueError("cannot place rows on an empty map")
    idx, dist = nearest_rows(fitted_vectors, new_vectors, k)
    weights = neighbour_weights(dist)
    return np.einsum("mk,mkd->md", weights, np.asarray(fitted_coords, dtype=np.float64)[idx])


def extend_layout(prev_keys: list[str], prev_coords: np.ndarray, keys: list[str], vectors: np.ndarray,
                  k: int = PLACE_NEIGHBOURS, anchors: frozenset | set | None = None) -> tuple[np.ndarray, int]:
    """The map of ``keys``: rows already on the previous map keep their exact coordinates, the others
    are placed among the kept rows, or among the kept rows in ``anchors`` (the last full fit's rows) when
    at least ``k`` of them are kept. Returns (coords (n, 2), number of rows placed)."""
    where = {key: i for i, key in enumerate(prev_keys)}
    old_rows = np.array([row for row, key in enumerate(keys) if key in where], dtype=int)
    new_rows = np.array([row for row, key in enumerate(keys) if key not in where], dtype=int)
    coords = np.empty((len(keys), 2))
    if len(old_rows):
        coords[old_rows] = prev_coords[[where[keys[row]] for row in old_rows]]
    if len(new_rows):
        among = old_rows
        if anchors is not None:
            fitted = np.array([row for row in old_rows if keys[row] in anchors], dtype=int)
            if len(fitted) and len(fitted) >= min(k, len(old_rows)):
                among = fitted
        coords[new_rows] = place_rows(vectors[among], coords[among], vectors[new_rows], k)
    return coords, len(new_rows)
