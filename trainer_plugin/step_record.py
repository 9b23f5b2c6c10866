"""One training step's captures as plain data.

The tap hands each step to its publisher as a ``StepRecord``: per hook firing, its pooled sums
(float32, host memory), what turns them into the pooled vectors (a scale, and for a masked sequence
the mask weights) and where they sit among the clip keys, plus the step's metadata. Turning records
into wire frames is ``batch_frames``, on the publisher's sender thread. ``scaled_rows`` makes one
firing's vectors the same way, for the pooling helpers. This module imports neither torch nor zmq.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

FLOAT16_MAX = 65504.0


class CaptureRows(NamedTuple):
    """One hook firing's pooled rows: ``vectors`` times ``scale``, each row divided by the sum of its
    ``weights`` row when there are weights (a row whose weights sum to 0 stays 0)."""

    space: str
    label: str
    first_key: int  # its first row's index among the rows its module produced this step
    vectors: np.ndarray  # (rows, dim) float32: the pooled vectors, or sums that scale and weights turn into them
    order: int = 0  # the module's place among the declared ones: the first declared size wins a space
    keep: tuple[int, ...] | None = None  # row offsets to send (frozen clips already sent are left out); None: all
    scale: float = 1.0
    weights: np.ndarray | None = None  # (rows, length) mask weights of a masked sequence

    def pooled(self) -> np.ndarray:
        """The (rows, dim) float32 pooled vectors, of every row (``keep`` not applied)."""
        return scaled_rows(self.vectors, self.vectors.shape[0], self.scale, self.weights)


@dataclass
class StepRecord:
    run: str
    rank: int
    step: int
    micro_batch: int
    keys: list[str] | None
    prompts: list[str] | None
    captures: list[CaptureRows]
    loss: list[float] | None = None
    timesteps: list[float] | None = None
    sample_losses: list[float] | None = None
    sent_at: float = 0.0
    audio: list[str | None] | None = None  # each clip's audio file path, sent with its latent row

    @property
    def frames(self) -> int:
        """How many frames it stands for: one per space with rows to send."""
        return len({c.space for c in self.captures if (len(c.keep) if c.keep is not None else c.vectors.shape[0])})


def row_id(keys: Sequence[str] | None, step: int, micro_batch: int, key_index: int) -> str:
    """Row i of a module's firings in a step belongs to clip keys[i] (clips encoded one by one)."""
    if keys:
        return keys[key_index % len(keys)]
    return f"step{step}-mb{micro_batch}-row{key_index}"


def to_wire(pooled: np.ndarray) -> np.ndarray:
    """Clamp to float16's range, then convert: one large activation cannot turn a row into Inf."""
    return np.clip(pooled, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def scaled_rows(sums: np.ndarray, rows: int, scale: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(rows, dim) float32 vectors from pooled sums: flattened, times ``scale``, and divided row by row by
    the sum of the row's ``weights`` (rows, length) if given (a row whose weights sum to 0 stays 0)."""
    vectors = sums.reshape(rows, -1)
    if weights is not None:
        return (vectors * np.float32(scale)) / weight_totals(weights)[:, None]
    return vectors * np.float32(scale) if scale != 1.0 else vectors


def weight_totals(weights: np.ndarray) -> np.ndarray:
    """Each row's sum of (rows, length) mask weights, what its pooled sums are divided by; 1 where it is 0
    (a row with no weighted position stays 0)."""
    totals = weights.sum(axis=1, dtype=np.float32)
    totals[totals == 0] = 1.0
    return totals
