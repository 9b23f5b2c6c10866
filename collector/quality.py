"""How far a 2-D map can be trusted, and how far the LoRA space has moved: plain numpy."""
from __future__ import annotations

import zlib

import numpy as np


def neighbour_overlap(original: np.ndarray, layout: np.ndarray, k: int = 10, sample: int = 300,
                      seed: int = 0) -> float | None:
    """Mean share of each point's k nearest neighbours in the original space that are also among
    its k nearest in the layout (1.0 = the map keeps every neighbourhood). A sample of points
    stands in for all of them; their neighbours are searched among the sample."""
    n = len(original)
    if n <= k + 1:
        return None
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    k = min(k, len(rows) - 1)
    high = _knn(np.asarray(original[rows], dtype=np.float32), k)
    low = _knn(np.asarray(layout[rows], dtype=np.float32), k)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(high, low)]
    return float(np.mean(shared) / k)


def _knn(points: np.ndarray, k: int) -> np.ndarray:
    squared = (points ** 2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * points @ points.T
    np.fill_diagonal(distances, np.inf)
    return np.argpartition(distances, k, axis=1)[:, :k]


def drift_key(meta: dict) -> str:
    """What stays the same for one LoRA row across steps: the clip and the layer."""
    return f"{meta['id']}|{meta.get('layer') or ''}"


def latest_by_key(vectors: np.ndarray, meta: list[dict]) -> dict[str, np.ndarray]:
    """The newest vector of each (clip, layer); rows come oldest first."""
    return {drift_key(m): vectors[i] for i, m in enumerate(meta)}


def relative_drift(first: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> float | None:
    """Mean ||v - v0|| / ||v0|| over the (clip, layer) pairs seen in the first frame and now."""
    shared = [k for k in current if k in first]
    if not shared:
        return None
    before = np.stack([first[k] for k in shared]).astype(np.float64)
    after = np.stack([current[k] for k in shared]).astype(np.float64)
    norms = np.linalg.norm(before, axis=1)
    norms[norms == 0] = 1.0
    return float(np.mean(np.linalg.norm(after - before, axis=1) / norms))


def cap_rows(meta: list[dict], cap: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``cap`` rows (oldest first) that keep every clip represented.

    Each clip's newest row is kept first; the remaining budget goes to the newest other rows. With more
    clips than ``cap``, a fixed hash of the clip key picks them, so consecutive fits share their rows.
    """
    n = len(meta)
    if n <= cap:
        return np.arange(n)
    newest_of_clip = {m["id"]: i for i, m in enumerate(meta)}
    keep = sorted(newest_of_clip.values())
    if len(keep) >= cap:  # a sample that stays the same as rows come and go: ranked by a hash of the clip
        ranked = sorted(keep, key=lambda i: zlib.crc32(f"{seed}|{meta[i]['id']}".encode()))
        return np.sort(np.asarray(ranked[:cap]))
    chosen = set(keep)
    rest = [i for i in range(n - 1, -1, -1) if i not in chosen][: cap - len(keep)]
    return np.sort(np.asarray(keep + rest))
