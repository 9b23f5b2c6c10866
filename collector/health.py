"""Is the adapter learning, is a space collapsing: figures computed in the original space, plain numpy.

- ``effective_rank``: how many directions the points really spread in (RankMe, Garrido et al. 2023);
- ``linear_cka``: how alike two representations of the same rows are (Kornblith et al. 2019);
- ``tag_silhouette``: how far the rows with a prompt tag stand apart from the rest (cosine distance).

Each works on a bounded sample of rows so one fit's figures cost tens of milliseconds at most.
"""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np

from acestep_viz.tags import prompt_tags, tag_counts

MAX_RANK_ROWS = 500
MAX_CKA_ROWS = 500
MAX_SILHOUETTE_ROWS = 500
TOP_TAGS = 8
MIN_CKA_ROWS = 3  # with 2 centred rows every pair of representations has CKA 1


def effective_rank(vectors: np.ndarray) -> float | None:
    """exp(Shannon entropy) of the normalised singular values of the row-centred matrix (None: < 2 rows).

    k equal singular values give k; one dominant direction gives about 1. The rows are centred first:
    a common offset (a bias, a mean latent) would otherwise count as one large direction and hide how
    the points spread around it. Singular values below the numerical-rank tolerance (largest value x
    max(n, d) x float eps, as numpy's matrix_rank) count as zero, so rounding noise adds no entropy;
    a cloud with no spread at all (every row equal) has rank 0.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        return None
    x = x - x.mean(axis=0)
    singular = _singular_values(x)
    if singular.size == 0 or singular[0] <= 0:
        return 0.0
    singular = singular[singular > singular[0] * max(x.shape) * np.finfo(np.float64).eps]
    p = singular / singular.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def _singular_values(x: np.ndarray) -> np.ndarray:
    """Descending singular values; through the smaller Gram matrix (its eigenvalues are their squares)."""
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    eigen = np.linalg.eigvalsh(gram)[::-1]
    return np.sqrt(np.clip(eigen, 0.0, None))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Linear CKA of two representations of the same n rows: ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F) on
    column-centred X and Y, in [0, 1]. 1: the same up to a rotation and a uniform scale. None: fewer
    than 2 rows, or one side does not vary. With fewer rows than features the n x n Gram form
    <K, L>_F / (||K||_F ||L||_F), K = XXᵀ, L = YYᵀ, gives the same value with less work."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same rows on both sides, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    if len(x) < max(x.shape[1], y.shape[1]):
        # float32 products, float64 sums: the ratio keeps about 6 digits at half the cost
        gram_x = (x.astype(np.float32) @ x.T.astype(np.float32)).astype(np.float64)
        gram_y = (y.astype(np.float32) @ y.T.astype(np.float32)).astype(np.float64)
        cross, norm_x, norm_y = np.sum(gram_x * gram_y), np.linalg.norm(gram_x), np.linalg.norm(gram_y)
    else:
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if norm_x <= 0 or norm_y <= 0:
        return None
    return float(np.clip(cross / (norm_x * norm_y), 0.0, 1.0))


def cka_to_first(first: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray],
                 cap: int = MAX_CKA_ROWS, seed: int = 0) -> float | None:
    """Linear CKA between the first fitted frame's (clip, layer) vectors and their current ones, over the
    keys in both (collector/quality.py: drift_key); None below MIN_CKA_ROWS of them. Beyond ``cap`` shared
    keys, a fixed hash of the key picks them, so consecutive frames compare mostly the same rows."""
    shared = sorted(k for k in current if k in first)
    if len(shared) > cap:
        shared = sorted(shared, key=lambda k: zlib.crc32(f"{seed}|{k}".encode()))[:cap]
    if len(shared) < MIN_CKA_ROWS:
        return None
    return linear_cka(np.stack([first[k] for k in shared]), np.stack([current[k] for k in shared]))


def tag_silhouette(vectors: np.ndarray, has_tag: Sequence[bool], sample: int = MAX_SILHOUETTE_ROWS,
                   seed: int = 0) -> float | None:
    """Mean silhouette of the two groups "has the tag" / "has not" in the original space, cosine distance.

    Per row s = (b - a) / max(a, b), a its mean distance to the rest of its group, b to the other group:
    near 1 the groups are tight and apart, near 0 they overlap, below 0 rows sit closer to the other
    group. At most ``sample`` rows (fixed seed); None when a group has fewer than 2 of them."""
    x = np.asarray(vectors)
    rows = _sample_rows(len(x), sample, seed)
    return _silhouette(_cosine_distances(x[rows]), np.asarray(has_tag, dtype=bool)[rows])


def tag_silhouettes(vectors: np.ndarray, prompts: Sequence[str | None], clips: Sequence[str] | None = None,
                    top: int = TOP_TAGS, sample: int = MAX_SILHOUETTE_ROWS, seed: int = 0) -> dict[str, float]:
    """{tag: silhouette} for the ``top`` most common tags of the rows' prompt texts that split the sampled
    rows into two groups of at least 2. With ``clips``, a row has a tag when any prompt text of its clip
    among these rows does (a latent or LoRA row stands for its clip); without, its own prompt text decides."""
    rows = _sample_rows(len(prompts), sample, seed)
    if len(rows) < 4:
        return {}
    tags_of = _row_tags(prompts, clips)
    distances = _cosine_distances(np.asarray(vectors)[rows])
    scores: dict[str, float] = {}
    for tag, _ in tag_counts(prompts[i] for i in rows):
        has = np.array([tag in tags_of[i] for i in rows])
        score = _silhouette(distances, has)
        if score is not None:
            scores[tag] = round(score, 4)
            if len(scores) == top:
                break
    return scores


def _row_tags(prompts: Sequence[str | None], clips: Sequence[str] | None) -> list[set[str]]:
    parsed: dict[str | None, set[str]] = {}  # rows share prompt texts (a clip's LoRA rows): split each once
    own = [parsed[p] if p in parsed else parsed.setdefault(p, set(prompt_tags(p))) for p in prompts]
    if clips is None:
        return own
    by_clip: dict[str, set[str]] = {}
    for clip, tags in zip(clips, own):
        by_clip.setdefault(str(clip), set()).update(tags)
    return [by_clip[str(clip)] for clip in clips]


def _sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _cosine_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.maximum(norms, 1e-12)
    return np.clip(1.0 - unit @ unit.T, 0.0, 2.0).astype(np.float64)


def _silhouette(distances: np.ndarray, has: np.ndarray) -> float | None:
    inside, outside = int(has.sum()), int((~has).sum())
    if inside < 2 or outside < 2:
        return None
    to_in = distances[:, has].sum(axis=1)
    to_out = distances[:, ~has].sum(axis=1)
    a = np.where(has, to_in / (inside - 1), to_out / (outside - 1))  # a row's distance to itself is 0
    b = np.where(has, to_out / outside, to_in / inside)
    spread = np.maximum(a, b)
    s = np.divide(b - a, spread, out=np.zeros_like(spread), where=spread > 0)
    return float(s.mean())


def frame_health(space: str, vectors: np.ndarray, meta: Sequence[Mapping], first: Mapping[str, np.ndarray] | None,
                 current: Mapping[str, np.ndarray] | None) -> dict:
    """The health figures of one fitted frame: ``effective_rank`` always, ``cka_to_first`` for the LoRA
    space (``first`` and ``current``: vectors by (clip, layer)), ``tag_silhouette`` where rows have prompts."""
    rows = _sample_rows(len(vectors), MAX_RANK_ROWS, 0)
    figures: dict = {"effective_rank": _rounded(effective_rank(np.asarray(vectors)[rows]))}
    if space == "lora" and first is not None and current is not None:
        figures["cka_to_first"] = _rounded(cka_to_first(first, current))
    prompts = [m.get("prompt") for m in meta]
    if any(prompts):
        clips = None if space == "prompt" else [str(m.get("id")) for m in meta]
        figures["tag_silhouette"] = tag_silhouettes(vectors, prompts, clips)
    return {k: v for k, v in figures.items() if v is not None}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

