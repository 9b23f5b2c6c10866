"""One training step's captures as plain data, and the frames built from it.

The tap hands each step to its publisher as a ``StepRecord``: per hook firing, its pooled rows
(float32, host memory) and where they sit among the clip keys, plus the step's metadata. Turning
a record into wire frames (size check, row planning, per-row metadata) is ``build_frames``, a pure
function that runs on the publisher's sender thread. ``scaled_rows`` turns the tap's pooled sums into
those rows. This module imports neither torch nor zmq.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from acestep_viz.wire import Frame

FLOAT16_MAX = 65504.0


class CaptureRows(NamedTuple):
    """One hook firing's pooled rows."""

    space: str
    label: str
    first_key: int  # its first row's index among the rows its module produced this step
    vectors: np.ndarray  # (rows, dim) float32
    order: int = 0  # the module's place among the declared ones: the first declared size wins a space
    keep: tuple[int, ...] | None = None  # row offsets to send (frozen clips already sent are left out); None: all


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
        """How many frames ``build_frames`` makes of it: one per space with rows to send."""
        return len({c.space for c in self.captures if (len(c.keep) if c.keep is not None else c.vectors.shape[0])})


class _Row(NamedTuple):
    source: int  # row index in the concatenation of the space's captures
    key_index: int
    label: str


def build_frames(record: StepRecord, errors: Any) -> list[Frame]:
    """One frame per space with rows; ``errors.record(kind, exc)`` hears about captures left out."""
    by_space: dict[str, list[CaptureRows]] = {}
    for capture in record.captures:
        by_space.setdefault(capture.space, []).append(capture)
    frames = []
    for space, captures in by_space.items():
        frame = _space_frame(record, space, _same_size(space, captures, errors))
        if frame is not None:
            frames.append(frame)
    return frames


def row_id(keys: Sequence[str] | None, step: int, micro_batch: int, key_index: int) -> str:
    """Row i of a module's firings in a step belongs to clip keys[i] (clips encoded one by one)."""
    if keys:
        return keys[key_index % len(keys)]
    return f"step{step}-mb{micro_batch}-row{key_index}"


def to_wire(pooled: np.ndarray) -> np.ndarray:
    """Clamp to float16's range, then convert: one large activation cannot turn a row into Inf."""
    return np.clip(pooled, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def _same_size(space: str, captures: list[CaptureRows], errors: Any) -> list[CaptureRows]:
    dim = min(captures, key=lambda c: c.order).vectors.shape[1]  # the first declared module's size wins
    kept = [c for c in captures if c.vectors.shape[1] == dim]
    if len(kept) < len(captures):
        odd = sorted({c.label for c in captures if c.vectors.shape[1] != dim})
        errors.record("dim_mismatch", ValueError(f"{space}: {', '.join(odd)} pool to a size other "
                                                 f"than {dim}; their rows are skipped"))
    return kept


def _space_frame(record: StepRecord, space: str, captures: list[CaptureRows]) -> Frame | None:
    rows, source = [], 0
    for capture in captures:
        count = capture.vectors.shape[0]
        offsets = range(count) if capture.keep is None else capture.keep
        rows.extend(_Row(source + offset, capture.first_key + offset, capture.label) for offset in offsets)
        source += count
    if not rows:
        return None
    vectors = captures[0].vectors if len(captures) == 1 else np.concatenate([c.vectors for c in captures])
    if len(rows) < vectors.shape[0]:
        vectors = vectors[[row.source for row in rows]]
    ids = [row_id(record.keys, record.step, record.micro_batch, row.key_index) for row in rows]
    return Frame(run=record.run, space=space, step=record.step, vectors=to_wire(vectors), ids=ids,
                 micro_batch=record.micro_batch, rank=record.rank, columns=_columns(record, space, rows),
                 sent_at=record.sent_at)


def _columns(record: StepRecord, space: str, rows: list[_Row]) -> dict[str, list]:
    """Per-row metadata, one list per key: prompt, loss, timestep (LoRA), layer and audio (latent)."""
    batch = len(record.keys) if record.keys else None
    indices = [row.key_index % batch if batch else row.key_index for row in rows]
    columns: dict[str, list] = {}
    if record.prompts:
        columns["prompt"] = _pick(record.prompts, indices)
    loss, sample_losses = record.loss, record.sample_losses
    step_loss = loss[0] if loss is not None and len(loss) == 1 else None
    if sample_losses is not None and len(sample_losses) != 1:
        columns["loss"] = _pick(sample_losses, indices, step_loss)
    elif step_loss is not None:
        columns["loss"] = [step_loss] * len(indices)
    if space == "lora" and record.timesteps is not None:
        columns["timestep"] = _pick(record.timesteps, indices)
    if space == "lora" or len({row.label for row in rows}) > 1:
        columns["layer"] = [row.label for row in rows]
    if space == "latent" and record.audio:
        columns["audio"] = _pick(record.audio, indices)
    return columns


def _pick(values: list, indices: list[int], default=None) -> list:
    """values[i] for each index, ``default`` past the end."""
    return [values[i] if i < len(values) else default for i in indices]


def scaled_rows(sums: np.ndarray, rows: int, scale: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(rows, dim) float32 vectors from pooled sums: flattened, times ``scale``, and divided row by row by
    the sum of the row's ``weights`` (rows, length) if given (a row whose weights sum to 0 stays 0)."""
    vectors = sums.reshape(rows, -1)
    if weights is not None:
        totals = weights.sum(axis=1, dtype=np.float32)
        totals[totals == 0] = 1.0
        return (vectors * np.float32(scale)) / totals[:, None]
    return vectors * np.float32(scale) if scale != 1.0 else vectors
